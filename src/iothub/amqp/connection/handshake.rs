//! Opening a [`Connection`]: TCP, TLS (the system's or the emulator's roots, no AMQP TLS
//! header), SASL `MSSBCBS`, the AMQP header, `open` and `begin`, all within the endpoint's
//! timeout.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::{Connection, Endpoint, INCOMING_WINDOW, MAX_FRAME, Session, Tls, describe};
use crate::amqp::codec::{Decoder, Value};
use crate::amqp::frames::{AMQP_HEADER, FrameReader, SASL_HEADER, TYPE_SASL, frame};
use crate::amqp::performatives::{
    BEGIN, OPEN, Performative, SASL_INIT, SASL_OUTCOME, decode_performative, encode_value,
};
use crate::iothub::amqp::error::AmqpError;

async fn tls_connect(ep: &Endpoint) -> Result<Tls, AmqpError> {
    let tcp = TcpStream::connect(&ep.address)
        .await
        .map_err(|source| AmqpError::Connect {
            address: ep.address.clone(),
            source,
        })?;
    let _ = tcp.set_nodelay(true);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| AmqpError::Setup(e.to_string()))?
        .with_root_certificates(ep.roots.clone())
        .with_no_client_auth();
    let name = rustls_pki_types::ServerName::try_from(ep.host.clone())
        .map_err(|e| AmqpError::Setup(format!("'{}' is not a host name: {e}", ep.host)))?;
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|source| AmqpError::Tls {
            host: ep.host.clone(),
            source,
        })
}

/// The first field of a SASL frame's described list, and the frame's descriptor.
fn sasl_fields(body: &[u8]) -> Result<(u64, Vec<Value>), AmqpError> {
    match Decoder::new(body).value()? {
        Value::Described(d, inner) => match (*inner, d.as_u64()) {
            (Value::List(items), Some(code)) => Ok((code, items)),
            _ => Err(AmqpError::Sasl("malformed SASL frame".into())),
        },
        _ => Err(AmqpError::Sasl("SASL frame is not a described list".into())),
    }
}

impl Connection {
    /// Connects, authenticates with SASL `MSSBCBS` and opens one session, within the
    /// endpoint's timeout.
    pub async fn open(ep: &Endpoint, container_id: &str) -> Result<Connection, AmqpError> {
        crate::crypto::install_crypto_provider();
        let after = ep.timeout;
        tokio::time::timeout(after, Self::handshake(ep, container_id))
            .await
            .map_err(|_| AmqpError::Timeout {
                what: "the AMQP handshake",
                after,
            })?
    }

    async fn handshake(ep: &Endpoint, container_id: &str) -> Result<Connection, AmqpError> {
        let (r, w) = tokio::io::split(tls_connect(ep).await?);
        let mut c = Connection {
            reader: FrameReader::new(r, MAX_FRAME as usize),
            writer: w,
            timeout: ep.timeout,
            max_out_frame: 512,
            heartbeat: None,
            last_sent: Instant::now(),
            next_handle: 0,
            session: Session {
                incoming_remaining: INCOMING_WINDOW,
                ..Session::default()
            },
            links: HashMap::new(),
            remote: HashMap::new(),
            events: VecDeque::new(),
        };
        c.sasl().await?;
        c.write(&AMQP_HEADER).await?;
        let header = c.reader.protocol_header().await?;
        if header != AMQP_HEADER {
            return Err(AmqpError::Protocol(format!(
                "expected the AMQP header, got {header:02x?}"
            )));
        }
        let open = Value::described(
            OPEN,
            vec![
                Value::str(container_id),
                Value::str(&ep.host),
                Value::Uint(MAX_FRAME),
                Value::Ushort(0),
            ],
        );
        let begin = Value::described(
            BEGIN,
            vec![
                Value::Null,
                Value::Uint(0),
                Value::Uint(INCOMING_WINDOW),
                Value::Uint(u32::MAX >> 1),
            ],
        );
        c.send_performative(&open, &[]).await?;
        c.send_performative(&begin, &[]).await?;
        c.await_open_and_begin().await?;
        Ok(c)
    }

    async fn sasl(&mut self) -> Result<(), AmqpError> {
        self.write(&SASL_HEADER).await?;
        let header = self.reader.protocol_header().await?;
        if header != SASL_HEADER {
            return Err(AmqpError::Sasl(format!(
                "the hub answered with header {header:02x?}, not SASL's"
            )));
        }
        let mechanisms = self.reader.next_frame().await?;
        let (_, fields) = sasl_fields(&mechanisms.body)?;
        let offered: Vec<String> = match fields.first() {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|v| v.as_text().map(str::to_string))
                .collect(),
            Some(v) => v.as_text().map(str::to_string).into_iter().collect(),
            None => Vec::new(),
        };
        if !offered.iter().any(|m| m == "MSSBCBS") {
            return Err(AmqpError::Sasl(format!(
                "the hub offers {offered:?}, not MSSBCBS"
            )));
        }
        let init = Value::described(SASL_INIT, vec![Value::sym("MSSBCBS")]);
        self.write(&frame(TYPE_SASL, 0, &encode_value(&init), &[]))
            .await?;
        let outcome = self.reader.next_frame().await?;
        match sasl_fields(&outcome.body)? {
            (SASL_OUTCOME, f) if outcome.kind == TYPE_SASL => match f.first() {
                Some(Value::Ubyte(0)) => Ok(()),
                other => Err(AmqpError::Sasl(format!("outcome {other:?}"))),
            },
            _ => Err(AmqpError::Sasl("expected sasl-outcome".into())),
        }
    }

    async fn await_open_and_begin(&mut self) -> Result<(), AmqpError> {
        let (mut opened, mut begun) = (false, false);
        while !(opened && begun) {
            let f = self.reader.next_frame().await?;
            if f.body.is_empty() {
                continue;
            }
            match decode_performative(&f.body)?.0 {
                Performative::Open(o) => {
                    self.max_out_frame =
                        o.max_frame_size.unwrap_or(u32::MAX).clamp(512, MAX_FRAME) as usize;
                    self.heartbeat = o
                        .idle_timeout_ms
                        .filter(|ms| *ms > 0)
                        .map(|ms| Duration::from_millis(u64::from(ms / 2).max(100)));
                    opened = true;
                }
                Performative::Begin(b) => {
                    self.session.remote_incoming = b.incoming_window;
                    self.session.next_incoming_id = b.next_outgoing_id;
                    begun = true;
                }
                Performative::Close(e) | Performative::End(e) => {
                    return Err(AmqpError::Closed(describe(e.as_ref())));
                }
                _ => return Err(AmqpError::Protocol("expected open and begin".into())),
            }
        }
        Ok(())
    }
}
