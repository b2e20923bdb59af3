//! The DPS emulator as devices and operators see it: X.509 registration over MQTT/TLS (and
//! WebSocket) with polling, enrolment groups over the service REST API matched by the most
//! specific issuer, individual enrolments, disabled enrolments, hashed allocation over two hubs,
//! DPS's throttles, and bad input (wrong id scope, foreign CA, unknown operation, malformed
//! bodies, garbage) answered with DPS's errors or a closed connection. Devices get real
//! certificates from the EZCA emulator. The last test drives Microsoft's unmodified Python SDK.

mod common;

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::Issued;
use fleetsim::emulator::dps::DpsLimits;
use fleetsim::emulator::{DpsAddresses, DpsConfig, Emulators, HubConfig};
use fleetsim::iothub::dps::{DpsClient, DpsEndpoint, Polling, ProvisioningError, Registration};
use fleetsim::iothub::registry::AuthenticationType;
use serde_json::{Value, json};

const SCOPE: &str = "0ne0000F1EE";
const DPS_HOST: &str = "test-dps.azure-devices-provisioning.net";

/// DPS settings for tests: quick assignments and short retry-afters.
fn dps_config(limits: DpsLimits) -> DpsConfig {
    DpsConfig {
        host_name: DPS_HOST.into(),
        id_scope: Some(SCOPE.into()),
        retry_after_secs: 1,
        assignment_delay: Duration::from_millis(300),
        limits,
    }
}

async fn start(limits: DpsLimits) -> Emulators {
    let mut e = common::start_emulators(Clock::real()).await;
    e.start_dps(
        DpsAddresses::ephemeral([127, 0, 0, 1].into()),
        &dps_config(limits),
    )
    .await
    .expect("DPS starts");
    e
}

/// Waits scaled down tenfold, as a compressed run would.
fn fast_polling() -> Polling {
    Polling {
        scale: 0.1,
        ..Polling::default()
    }
}

fn client(e: &Emulators, polling: Polling, scope: &str, websocket: bool) -> DpsClient {
    let dps = e.dps.as_ref().expect("DPS running");
    let addr = if websocket {
        dps.websocket_addr
    } else {
        dps.mqtt_addr
    };
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    DpsClient::new(
        DpsEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            id_scope: scope.into(),
            websocket,
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            timeout: Duration::from_secs(20),
            polling,
        },
        roots,
    )
}

async fn register(c: &DpsClient, id: &str, key: &DeviceKey, issued: &Issued) -> Registration {
    c.register(id, issued.chain.clone(), key.private_key_der(), None)
        .await
}

/// The service REST API, signed with the DPS connection string.
struct Service {
    http: reqwest::Client,
    base: String,
    credentials: fleetsim::iothub::ConnectionString,
}

impl Service {
    fn new(e: &Emulators) -> Self {
        let dps = e.dps.as_ref().expect("DPS running");
        let root = reqwest::Certificate::from_der(&e.tls_root).unwrap();
        Self {
            http: reqwest::Client::builder()
                .tls_certs_only([root])
                .build()
                .unwrap(),
            base: dps.service_url.clone(),
            credentials: dps.emulator.connection_string(),
        }
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
        if_match: Option<&str>,
    ) -> (u16, Value) {
        let expiry = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let url = format!("{}/{path}?api-version=2021-10-01", self.base);
        let mut req = self
            .http
            .request(method, url)
            .header("Authorization", self.credentials.sas_token(expiry).unwrap());
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(tag) = if_match {
            req = req.header("If-Match", format!("\"{tag}\""));
        }
        let resp = req.send().await.expect("service answers");
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn put(&self, path: &str, body: Value) -> (u16, Value) {
        self.call(reqwest::Method::PUT, path, Some(body), None)
            .await
    }

    async fn get(&self, path: &str) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, None, None).await
    }

    async fn delete(&self, path: &str) -> u16 {
        self.call(reqwest::Method::DELETE, path, None, None).await.0
    }
}

/// An enrolment group trusting the CA uploaded under `ca` (`caReferences`).
fn group(id: &str, ca: &str, status: &str) -> Value {
    json!({
        "enrollmentGroupId": id,
        "attestation": {"type": "x509", "x509": {"caReferences": {"primary": ca}}},
        "provisioningStatus": status,
    })
}

fn pem(der: &[u8]) -> String {
    fleetsim::crypto::cert_to_pem(der)
}

#[tokio::test]
async fn a_device_registers_polls_is_assigned_and_connects_to_its_hub() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let (status, body) = service
        .put(
            "enrollmentGroups/ezca-root",
            json!({
                "enrollmentGroupId": "ezca-root",
                "attestation": {"type": "x509", "x509": {"signingCertificates":
                    {"primary": {"certificate": pem(&e.ca.root_der())}}}},
                "allocationPolicy": "static",
                "iotHubs": [common::HUB_HOST],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let primary = &body["attestation"]["x509"]["signingCertificates"]["primary"];
    assert!(
        primary["certificate"].is_null(),
        "DPS never returns the certificate"
    );
    assert_eq!(
        primary["info"]["sha1Thumbprint"],
        fleetsim::crypto::sha1_thumbprint(&e.ca.root_der())
    );
    assert_eq!(body["provisioningStatus"], "enabled");
    assert!(body["etag"].as_str().is_some_and(|t| !t.is_empty()));

    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "dps-dev-1").await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let first = register(&dps, "dps-dev-1", &key, &issued).await;
    let assigned = first.outcome.clone().expect("assigned");
    assert_eq!(assigned.assigned_hub, common::HUB_HOST);
    assert_eq!(assigned.device_id, "dps-dev-1");
    assert_eq!(assigned.status, "assigned");
    assert_eq!(assigned.substatus.as_deref(), Some("initialAssignment"));
    assert_eq!(assigned.enrollment_group_id.as_deref(), Some("ezca-root"));
    assert!(
        first.polls >= 2,
        "300 ms of assigning at 100 ms polls: {first:?}"
    );

    // The identity DPS created in the hub lets the device in.
    let device = e
        .hub
        .device("dps-dev-1")
        .expect("identity created in the hub");
    assert_eq!(
        device.authentication.kind,
        AuthenticationType::CertificateAuthority
    );
    let mut session = common::transport(&e)
        .connect("dps-dev-1", issued.chain.clone(), key.private_key_der())
        .await
        .expect("connects to the assigned hub");
    session
        .publish(
            "devices/dps-dev-1/messages/events/".into(),
            b"{}".to_vec(),
            true,
        )
        .await
        .unwrap();
    session.disconnect().await;
    assert_eq!(e.hub.device_stats("dps-dev-1").messages, 1);

    let (status, record) = service.get("registrations/dps-dev-1").await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "assigned");
    assert_eq!(record["assignedHub"], common::HUB_HOST);
    assert_eq!(record["deviceId"], "dps-dev-1");

    // Registering again, over WebSocket this time, keeps the hub.
    let ws = client(&e, fast_polling(), SCOPE, true);
    let again = register(&ws, "dps-dev-1", &key, &issued).await;
    let again = again.outcome.expect("assigned again");
    assert_eq!(again.assigned_hub, common::HUB_HOST);
    assert_eq!(
        again.substatus.as_deref(),
        Some("reprovisionedToInitialAssignment")
    );
    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.assigned, 2);
    assert_eq!(stats.per_hub.get(common::HUB_HOST), Some(&2));
    e.shutdown().await;
}

#[tokio::test]
async fn the_most_specific_enrolment_admits_the_device() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    for (id, ca) in [
        ("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE),
        ("issuing", fleetsim::emulator::EZCA_ISSUING_CERTIFICATE),
    ] {
        let (status, body) = service
            .put(&format!("enrollmentGroups/{id}"), group(id, ca, "enabled"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "specific").await;
    let dps = client(&e, fast_polling(), SCOPE, false);

    let by_issuing = register(&dps, "specific", &key, &issued).await.outcome;
    assert_eq!(
        by_issuing.unwrap().enrollment_group_id.as_deref(),
        Some("issuing"),
        "the intermediate beats the root"
    );
    assert_eq!(service.delete("enrollmentGroups/issuing").await, 204);
    let by_root = register(&dps, "specific", &key, &issued).await.outcome;
    assert_eq!(
        by_root.unwrap().enrollment_group_id.as_deref(),
        Some("root"),
        "down to the root"
    );

    // An individual enrolment for the device's own certificate beats every group.
    let (status, body) = service
        .put(
            "individualEnrollments/specific",
            json!({
                "registrationId": "specific",
                "deviceId": "specific-in-hub",
                "attestation": {"type": "x509", "x509": {"clientCertificates":
                    {"primary": {"certificate": pem(&issued.chain[0])}}}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let individual = register(&dps, "specific", &key, &issued)
        .await
        .outcome
        .unwrap();
    assert_eq!(individual.enrollment_group_id, None);
    assert_eq!(individual.device_id, "specific-in-hub");
    assert!(e.hub.device("specific-in-hub").is_some());
    e.shutdown().await;
}

#[tokio::test]
async fn a_disabled_match_refuses_even_when_a_broader_group_is_enabled() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let issuing = group(
        "issuing",
        fleetsim::emulator::EZCA_ISSUING_CERTIFICATE,
        "disabled",
    );
    let (status, stored) = service.put("enrollmentGroups/issuing", issuing).await;
    assert_eq!(status, 200);

    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "benched").await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let refused = register(&dps, "benched", &key, &issued).await.outcome;
    assert_eq!(refused, Err(ProvisioningError::Disabled));
    assert!(e.hub.device("benched").is_none(), "no identity in any hub");
    let (_, record) = service.get("registrations/benched").await;
    assert_eq!(record["status"], "disabled");

    // Enabling takes the current etag.
    let enabled = group(
        "issuing",
        fleetsim::emulator::EZCA_ISSUING_CERTIFICATE,
        "enabled",
    );
    let (status, body) = service
        .call(
            reqwest::Method::PUT,
            "enrollmentGroups/issuing",
            Some(enabled.clone()),
            Some("stale"),
        )
        .await;
    assert_eq!((status, body["errorCode"].as_u64()), (412, Some(412001)));
    let etag = stored["etag"].as_str().unwrap();
    let (status, _) = service
        .call(
            reqwest::Method::PUT,
            "enrollmentGroups/issuing",
            Some(enabled),
            Some(etag),
        )
        .await;
    assert_eq!(status, 200);
    let admitted = register(&dps, "benched", &key, &issued).await.outcome;
    assert_eq!(
        admitted.unwrap().enrollment_group_id.as_deref(),
        Some("issuing")
    );
    assert_eq!(e.dps.as_ref().unwrap().emulator.stats().disabled, 1);
    e.shutdown().await;
}

#[tokio::test]
async fn hashed_allocation_spreads_devices_over_two_hubs() {
    let mut e = start(DpsLimits::published()).await;
    let second = HubConfig {
        host_name: "second-hub.azure-devices.net".into(),
        ..HubConfig::default()
    };
    let second_mqtt = e
        .add_hub(&second, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("second hub")
        .mqtt_addr;
    let service = Service::new(&e);
    let mut body = group(
        "fleet",
        fleetsim::emulator::EZCA_ROOT_CERTIFICATE,
        "enabled",
    );
    body["allocationPolicy"] = json!("hashed");
    body["iotHubs"] = json!([common::HUB_HOST, "second-hub.azure-devices.net"]);
    assert_eq!(service.put("enrollmentGroups/fleet", body).await.0, 200);

    let ca = common::ezca(&e).await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let mut on_second = None;
    for i in 0..16 {
        let id = format!("spread-{i:02}");
        let (key, issued) = common::enrol(&ca, &id).await;
        let a = register(&dps, &id, &key, &issued).await.outcome.unwrap();
        let (mine, other) = match a.assigned_hub.as_str() {
            common::HUB_HOST => (&e.hub, &e.extra_hubs[0].hub),
            _ => (&e.extra_hubs[0].hub, &e.hub),
        };
        assert!(mine.device(&id).is_some() && other.device(&id).is_none());
        if a.assigned_hub != common::HUB_HOST {
            on_second = Some((id, key, issued));
        }
    }
    let per_hub = e.dps.as_ref().unwrap().emulator.stats().per_hub;
    assert_eq!(per_hub.values().sum::<u64>(), 16);
    assert!(
        per_hub.values().all(|n| *n >= 4) && per_hub.len() == 2,
        "evenly weighted: {per_hub:?}"
    );

    // A device assigned to the second hub connects there.
    let (id, key, issued) = on_second.expect("some device went to the second hub");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    let transport = fleetsim::iothub::mqtt::MqttTransport::new(
        fleetsim::iothub::mqtt::MqttEndpoint {
            host: second_mqtt.ip().to_string(),
            port: second_mqtt.port(),
            hub_host: "second-hub.azure-devices.net".into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    );
    let session = transport
        .connect(&id, issued.chain.clone(), key.private_key_der())
        .await
        .expect("connects to the second hub");
    session.disconnect().await;
    e.shutdown().await;
}

#[tokio::test]
async fn over_dps_limits_requests_get_429_with_retry_after() {
    // One registration a second (a burst of one) for the whole service.
    let limits = DpsLimits {
        registrations_per_minute: Some(60.0),
        ..DpsLimits::published()
    };
    let e = start(limits).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "eager").await;

    let give_up = Polling {
        retry_throttled: false,
        ..fast_polling()
    };
    let strict = client(&e, give_up, SCOPE, false);
    assert!(
        register(&strict, "eager", &key, &issued)
            .await
            .outcome
            .is_ok()
    );
    let throttled = register(&strict, "eager", &key, &issued).await;
    assert_eq!(
        throttled.outcome,
        Err(ProvisioningError::Throttled {
            retry_after: Duration::from_secs(1)
        })
    );
    assert_eq!(throttled.throttled, 1);
    // As the SDKs do, the default client waits retry-after and gets through.
    let patient = client(&e, Polling::default(), SCOPE, false);
    let through = register(&patient, "eager", &key, &issued).await;
    assert!(through.outcome.is_ok(), "{through:?}");

    // Polls: 5 per 10 s per device; a fresh device's sixth in a row is refused for about 2 s.
    let (key, issued) = common::enrol(&ca, "poller").await;
    let (mut raw, code) = RawDps::connect(&e, "poller", &key, &issued, SCOPE).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw.subscribe().await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the registration limit
    let (topic, body) = raw
        .request(REGISTER, &json!({"registrationId": "poller"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    let op = body["operationId"].as_str().unwrap().to_string();
    let poll = format!("{POLL}&operationId={op}");
    for _ in 0..5 {
        let (topic, _) = raw.request(&poll, &Value::Null).await;
        assert!(!topic.contains("/res/429/"), "{topic}");
    }
    let (topic, body) = raw.request(&poll, &Value::Null).await;
    assert!(topic.starts_with("$dps/registrations/res/429/"), "{topic}");
    assert!(topic.ends_with("&retry-after=2"), "{topic}");
    assert_eq!(body["errorCode"], 429001);
    assert!(e.dps.as_ref().unwrap().emulator.stats().throttled >= 3);
    e.shutdown().await;
}

#[tokio::test]
async fn wrong_id_scope_and_foreign_certificates_are_refused() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "scoped").await;

    let elsewhere = client(&e, fast_polling(), "0ne99999999", false);
    let refused = register(&elsewhere, "scoped", &key, &issued).await.outcome;
    assert_eq!(refused, Err(ProvisioningError::ConnectRefused(5)));

    // Right CN and a good chain, but from a CA no enrolment trusts.
    let (foreign_key, foreign) = foreign_certificate("scoped");
    let dps = client(&e, fast_polling(), SCOPE, false);
    let outcome = dps
        .register("scoped", foreign, foreign_key.private_key_der(), None)
        .await
        .outcome;
    match outcome {
        Err(ProvisioningError::Failed { status, code, .. }) => {
            assert_eq!((status, code), (401, Some(401002)));
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!((stats.refused, stats.unauthorized), (1, 1));
    assert!(e.hub.device("scoped").is_none());
    // The EZCA certificate is fine, of course.
    assert!(
        register(&dps, "scoped", &key, &issued)
            .await
            .outcome
            .is_ok()
    );
    e.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_dps_errors_or_a_closed_connection() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "rough").await;
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.subscribe().await;

    let unknown = format!("{POLL}&operationId=4.0000000000000000.nope");
    let (topic, body) = raw.request(&unknown, &Value::Null).await;
    assert!(
        topic.starts_with("$dps/registrations/res/404/?$rid="),
        "{topic}"
    );
    for field in ["errorCode", "trackingId", "message", "timestampUtc"] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    assert_eq!(body["errorCode"], 404201);
    let (topic, body) = raw.request_raw(REGISTER, b"{not json").await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    assert_eq!(body["errorCode"], 400004);
    let other = json!({"registrationId": "somebody-else"});
    let (topic, _) = raw.request(REGISTER, &other).await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    // The connection survived all that; a foreign topic ends it.
    let (topic, _) = raw
        .request(REGISTER, &json!({"registrationId": "rough"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    raw.publish("devices/rough/messages/events/", b"{}").await;
    assert!(raw.recv().await.is_none(), "closed after a foreign topic");

    // Garbage inside TLS, then garbage instead of TLS.
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.write(&[0xff; 64]).await;
    assert!(raw.recv().await.is_none(), "closed after garbage");
    let dps_addr = e.dps.as_ref().unwrap().mqtt_addr;
    let mut tcp = tokio::net::TcpStream::connect(dps_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest);
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed");

    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.malformed, 3);
    assert!(stats.protocol_errors >= 3, "{stats:?}");
    // DPS still serves.
    let dps = client(&e, fast_polling(), SCOPE, false);
    assert!(register(&dps, "rough", &key, &issued).await.outcome.is_ok());
    e.shutdown().await;
}

/// The value after `key` on the banner line that starts with `line`.
fn banner_field<'a>(banner: &'a str, line: &str, key: &str) -> &'a str {
    let l = banner
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no '{line}' in {banner}"));
    let rest = &l[l.find(key).unwrap_or_else(|| panic!("no '{key}' in {l}")) + key.len()..];
    rest.trim_start().split([' ', ')', ',']).next().unwrap()
}

/// Interrupts the child (Ctrl-C) when dropped, even when the test panics.
struct Interrupt(std::process::Child);

impl Drop for Interrupt {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn fleetsim_emulate_serves_dps_with_a_group_for_ezca_devices() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("fleetsim-emulate-dps-{}", std::process::id()));
    let mut emulate = std::process::Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("emulate")
        .args([
            "--ca-port",
            "0",
            "--mqtt-port",
            "0",
            "--websocket-port",
            "0",
        ])
        .args([
            "--registry-port",
            "0",
            "--dps-ip",
            "127.0.0.1",
            "--dps-port",
            "0",
        ])
        .args([
            "--dps-websocket-port",
            "0",
            "--dps-service-port",
            "0",
            "--dir",
        ])
        .arg(&dir)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("fleetsim emulate starts");
    let stdout = emulate.stdout.take().unwrap();
    let emulate = Interrupt(emulate);
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("ready") {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("emulate gets ready within 30 s")
        .unwrap();
    assert!(banner.contains("ready"), "{banner}");
    let dps_addr: std::net::SocketAddr = banner_field(&banner, "DPS MQTT:", "mqtts://")
        .parse()
        .unwrap();
    let scope = banner_field(&banner, "DPS MQTT:", "id scope ").to_string();
    let hub_host = banner_field(&banner, "IoT Hub MQTT:", "host name ").to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.join("dps-connection-string")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    assert!(
        target.contains(&format!("#   id_scope: {scope}")),
        "{target}"
    );

    // A device with an EZCA certificate from the emulator registers through the default group.
    let trust = std::fs::read_to_string(dir.join("trust.pem")).unwrap();
    let trust = fleetsim::crypto::certs_from_pem(&trust).unwrap();
    let token = std::fs::read_to_string(dir.join("ezca-token")).unwrap();
    let ezca = fleetsim::ezca::Client::new(
        banner_field(&banner, "EZCA:", "EZCA:"),
        std::sync::Arc::new(fleetsim::ezca::StaticToken::new(token.trim())),
        &trust,
        true,
    )
    .unwrap();
    let ca_id = banner_field(&banner, "  ECDSA issuing CA:", "CA: ");
    let ca = fleetsim::device::adapters::EzcaCa::discover(ezca, Some(ca_id))
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, "emulated-dps-1").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust[0].clone()).unwrap();
    let endpoint = DpsEndpoint {
        host: dps_addr.ip().to_string(),
        port: dps_addr.port(),
        id_scope: scope,
        websocket: false,
        keep_alive: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(20),
        polling: fast_polling(),
    };
    let outcome = register(
        &DpsClient::new(endpoint, roots),
        "emulated-dps-1",
        &key,
        &issued,
    )
    .await
    .outcome;
    drop(emulate);
    let _ = std::fs::remove_dir_all(&dir);
    let assigned = outcome.expect("assigned");
    assert_eq!(assigned.assigned_hub, hub_host);
    assert_eq!(
        assigned.enrollment_group_id.as_deref(),
        Some("fleetsim-ezca")
    );
}

/// A certificate for `cn` from a CA nobody enrolled (chain: leaf, CA).
fn foreign_certificate(cn: &str) -> (DeviceKey, Vec<rustls_pki_types::CertificateDer<'static>>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Some Other CA");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let csr = rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem(cn).unwrap()).unwrap();
    let mut leaf = rcgen::CertificateSigningRequestParams {
        params: CertificateParams::new(vec![cn.to_string()]).unwrap(),
        public_key: csr.public_key,
    };
    leaf.params.distinguished_name.push(DnType::CommonName, cn);
    leaf.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
    let cert = leaf.signed_by(&issuer).unwrap();
    (key, vec![cert.der().clone(), ca_cert.der().clone()])
}

const REGISTER: &str = "$dps/registrations/PUT/iotdps-register/?$rid=";
const POLL: &str = "$dps/registrations/GET/iotdps-get-operationstatus/?$rid=";

use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};

/// A bare MQTT client to DPS, for requests a well-behaved client would not send.
struct RawDps {
    stream: tokio_rustls::client::TlsStream<tokio::net::TcpStream>,
    buf: bytes::BytesMut,
    rid: u32,
}

impl RawDps {
    async fn connect(
        e: &Emulators,
        id: &str,
        key: &DeviceKey,
        issued: &Issued,
        scope: &str,
    ) -> (Self, ConnectReturnCode) {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(e.tls_root.clone()).unwrap();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::aws_lc_rs::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(issued.chain.clone(), key.private_key_der())
        .unwrap();
        let addr = e.dps.as_ref().unwrap().mqtt_addr;
        let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        let name = rustls_pki_types::ServerName::try_from(addr.ip().to_string()).unwrap();
        let stream = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
            .connect(name, tcp)
            .await
            .unwrap();
        let mut raw = Self {
            stream,
            buf: bytes::BytesMut::new(),
            rid: 0,
        };
        let mut connect = rumqttc::mqttbytes::v4::Connect::new(id);
        connect.keep_alive = 30;
        connect.set_login(DpsClient::username(scope, id), "");
        raw.send(Packet::Connect(connect)).await;
        match raw.recv().await {
            Some(Packet::ConnAck(ack)) => (raw, ack.code),
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        use tokio::io::AsyncWriteExt;
        self.stream.write_all(bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    async fn send(&mut self, packet: Packet) {
        let mut out = bytes::BytesMut::new();
        packet.write(&mut out, 1 << 20).unwrap();
        self.write(&out).await;
    }

    /// The next packet, or `None` once DPS has closed the connection (10 s at most).
    async fn recv(&mut self) -> Option<Packet> {
        use tokio::io::AsyncReadExt;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match Packet::read(&mut self.buf, 1 << 20) {
                Ok(p) => return Some(p),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("bad packet from DPS: {e}"),
            }
            let read = tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf));
            match read.await.expect("DPS answered or closed within 10 s") {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    async fn subscribe(&mut self) {
        let sub = rumqttc::mqttbytes::v4::Subscribe::new(
            "$dps/registrations/res/#",
            rumqttc::mqttbytes::QoS::AtLeastOnce,
        );
        self.send(Packet::Subscribe(sub)).await;
        assert!(matches!(self.recv().await, Some(Packet::SubAck(_))));
    }

    async fn publish(&mut self, topic: &str, body: &[u8]) {
        let p = rumqttc::mqttbytes::v4::Publish::new(
            topic,
            rumqttc::mqttbytes::QoS::AtMostOnce,
            body.to_vec(),
        );
        self.send(Packet::Publish(p)).await;
    }

    /// Publishes to `prefix` + a new request id (and whatever follows `&` in `prefix`'s tail)
    /// and returns DPS's answer to it.
    async fn request_raw(&mut self, prefix: &str, body: &[u8]) -> (String, Value) {
        self.rid += 1;
        let topic = match prefix.split_once('&') {
            Some((head, tail)) => format!("{head}{}&{tail}", self.rid),
            None => format!("{prefix}{}", self.rid),
        };
        self.publish(&topic, body).await;
        loop {
            match self.recv().await {
                Some(Packet::Publish(p)) => {
                    assert!(
                        p.topic.contains(&format!("?$rid={}", self.rid)),
                        "{}",
                        p.topic
                    );
                    let body = serde_json::from_slice(&p.payload).unwrap_or(Value::Null);
                    return (p.topic, body);
                }
                Some(_) => continue,
                None => panic!("DPS closed the connection instead of answering {topic}"),
            }
        }
    }

    async fn request(&mut self, prefix: &str, body: &Value) -> (String, Value) {
        let bytes = match body {
            Value::Null => Vec::new(),
            b => serde_json::to_vec(b).unwrap(),
        };
        self.request_raw(prefix, &bytes).await
    }
}

/// DPS and the hub on 8883 at two host names, as Microsoft's SDKs insist (port fixed, host names
/// checked): addresses of their own, out of other tests' way.
const SDK_DPS: (&str, [u8; 4]) = ("dps.fleetsim-sdk.test", [127, 0, 14, 1]);
const SDK_HUB: (&str, [u8; 4]) = ("hub.fleetsim-sdk.test", [127, 0, 14, 2]);

/// Maps the SDK test's host names in /etc/hosts, appending only the lines that are missing.
fn map_host_names() {
    let hosts = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
    let missing: String = [SDK_DPS, SDK_HUB]
        .iter()
        .map(|(name, ip)| format!("{}.{}.{}.{} {name}\n", ip[0], ip[1], ip[2], ip[3]))
        .filter(|line| !hosts.lines().any(|l| l.trim() == line.trim()))
        .collect();
    if missing.is_empty() {
        return;
    }
    let mut text = hosts;
    if !text.is_empty() && !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&missing);
    std::fs::write("/etc/hosts", text).unwrap_or_else(|e| {
        panic!("cannot map {missing:?} in /etc/hosts ({e}); add the lines by hand or run as root")
    });
}

fn sdk_python() -> std::path::PathBuf {
    let python =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/peers/venv/bin/python");
    assert!(
        python.exists(),
        "Microsoft's Python SDK is not installed at {}: run ./scripts/test (it creates the \
         virtualenv with azure-iot-device 2.14 and azure-iot-hub 2.7)",
        python.display()
    );
    python
}

#[tokio::test]
async fn microsofts_python_sdk_provisions_through_dps_and_sends_to_the_assigned_hub() {
    let python = sdk_python();
    map_host_names();
    let ip = |a: [u8; 4]| std::net::SocketAddr::from((a, 8883));
    let any = "127.0.0.1:0".parse().unwrap();
    let ca = fleetsim::emulator::CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = HubConfig {
        host_name: SDK_HUB.0.into(),
        ..HubConfig::default()
    };
    let addrs = fleetsim::emulator::Addresses {
        ca: any,
        hub_mqtt: ip(SDK_HUB.1),
        hub_registry: any,
        hub_websocket: any,
    };
    let mut e = Emulators::start_on(addrs, &ca, &hub)
        .await
        .expect("emulators on 127.0.14.2:8883");
    let dps_addrs = DpsAddresses {
        mqtt: ip(SDK_DPS.1),
        websocket: any,
        service: any,
    };
    let config = DpsConfig {
        host_name: SDK_DPS.0.into(),
        ..dps_config(DpsLimits::published())
    };
    let dps = e
        .start_dps(dps_addrs, &config)
        .await
        .expect("DPS on 127.0.14.1:8883");
    let dps = dps.emulator.clone();
    let group: fleetsim::emulator::dps::EnrollmentGroup = serde_json::from_value(group(
        "sdk",
        fleetsim::emulator::EZCA_ROOT_CERTIFICATE,
        "enabled",
    ))
    .unwrap();
    dps.put_enrollment_group(group).expect("group");

    let id = "sdk-dps-001";
    let (key, issued) = common::enrol(&common::ezca(&e).await, id).await;
    let dir = std::env::temp_dir().join(format!("fleetsim-dps-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chain: String = issued.chain.iter().map(|c| pem(c)).collect();
    std::fs::write(dir.join("device.pem"), chain).unwrap();
    fleetsim::crypto::write_private_key(&dir.join("device.key"), &key).unwrap();
    std::fs::write(dir.join("trust.pem"), pem(&e.tls_root)).unwrap();

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dps_register.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args([SDK_DPS.0, dps.id_scope(), id])
        .args([
            dir.join("device.pem"),
            dir.join("device.key"),
            dir.join("trust.pem"),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK finished within 90 s")
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(result["status"], "assigned");
    assert_eq!(result["assigned_hub"], SDK_HUB.0);
    assert_eq!(result["device_id"], id);
    assert_eq!(result["substatus"], "initialAssignment");
    assert_eq!(result["sent"], 1);
    assert_eq!(dps.stats().assigned, 1);
    assert_eq!(
        e.hub.device_stats(id).messages,
        1,
        "the hub got the SDK's message"
    );
    e.shutdown().await;
}
