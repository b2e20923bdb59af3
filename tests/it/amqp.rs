//! The hub emulator's AMQP endpoint on real sockets: CBS put-token, C2D ingress with IoT Hub's
//! limits and dispositions, the Event Hub-compatible endpoint, hostile input, and Microsoft's
//! Python SDKs (azure-iot-hub's C2D send, azure-eventhub's consumer) unmodified.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use fleetsim::amqp::codec::{Decoder, Value, encode};
use fleetsim::amqp::frames::{AMQP_HEADER, FrameReader, SASL_HEADER, TYPE_AMQP, TYPE_SASL, frame};
use fleetsim::amqp::message::{Body, Message, Properties, decode, encode_message};
use fleetsim::clock::Clock;
use fleetsim::emulator::Emulators;
use fleetsim::emulator::amqp::EventLog;
use fleetsim::iothub::identity::Device;
use fleetsim::iothub::sas;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

const T: Duration = Duration::from_secs(10);

type Tls = TlsStream<TcpStream>;

async fn tls(e: &Emulators) -> Tls {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("fleetsim=debug")
        .with_test_writer()
        .try_init();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let cfg = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let tcp = TcpStream::connect(e.amqp_addr).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(common::HUB_HOST).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(cfg))
        .connect(name, tcp)
        .await
        .unwrap()
}

/// A bare AMQP client: just enough to drive the server frame by frame.
struct Client {
    r: FrameReader<ReadHalf<Tls>>,
    w: WriteHalf<Tls>,
    next_delivery: u32,
}

fn described(code: u64, fields: Vec<Value>) -> Value {
    Value::described(code, fields)
}

fn bytes_of(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    encode(v, &mut out);
    out
}

impl Client {
    async fn connect(e: &Emulators) -> Client {
        let (r, w) = tokio::io::split(tls(e).await);
        Client {
            r: FrameReader::new(r, 1 << 20),
            w,
            next_delivery: 0,
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).await.unwrap();
        self.w.flush().await.unwrap();
    }

    async fn send(&mut self, performative: Value, payload: &[u8]) {
        let f = frame(TYPE_AMQP, 0, &bytes_of(&performative), payload);
        self.write(&f).await;
    }

    /// SASL with `mechanism`; returns the outcome code.
    async fn sasl(&mut self, mechanism: &str) -> u8 {
        self.write(&SASL_HEADER).await;
        assert_eq!(self.r.protocol_header().await.unwrap(), SASL_HEADER);
        let mechanisms = self.r.next_frame().await.unwrap();
        assert_eq!(mechanisms.kind, TYPE_SASL);
        let init = described(0x41, vec![Value::sym(mechanism)]);
        self.write(&frame(TYPE_SASL, 0, &bytes_of(&init), &[]))
            .await;
        let outcome = self.r.next_frame().await.unwrap();
        let Value::Described(_, fields) = Decoder::new(&outcome.body).value().unwrap() else {
            panic!("outcome")
        };
        let Value::List(fields) = *fields else {
            panic!("list")
        };
        match fields[0] {
            Value::Ubyte(code) => code,
            ref other => panic!("code {other:?}"),
        }
    }

    /// The next performative (heartbeats skipped) and its payload.
    async fn next(&mut self) -> (u64, Vec<Value>, Vec<u8>) {
        loop {
            let f = tokio::time::timeout(T, self.r.next_frame())
                .await
                .unwrap()
                .unwrap();
            if f.body.is_empty() {
                continue;
            }
            let mut d = Decoder::new(&f.body);
            let Value::Described(code, fields) = d.value().unwrap() else {
                panic!("performative")
            };
            let Value::List(fields) = *fields else {
                panic!("list")
            };
            let payload = f.body[d.position()..].to_vec();
            return (code.as_u64().unwrap(), fields, payload);
        }
    }

    /// SASL MSSBCBS, open and one session.
    async fn open(e: &Emulators) -> Client {
        let mut c = Client::connect(e).await;
        assert_eq!(c.sasl("MSSBCBS").await, 0);
        c.write(&AMQP_HEADER).await;
        assert_eq!(c.r.protocol_header().await.unwrap(), AMQP_HEADER);
        c.send(
            described(
                0x10,
                vec![
                    Value::str("test-client"),
                    Value::str(common::HUB_HOST),
                    Value::Uint(65_536),
                ],
            ),
            &[],
        )
        .await;
        c.send(
            described(
                0x11,
                vec![
                    Value::Null,
                    Value::Uint(0),
                    Value::Uint(5000),
                    Value::Uint(5000),
                ],
            ),
            &[],
        )
        .await;
        assert_eq!(c.next().await.0, 0x10);
        assert_eq!(c.next().await.0, 0x11);
        c
    }

    /// Attaches; returns the server's attach fields and, if it refused, the detach error.
    async fn attach(
        &mut self,
        handle: u32,
        we_receive: bool,
        address: &str,
        filter: Option<Value>,
    ) -> (Vec<Value>, Option<Value>) {
        let mut source = vec![Value::str(address)];
        if let Some(f) = filter {
            source.extend([
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                Value::Null,
                f,
            ]);
        }
        let source = described(0x28, source);
        let target = described(0x29, vec![Value::str(address)]);
        self.send(
            described(
                0x12,
                vec![
                    Value::str(&format!("link-{handle}")),
                    Value::Uint(handle),
                    Value::Bool(we_receive),
                    Value::Ubyte(0),
                    Value::Ubyte(0),
                    source,
                    target,
                    Value::Null,
                    Value::Null,
                    Value::Uint(0),
                ],
            ),
            &[],
        )
        .await;
        let (code, attach, _) = self.next().await;
        assert_eq!(code, 0x12);
        let refused = if we_receive {
            attach[5].is_null()
        } else {
            attach[6].is_null()
        };
        if refused {
            let (code, detach, _) = self.next().await;
            assert_eq!(code, 0x16);
            return (attach, detach.get(2).cloned());
        }
        if !we_receive {
            assert_eq!(self.next().await.0, 0x13, "credit for our sends");
        }
        (attach, None)
    }

    async fn credit(&mut self, handle: u32, credit: u32) {
        self.send(
            described(
                0x13,
                vec![
                    Value::Uint(0),
                    Value::Uint(5000),
                    Value::Uint(self.next_delivery),
                    Value::Uint(5000),
                    Value::Uint(handle),
                    Value::Uint(0),
                    Value::Uint(credit),
                ],
            ),
            &[],
        )
        .await;
    }

    /// Sends `m` on `handle` (split into frames of `chunk` bytes); returns the disposition state.
    async fn transfer(&mut self, handle: u32, m: &Message, chunk: usize) -> Value {
        let bytes = encode_message(m);
        let id = self.next_delivery;
        self.next_delivery += 1;
        let mut parts = bytes.chunks(chunk).peekable();
        while let Some(part) = parts.next() {
            let more = parts.peek().is_some();
            let t = described(
                0x14,
                vec![
                    Value::Uint(handle),
                    Value::Uint(id),
                    Value::Binary(id.to_be_bytes().to_vec()),
                    Value::Uint(0),
                    Value::Bool(false),
                    Value::Bool(more),
                ],
            );
            self.send(t, part).await;
        }
        loop {
            let (code, fields, _) = self.next().await;
            if code == 0x15 {
                return fields[4].clone();
            }
        }
    }

    /// Waits for a transfer and decodes its message.
    async fn receive(&mut self) -> Message {
        let mut bytes = Vec::new();
        loop {
            let (code, fields, payload) = self.next().await;
            if code != 0x14 {
                continue;
            }
            bytes.extend(payload);
            if fields.get(5) != Some(&Value::Bool(true)) {
                return decode(&bytes).unwrap();
            }
        }
    }

    /// Attaches the $cbs pair (handles 0 and 1) and puts `token` for `audience`.
    async fn put_token(&mut self, token: &str, audience: &str) -> Message {
        self.attach(0, false, "$cbs", None).await;
        self.attach(1, true, "$cbs", None).await;
        self.credit(1, 10).await;
        let request = Message {
            properties: Properties {
                message_id: Some(Value::Ulong(42)),
                reply_to: Some("cbs".into()),
                ..Default::default()
            },
            application_properties: vec![
                ("operation".into(), Value::str("put-token")),
                ("type".into(), Value::str("servicebus.windows.net:sastoken")),
                ("name".into(), Value::str(audience)),
            ],
            body: Body::Value(Value::str(token)),
            ..Default::default()
        };
        let state = self.transfer(0, &request, 60_000).await;
        assert_eq!(
            state.descriptor(),
            Some(0x24),
            "the request itself is accepted"
        );
        self.receive().await
    }
}

fn owner_key(e: &Emulators) -> String {
    let secret = e.hub.connection_string().to_secret_string();
    secret
        .split(';')
        .find_map(|kv| kv.strip_prefix("SharedAccessKey="))
        .unwrap()
        .to_string()
}

fn service_token(e: &Emulators, resource: &str, key: &str) -> String {
    let expiry = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let _ = e;
    sas::token(resource, key, Some("iothubowner"), expiry).unwrap()
}

fn status(m: &Message) -> i32 {
    match m.application_property("status-code") {
        Some(Value::Int(s)) => *s,
        other => panic!("status-code {other:?}"),
    }
}

fn c2d(device: &str, id: &str, body: Vec<u8>) -> Message {
    Message {
        properties: Properties {
            message_id: Some(Value::str(id)),
            to: Some(format!("/devices/{device}/messages/devicebound")),
            correlation_id: Some(Value::str("corr-1")),
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            absolute_expiry_time: Some(4_102_444_800_000),
            ..Default::default()
        },
        application_properties: vec![
            ("iothub-ack".into(), Value::str("full")),
            ("colour".into(), Value::str("blue")),
            ("n".into(), Value::Int(3)),
        ],
        body: Body::Data(body),
        ..Default::default()
    }
}

fn error_condition(error: &Value) -> String {
    assert_eq!(error.descriptor(), Some(0x1d), "an error: {error:?}");
    let Value::Described(_, fields) = error else {
        panic!()
    };
    let Value::List(fields) = fields.as_ref() else {
        panic!()
    };
    fields[0].as_text().unwrap().to_string()
}

fn condition(state: &Value) -> String {
    assert_eq!(state.descriptor(), Some(0x25), "rejected: {state:?}");
    let Value::Described(_, fields) = state else {
        panic!()
    };
    let Value::List(fields) = fields.as_ref() else {
        panic!()
    };
    error_condition(&fields[0])
}

#[tokio::test]
async fn a_bad_sas_on_cbs_is_401_and_links_stay_refused() {
    let e = common::start_emulators(Clock::real()).await;
    let mut c = Client::open(&e).await;
    let wrong = service_token(
        &e,
        common::HUB_HOST,
        "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
    );
    let reply = c
        .put_token(&wrong, &format!("https://{}", common::HUB_HOST))
        .await;
    assert_eq!(status(&reply), 401);
    assert_eq!(
        reply.properties.correlation_id,
        Some(Value::Ulong(42)),
        "correlation-id = the request's message-id"
    );
    assert!(
        reply
            .application_property("status-description")
            .and_then(Value::as_text)
            .unwrap()
            .contains("signature")
    );
    let (_, refused) = c
        .attach(
            2,
            false,
            &format!("amqps://{}/messages/devicebound", common::HUB_HOST),
            None,
        )
        .await;
    assert_eq!(
        error_condition(&refused.unwrap()),
        "amqp:unauthorized-access"
    );
    e.shutdown().await;
}

#[tokio::test]
async fn c2d_sends_are_accepted_queued_and_refused_as_iot_hub_does() {
    let e = common::start_emulators(Clock::real()).await;
    e.hub
        .restore_devices(&[Device::certificate_authority("dev-1")]);
    let mut c = Client::open(&e).await;
    let token = service_token(&e, common::HUB_HOST, &owner_key(&e));
    let reply = c
        .put_token(&token, &format!("https://{}", common::HUB_HOST))
        .await;
    assert_eq!(status(&reply), 200);
    let (_, refused) = c
        .attach(
            2,
            false,
            &format!("amqps://{}/messages/devicebound", common::HUB_HOST),
            None,
        )
        .await;
    assert!(refused.is_none());

    let state = c
        .transfer(2, &c2d("dev-1", "m0", b"{\"on\":true}".to_vec()), 60_000)
        .await;
    assert_eq!(state.descriptor(), Some(0x24), "accepted");
    let queued = e.c2d.next_for_delivery("dev-1").unwrap();
    assert_eq!(queued.message_id.as_deref(), Some("m0"));
    assert_eq!(queued.correlation_id.as_deref(), Some("corr-1"));
    assert_eq!(queued.content_type.as_deref(), Some("application/json"));
    assert_eq!(queued.expiry_ms, Some(4_102_444_800_000));
    assert_eq!(
        queued.properties,
        vec![
            ("colour".into(), Some("blue".into())),
            ("n".into(), Some("3".into()))
        ]
    );
    assert_eq!(&queued.body[..], b"{\"on\":true}");

    for i in 1..50 {
        let state = c
            .transfer(2, &c2d("dev-1", &format!("m{i}"), vec![b'x'; 10]), 60_000)
            .await;
        assert_eq!(state.descriptor(), Some(0x24), "message {i}");
    }
    let full = c
        .transfer(2, &c2d("dev-1", "m50", vec![b'x'; 10]), 60_000)
        .await;
    assert_eq!(condition(&full), "amqp:resource-limit-exceeded");
    assert_eq!(e.c2d.pending("dev-1"), 50);

    e.hub
        .restore_devices(&[Device::certificate_authority("dev-2")]);
    let big = c
        .transfer(2, &c2d("dev-2", "big", vec![b'x'; 70 * 1024]), 16 * 1024)
        .await;
    assert_eq!(condition(&big), "amqp:link:message-size-exceeded");
    let nobody = c.transfer(2, &c2d("nobody", "n", vec![]), 60_000).await;
    assert_eq!(condition(&nobody), "amqp:not-found");
    assert_eq!(e.c2d.pending("dev-2"), 0);
    e.shutdown().await;
}

/// Reads until the server closes; true if it did within the time limit.
async fn closed_by_server<S: AsyncRead + Unpin>(mut s: S) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + T;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => {}
        }
    }
}

async fn still_serves(e: &Emulators) {
    let mut c = Client::open(e).await;
    let token = service_token(e, common::HUB_HOST, &owner_key(e));
    let reply = c
        .put_token(&token, &format!("https://{}", common::HUB_HOST))
        .await;
    assert_eq!(status(&reply), 200);
}

async fn raw_after_sasl<W: AsyncWrite + Unpin, R: AsyncRead + Unpin>(
    w: &mut W,
    r: &mut FrameReader<R>,
) {
    w.write_all(&SASL_HEADER).await.unwrap();
    r.protocol_header().await.unwrap();
    r.next_frame().await.unwrap();
    let init = described(0x41, vec![Value::sym("MSSBCBS")]);
    w.write_all(&frame(TYPE_SASL, 0, &bytes_of(&init), &[]))
        .await
        .unwrap();
    r.next_frame().await.unwrap();
    w.write_all(&AMQP_HEADER).await.unwrap();
}

#[tokio::test]
async fn hostile_input_closes_that_connection_and_the_server_keeps_serving() {
    let e = common::start_emulators(Clock::real()).await;

    // Garbage instead of a protocol header: answered with the header we speak, then closed.
    let mut s = tls(&e).await;
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut header = [0u8; 8];
    s.read_exact(&mut header).await.unwrap();
    assert_eq!(header, SASL_HEADER);
    assert!(closed_by_server(s).await);
    // Garbage instead of TLS.
    let mut plain = TcpStream::connect(e.amqp_addr).await.unwrap();
    plain
        .write_all(&[0x16, 0x03, 0x01, 0xff, 0xff, 1, 2, 3])
        .await
        .unwrap();
    plain.write_all(&[0u8; 70_000]).await.unwrap_or(());
    assert!(closed_by_server(plain).await);
    still_serves(&e).await;

    // A mechanism the server does not offer: outcome auth (1), then closed.
    let mut c = Client::connect(&e).await;
    assert_eq!(c.sasl("EXTERNAL").await, 1);
    assert!(closed_by_server(c.r.into_inner()).await);

    // A frame that claims 4 GB.
    let (r, mut w) = tokio::io::split(tls(&e).await);
    let mut r = FrameReader::new(r, 1 << 20);
    raw_after_sasl(&mut w, &mut r).await;
    w.write_all(&[0xff, 0xff, 0xff, 0xf0, 2, 0, 0, 0])
        .await
        .unwrap();
    assert!(closed_by_server(r.into_inner()).await);

    // A truncated frame, then the client goes away mid-frame.
    let (r, mut w) = tokio::io::split(tls(&e).await);
    let mut r = FrameReader::new(r, 1 << 20);
    raw_after_sasl(&mut w, &mut r).await;
    let open = frame(
        TYPE_AMQP,
        0,
        &bytes_of(&described(0x10, vec![Value::str("x")])),
        &[],
    );
    w.write_all(&open[..open.len() - 3]).await.unwrap();
    w.shutdown().await.unwrap();
    assert!(closed_by_server(r.into_inner()).await);

    // Lists nested 6000 deep in an open's properties: a decode error, not a stack overflow.
    let (r, mut w) = tokio::io::split(tls(&e).await);
    let mut r = FrameReader::new(r, 1 << 20);
    raw_after_sasl(&mut w, &mut r).await;
    let mut nested = vec![0x45u8];
    for _ in 0..6000 {
        let mut v = vec![0xd0u8];
        v.extend(((nested.len() + 4) as u32).to_be_bytes());
        v.extend(1u32.to_be_bytes());
        v.extend(nested);
        nested = v;
    }
    let mut open_fields = Vec::new();
    encode(&Value::str("x"), &mut open_fields);
    open_fields.extend(&nested);
    let mut perf = vec![0x00, 0x53, 0x10, 0xd0];
    perf.extend(((open_fields.len() + 4) as u32).to_be_bytes());
    perf.extend(2u32.to_be_bytes());
    perf.extend(open_fields);
    w.write_all(&frame(TYPE_AMQP, 0, &perf, &[])).await.unwrap();
    assert!(closed_by_server(r.into_inner()).await);

    still_serves(&e).await;
    e.shutdown().await;
}

#[tokio::test]
async fn event_hub_reads_with_two_consumer_groups_and_start_positions() {
    let e = common::start_emulators(Clock::real()).await;
    let log = e.hub.event_log();
    log.add_consumer_group("backend");
    let entity = e.amqp.entity().to_string();
    let p = log.partition_of("dev-eh");
    for i in 0..3 {
        log.append(
            "dev-eh",
            vec![
                ("$.ct".into(), "application/json".into()),
                ("i".into(), i.to_string()),
            ],
            bytes::Bytes::from(format!("{{\"i\":{i}}}")),
        );
    }
    let mut c = Client::open(&e).await;
    let audience = format!("sb://{}/{entity}", common::HUB_HOST);
    let token = service_token(&e, &audience, &owner_key(&e));
    assert_eq!(status(&c.put_token(&token, &audience).await), 200);

    let address = |cg: &str| {
        format!(
            "amqps://{}/{entity}/ConsumerGroups/{cg}/Partitions/{p}",
            common::HUB_HOST
        )
    };
    let selector = |expr: &str| {
        Value::Map(vec![(
            Value::sym("apache.org:selector-filter:string"),
            Value::Described(
                Box::new(Value::sym("apache.org:selector-filter:string")),
                Box::new(Value::str(expr)),
            ),
        )])
    };
    // $Default from the beginning: all three, annotated.
    let (_, refused) = c
        .attach(
            10,
            true,
            &address("$Default"),
            Some(selector("amqp.annotation.x-opt-offset > '-1'")),
        )
        .await;
    assert!(refused.is_none());
    c.credit(10, 10).await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(c.receive().await);
    }
    let ann = |m: &Message, k: &str| {
        m.message_annotations
            .iter()
            .find(|(a, _)| a.as_text() == Some(k))
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        ann(&seen[0], "iothub-connection-device-id"),
        Some(Value::str("dev-eh"))
    );
    assert_eq!(ann(&seen[2], "x-opt-sequence-number"), Some(Value::Long(2)));
    assert_eq!(seen[1].application_property("i"), Some(&Value::str("1")));
    assert_eq!(
        seen[1].properties.content_type.as_deref(),
        Some("application/json")
    );
    assert_eq!(seen[2].body, Body::Data(b"{\"i\":2}".to_vec()));

    // "backend" from sequence number 1 (exclusive): only the third; then @latest sees only new ones.
    c.attach(
        11,
        true,
        &address("backend"),
        Some(selector("amqp.annotation.x-opt-sequence-number > '1'")),
    )
    .await;
    c.credit(11, 10).await;
    assert_eq!(
        ann(&c.receive().await, "x-opt-sequence-number"),
        Some(Value::Long(2))
    );
    c.attach(
        12,
        true,
        &address("backend"),
        Some(selector("amqp.annotation.x-opt-offset > '@latest'")),
    )
    .await;
    c.credit(12, 10).await;
    log.append("dev-eh", vec![], bytes::Bytes::from_static(b"new"));
    // Each of the three receivers gets the new event once.
    for _ in 0..3 {
        let m = c.receive().await;
        assert_eq!(m.body, Body::Data(b"new".to_vec()));
        assert_eq!(ann(&m, "x-opt-sequence-number"), Some(Value::Long(3)));
    }
    let (_, refused) = c.attach(13, true, &address("nobody"), None).await;
    assert!(refused.is_some(), "an unknown consumer group is refused");
    assert_eq!((log.readers("$Default"), log.readers("backend")), (1, 2));
    c.send(
        described(0x16, vec![Value::Uint(11), Value::Bool(true)]),
        &[],
    )
    .await;
    assert_eq!(c.next().await.0, 0x16, "detached");
    assert_eq!(
        log.readers("backend"),
        1,
        "a detached receiver is not counted"
    );

    // $management: partition ids and one partition's properties.
    c.attach(20, false, "$management", None).await;
    c.attach(21, true, "$management", None).await;
    c.credit(21, 10).await;
    let read = |kind: &str, extra: Option<(String, Value)>| {
        let mut props = vec![
            ("operation".to_string(), Value::str("READ")),
            ("name".to_string(), Value::str(&entity)),
            ("type".to_string(), Value::str(kind)),
            ("security_token".to_string(), Value::str(&token)),
        ];
        props.extend(extra);
        Message {
            properties: Properties {
                message_id: Some(Value::Uuid([1; 16])),
                ..Default::default()
            },
            application_properties: props,
            body: Body::Value(Value::Null),
            ..Default::default()
        }
    };
    c.transfer(20, &read("com.microsoft:eventhub", None), 60_000)
        .await;
    let info = c.receive().await;
    assert_eq!(status(&info), 200);
    assert_eq!(info.properties.correlation_id, Some(Value::Uuid([1; 16])));
    let Body::Value(body) = &info.body else {
        panic!("value body")
    };
    assert_eq!(
        body.map_get("partition_ids"),
        Some(&Value::Array(
            (0..4).map(|i| Value::str(&i.to_string())).collect()
        ))
    );
    c.transfer(
        20,
        &read(
            "com.microsoft:partition",
            Some(("partition".into(), Value::str(&p.to_string()))),
        ),
        60_000,
    )
    .await;
    let part = c.receive().await;
    let Body::Value(body) = &part.body else {
        panic!("value body")
    };
    assert_eq!(
        body.map_get("last_enqueued_sequence_number"),
        Some(&Value::Long(3))
    );
    e.shutdown().await;
}

#[tokio::test]
async fn frames_after_the_peers_end_are_dropped_and_unknown_channels_close() {
    let e = common::start_emulators(Clock::real()).await;
    let log = e.hub.event_log();
    let mut c = Client::open(&e).await;
    let entity = e.amqp.entity().to_string();
    let audience = format!("sb://{}/{entity}", common::HUB_HOST);
    let token = service_token(&e, &audience, &owner_key(&e));
    assert_eq!(status(&c.put_token(&token, &audience).await), 200);
    let address = format!("{entity}/ConsumerGroups/$Default/Partitions/0");
    assert!(c.attach(5, true, &address, None).await.1.is_none());
    assert_eq!(log.readers("$Default"), 1);

    // pyamqp ends its session, then still detaches the links it had there.
    c.send(described(0x17, vec![]), &[]).await;
    assert_eq!(c.next().await.0, 0x17, "end answered");
    assert_eq!(
        log.readers("$Default"),
        0,
        "ending the session drops its links"
    );
    c.send(
        described(0x16, vec![Value::Uint(5), Value::Bool(true)]),
        &[],
    )
    .await;
    // The connection lives on: the channel can begin again.
    let begin = described(
        0x11,
        vec![
            Value::Null,
            Value::Uint(0),
            Value::Uint(5000),
            Value::Uint(5000),
        ],
    );
    c.send(begin, &[]).await;
    assert_eq!(c.next().await.0, 0x11, "a new session on the same channel");

    // A frame on a channel that never had a session is a protocol violation: closed.
    let flow = described(
        0x13,
        vec![
            Value::Uint(0),
            Value::Uint(5000),
            Value::Uint(0),
            Value::Uint(5000),
        ],
    );
    c.write(&frame(TYPE_AMQP, 7, &bytes_of(&flow), &[])).await;
    let (code, fields, _) = c.next().await;
    assert_eq!(code, 0x18, "close");
    assert!(error_condition(&fields[0]).contains("not-allowed"));
    assert!(closed_by_server(c.r.into_inner()).await);
    e.shutdown().await;
}

/// The SDK tests share SDK_IP:5671 (the SDKs fix the port): one at a time.
static SDK_ADDRESS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The host name the SDK test dials; /etc/hosts maps it to our own loopback address.
const SDK_HOST: &str = "fleetsim-amqp-test.azure-devices.net";
const SDK_IP: [u8; 4] = [127, 0, 13, 1];

/// The SDKs fix port 5671 and check host names: map SDK_HOST to SDK_IP.
fn map_sdk_host() {
    common::map_host(SDK_HOST, SDK_IP);
}

fn spawn_peer(script: &str, args: &[&str], env: &[(&str, &str)]) -> tokio::process::Child {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let mut cmd = tokio::process::Command::new(common::python());
    cmd.arg(path)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().unwrap()
}

/// Waits (at most 90 s) for a peer to finish; returns its stdout, failing the test if it failed.
async fn finish_peer(script: &str, child: tokio::process::Child) -> String {
    let out = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("{script} did not finish in 90 s"))
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{script} failed: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

async fn run_peer(script: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    finish_peer(script, spawn_peer(script, args, env)).await
}

/// Emulators with the AMQP listener on SDK_IP:5671 for SDK_HOST, a registered device and the
/// TLS root written for the Python peers.
async fn sdk_emulators() -> (Emulators, std::path::PathBuf, String) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter("fleetsim=debug")
        .with_test_writer()
        .try_init();
    map_sdk_host();
    let ca = fleetsim::emulator::CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = fleetsim::emulator::HubConfig {
        host_name: SDK_HOST.into(),
        ..Default::default()
    };
    let addrs = fleetsim::emulator::Addresses {
        amqp: std::net::SocketAddr::from((SDK_IP, 5671)),
        ..fleetsim::emulator::Addresses::ephemeral([127, 0, 0, 1].into())
    };
    let e = Emulators::start_on(addrs, &ca, &hub)
        .await
        .expect("emulators on 127.0.13.1:5671");
    e.hub
        .restore_devices(&[Device::certificate_authority("sdk-dev")]);
    let dir = std::env::temp_dir().join(format!("fleetsim-amqp-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bundle = dir.join("trust.pem");
    std::fs::write(&bundle, fleetsim::crypto::cert_to_pem(&e.tls_root)).unwrap();
    let bundle = bundle.to_str().unwrap().to_string();

    (e, dir, bundle)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_iot_hub_sends_c2d_unmodified() {
    let _ = common::python();
    let _address = SDK_ADDRESS.lock().await;
    let (e, dir, bundle) = sdk_emulators().await;
    // (a) azure-iot-hub's send_c2d_message: CBS, MSSBCBS, the devicebound link, Accepted.
    let hub_cs = e.hub.connection_string().to_secret_string();
    run_peer(
        "c2d_send.py",
        &["sdk-dev"],
        &[
            ("FLEETSIM_HUB_CS", &hub_cs),
            ("FLEETSIM_CA_BUNDLE", &bundle),
        ],
    )
    .await;
    let m = e
        .c2d
        .next_for_delivery("sdk-dev")
        .expect("the SDK's message is queued");
    assert_eq!(m.message_id.as_deref(), Some("sdk-msg-1"));
    assert_eq!(m.correlation_id.as_deref(), Some("sdk-corr-1"));
    assert_eq!(m.content_type.as_deref(), Some("application/json"));
    assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
    assert_eq!(
        m.properties,
        vec![("colour".to_string(), Some("blue".to_string()))]
    );
    assert_eq!(&m.body[..], b"hello from azure-iot-hub");

    let _ = std::fs::remove_dir_all(&dir);
    e.shutdown().await;
}

/// Appends telemetry reading `i` of `device` to the event log, as the hub does for a D2C message.
fn append_reading(log: &EventLog, device: &str, i: u32) {
    log.append(
        device,
        vec![
            ("$.ct".into(), "application/json".into()),
            ("seq".into(), i.to_string()),
            ("device".into(), device.to_string()),
        ],
        bytes::Bytes::from(format!("{{\"device\":\"{device}\",\"reading\":{i}}}")),
    );
}

/// Checks what the consumer driver printed: exactly the readings `want` (device, i), each once,
/// with the hub's annotations, application properties and body, in partition order.
fn assert_received(log: &EventLog, label: &str, out: &str, want: &[(String, u32)]) {
    let events: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let mut seen: HashMap<(String, u32), usize> = HashMap::new();
    let mut last_sequence: HashMap<String, i64> = HashMap::new();
    for ev in &events {
        let device = ev["device"]
            .as_str()
            .expect("device id annotation")
            .to_string();
        let i: u32 = ev["properties"]["seq"].as_str().unwrap().parse().unwrap();
        assert_eq!(ev["properties"]["device"], device.as_str(), "{label}: {ev}");
        assert_eq!(ev["content_type"], "application/json", "{label}: {ev}");
        assert_eq!(
            ev["body"],
            format!("{{\"device\":\"{device}\",\"reading\":{i}}}"),
            "{label}: {ev}"
        );
        assert_eq!(
            ev["partition"],
            log.partition_of(&device).to_string(),
            "{label}: {ev}"
        );
        assert_eq!(ev["enqueued"], true, "{label}: {ev}");
        assert_eq!(ev["iothub_enqueued"], true, "{label}: {ev}");
        let partition = ev["partition"].as_str().unwrap().to_string();
        let sequence = ev["sequence"].as_i64().unwrap();
        let previous = last_sequence.insert(partition, sequence);
        assert!(
            previous.is_none_or(|p| p < sequence),
            "{label}: out of order: {ev}"
        );
        *seen.entry((device, i)).or_default() += 1;
    }
    for key in want {
        assert_eq!(
            seen.get(key),
            Some(&1),
            "{label}: {key:?} not received once:\n{out}"
        );
    }
    assert_eq!(
        events.len(),
        want.len(),
        "{label}: events that were not expected:\n{out}"
    );
}

/// Waits until `group` has exactly `n` partition receivers attached.
async fn wait_for_readers(log: &EventLog, group: &str, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while log.readers(group) != n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{group}: {} receivers attached, waited for {n}",
            log.readers(group)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn azure_eventhub_consumer_reads_the_event_hub_endpoint() {
    let _ = common::python();
    let _address = SDK_ADDRESS.lock().await;
    let (e, dir, bundle) = sdk_emulators().await;
    let log = e.hub.event_log();
    log.add_consumer_group("backend");
    let devices: Vec<String> = (0..6).map(|i| format!("sdk-dev-{i}")).collect();
    let used: std::collections::HashSet<u32> =
        devices.iter().map(|d| log.partition_of(d)).collect();
    assert!(used.len() >= 3, "the test devices span partitions");

    // Telemetry that is already in the hub when the consumers start.
    let mut before = Vec::new();
    for i in 0..3 {
        for d in &devices {
            append_reading(&log, d, i);
            before.push((d.clone(), i));
        }
    }
    let eh_cs = e.event_hub_connection_string();
    let env = [
        ("FLEETSIM_EH_CS", eh_cs.as_str()),
        ("FLEETSIM_CA_BUNDLE", &bundle),
    ];
    let count = before.len().to_string();

    // From the start ("-1"), on two consumer groups at once: each receives every event once.
    let default = spawn_peer("eventhub_receive.py", &[&count, "$Default", "-1"], &env);
    let backend = spawn_peer("eventhub_receive.py", &[&count, "backend", "-1"], &env);
    let (default, backend) = tokio::join!(
        finish_peer("eventhub_receive.py", default),
        finish_peer("eventhub_receive.py", backend),
    );
    assert_received(&log, "$Default from -1", &default, &before);
    assert_received(&log, "backend from -1", &backend, &before);

    // From "@latest": only what is enqueued after the receivers attached.
    wait_for_readers(&log, "$Default", 0).await;
    let after: Vec<(String, u32)> = devices.iter().map(|d| (d.clone(), 3)).collect();
    let count = after.len().to_string();
    let latest = spawn_peer(
        "eventhub_receive.py",
        &[&count, "$Default", "@latest"],
        &env,
    );
    wait_for_readers(&log, "$Default", log.partition_count() as usize).await;
    for (d, i) in &after {
        append_reading(&log, d, *i);
    }
    let latest = finish_peer("eventhub_receive.py", latest).await;
    assert_received(&log, "$Default from @latest", &latest, &after);

    let _ = std::fs::remove_dir_all(&dir);
    e.shutdown().await;
}
