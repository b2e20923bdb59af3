//! One AMQP 1.0 client connection over TLS (the hub's port 5671; no AMQP TLS header, as the
//! SDKs do it): SASL (`MSSBCBS`: authenticate later on `$cbs`), open, one session on channel 0,
//! and links attached on it. The caller drives it: every call reads frames until what it waits
//! for arrives or its deadline passes, keeping what else arrived (messages, dispositions,
//! detaches) as [`Event`]s for later. Reads are bounded by the frame size we announce; heartbeats
//! go out at half the hub's idle timeout while a call waits; a `close` or `end` from the hub is
//! [`AmqpError::Closed`] with the hub's reason.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use rustls::RootCertStore;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::error::{AmqpError, error_parts};
use crate::amqp::codec::Value;
use crate::amqp::frames::{FrameReader, TYPE_AMQP, frame, heartbeat};
use crate::amqp::performatives::{
    self as p, ATTACH, Attach, Disposition, Flow, Performative, SOURCE, TARGET, Transfer,
    decode_performative, encode_value,
};

mod handshake;

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// The largest frame we accept (and announce).
pub const MAX_FRAME: u32 = 256 * 1024;
/// The largest message we reassemble from a receiver's transfers.
const MAX_MESSAGE: usize = 4 * 1024 * 1024;
/// Transfer frames the hub may send before we widen the session's window.
const INCOMING_WINDOW: u32 = 4096;
/// Room for the transfer performative in a frame.
const TRANSFER_OVERHEAD: usize = 64;

/// Where the hub's AMQP endpoint is and how to trust it.
#[derive(Clone)]
pub struct Endpoint {
    /// The host name TLS checks and the `open` names (`{hub}.azure-devices.net`).
    pub host: String,
    /// Where to connect, `host:port` (the host itself on port 5671 for Azure).
    pub address: String,
    pub roots: Arc<RootCertStore>,
    /// How long connecting and each request may take.
    pub timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("address", &self.address)
            .finish_non_exhaustive()
    }
}

/// What the hub sent that no call was waiting for.
#[derive(Debug, Clone)]
pub enum Event {
    /// A complete message on receiving link `handle` (ours), already settled.
    Message { handle: u32, payload: Vec<u8> },
    /// The hub settled or updated deliveries we sent.
    Disposition(Disposition),
    /// The hub detached link `handle` (ours), with its error if any.
    Detached { handle: u32, error: Option<Value> },
}

struct Link {
    name: String,
    address: String,
    sender: bool,
    remote_handle: Option<u32>,
    /// Sender: credit the hub gave. Receiver: credit we gave.
    credit: u32,
    delivery_count: u32,
    max_credit: u32,
    /// A receiver's message arriving in several transfers: (settled, bytes so far).
    partial: Option<(Option<u32>, bool, Vec<u8>)>,
    refused: bool,
}

#[derive(Default)]
struct Session {
    next_outgoing_id: u32,
    next_delivery_id: u32,
    /// Transfer frames the hub will still take.
    remote_incoming: u32,
    next_incoming_id: u32,
    incoming_remaining: u32,
}

pub struct Connection {
    reader: FrameReader<ReadHalf<Tls>>,
    writer: WriteHalf<Tls>,
    timeout: Duration,
    max_out_frame: usize,
    heartbeat: Option<Duration>,
    last_sent: Instant,
    next_handle: u32,
    session: Session,
    links: HashMap<u32, Link>,
    /// The hub's handle → ours.
    remote: HashMap<u32, u32>,
    events: VecDeque<Event>,
}

impl Connection {
    /// How long connecting and each request may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The name of link `handle` (also the target address of our receivers: the `reply-to`
    /// of requests answered on it).
    pub fn link_name(&self, handle: u32) -> Option<&str> {
        self.links.get(&handle).map(|l| l.name.as_str())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), AmqpError> {
        let io = async {
            self.writer.write_all(bytes).await?;
            self.writer.flush().await
        };
        let after = self.timeout;
        tokio::time::timeout(after, io)
            .await
            .map_err(|_| AmqpError::Timeout {
                what: "writing to the hub",
                after,
            })?
            .map_err(|e| AmqpError::Frame(e.into()))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    async fn send_performative(&mut self, v: &Value, payload: &[u8]) -> Result<(), AmqpError> {
        let f = frame(TYPE_AMQP, 0, &encode_value(v), payload);
        self.write(&f).await
    }

    /// Attaches a link on which we send to `address`; returns its handle once the hub attached
    /// it (credit may come later: [`Connection::send`] waits for it).
    pub async fn attach_sender(&mut self, address: &str) -> Result<u32, AmqpError> {
        let handle = self.new_link(address, true, 0);
        let name = self.links[&handle].name.clone();
        let attach = Value::described(
            ATTACH,
            vec![
                Value::str(&name),
                Value::Uint(handle),
                Value::Bool(false),
                Value::Ubyte(0),
                Value::Ubyte(0),
                Value::described(SOURCE, vec![Value::str(&name)]),
                Value::described(TARGET, vec![Value::str(address)]),
                Value::Null,
                Value::Null,
                Value::Uint(0),
            ],
        );
        self.send_performative(&attach, &[]).await?;
        self.await_attached(handle).await?;
        Ok(handle)
    }

    /// Attaches a link on which we receive from `address` (with a source `filter` map, e.g.
    /// an Event Hub start position), granting `credit` messages at a time.
    pub async fn attach_receiver(
        &mut self,
        address: &str,
        filter: Option<Value>,
        credit: u32,
    ) -> Result<u32, AmqpError> {
        let handle = self.new_link(address, false, credit);
        let name = self.links[&handle].name.clone();
        let mut source = vec![Value::str(address)];
        if let Some(filter) = filter {
            source.resize(7, Value::Null);
            source.push(filter);
        }
        let attach = Value::described(
            ATTACH,
            vec![
                Value::str(&name),
                Value::Uint(handle),
                Value::Bool(true),
                // Settled by the hub as it sends (at most once, as a reader of a log needs).
                Value::Ubyte(1),
                Value::Ubyte(0),
                Value::described(SOURCE, source),
                Value::described(TARGET, vec![Value::str(&name)]),
            ],
        );
        self.send_performative(&attach, &[]).await?;
        self.await_attached(handle).await?;
        self.grant(handle).await?;
        Ok(handle)
    }

    fn new_link(&mut self, address: &str, sender: bool, credit: u32) -> u32 {
        let handle = self.next_handle;
        self.next_handle += 1;
        let role = if sender { "sender" } else { "receiver" };
        let name = format!("fleetsim-{role}-{handle}-{}", uuid::Uuid::new_v4().simple());
        self.links.insert(
            handle,
            Link {
                name,
                address: address.to_string(),
                sender,
                remote_handle: None,
                credit: 0,
                delivery_count: 0,
                max_credit: credit,
                partial: None,
                refused: false,
            },
        );
        handle
    }

    async fn await_attached(&mut self, handle: u32) -> Result<(), AmqpError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            // A refusal is an attach with a null terminus followed by a detach with the error.
            if let Some(i) = self
                .events
                .iter()
                .position(|e| matches!(e, Event::Detached { handle: h, .. } if *h == handle))
            {
                let error = match self.events.remove(i) {
                    Some(Event::Detached { error, .. }) => error,
                    _ => None,
                };
                let address = self.links.remove(&handle).map(|l| l.address);
                let (condition, description) = error.as_ref().map(error_parts).unwrap_or_default();
                return Err(AmqpError::LinkRefused {
                    address: address.unwrap_or_default(),
                    condition,
                    description,
                });
            }
            let attached = self
                .links
                .get(&handle)
                .is_some_and(|l| l.remote_handle.is_some() && !l.refused);
            if attached {
                return Ok(());
            }
            if !self.read_until(deadline).await? {
                return Err(AmqpError::Timeout {
                    what: "attaching a link",
                    after: self.timeout,
                });
            }
        }
    }

    /// Tops a receiver's credit up to its maximum.
    async fn grant(&mut self, handle: u32) -> Result<(), AmqpError> {
        let Some(l) = self.links.get_mut(&handle) else {
            return Ok(());
        };
        l.credit = l.max_credit;
        let f = p::LinkFlow {
            next_incoming_id: self.session.next_incoming_id,
            incoming_window: self.session.incoming_remaining,
            next_outgoing_id: self.session.next_outgoing_id,
            handle: Some(handle),
            delivery_count: l.delivery_count,
            link_credit: l.credit,
            drain: false,
        };
        self.send_performative(&p::flow(&f), &[]).await
    }

    /// Sends `payload` (an encoded message) on sender link `handle`, unsettled; returns its
    /// delivery id, whose disposition comes as an [`Event::Disposition`]. Waits for credit.
    pub async fn send(&mut self, handle: u32, payload: &[u8]) -> Result<u32, AmqpError> {
        let chunk = self
            .max_out_frame
            .saturating_sub(TRANSFER_OVERHEAD)
            .max(256);
        let frames = payload.len().div_ceil(chunk).max(1) as u32;
        let deadline = Instant::now() + self.timeout;
        loop {
            let l = self
                .links
                .get(&handle)
                .filter(|l| l.sender)
                .ok_or_else(|| AmqpError::Protocol(format!("no sender link {handle}")))?;
            if l.credit > 0 && self.session.remote_incoming >= frames {
                break;
            }
            if !self.read_until(deadline).await? {
                return Err(AmqpError::Timeout {
                    what: "waiting for link credit",
                    after: self.timeout,
                });
            }
        }
        let id = self.session.next_delivery_id;
        self.session.next_delivery_id = id.wrapping_add(1);
        let mut out = Vec::with_capacity(payload.len() + 64 * frames as usize);
        let mut chunks = payload.chunks(chunk).peekable();
        if payload.is_empty() {
            out.extend(frame(
                TYPE_AMQP,
                0,
                &encode_value(&p::transfer(handle, id, false, false)),
                &[],
            ));
        }
        while let Some(part) = chunks.next() {
            let more = chunks.peek().is_some();
            let t = encode_value(&p::transfer(handle, id, false, more));
            out.extend(frame(TYPE_AMQP, 0, &t, part));
        }
        self.write(&out).await?;
        self.session.next_outgoing_id = self.session.next_outgoing_id.wrapping_add(frames);
        self.session.remote_incoming -= frames;
        if let Some(l) = self.links.get_mut(&handle) {
            l.credit -= 1;
            l.delivery_count = l.delivery_count.wrapping_add(1);
        }
        Ok(id)
    }

    /// The first kept or arriving event `want` picks, leaving the others for later; `None` at
    /// `deadline`.
    pub async fn wait_for(
        &mut self,
        deadline: Instant,
        mut want: impl FnMut(&Event) -> bool,
    ) -> Result<Option<Event>, AmqpError> {
        let mut seen = 0;
        loop {
            if let Some(i) = self.events.iter().skip(seen).position(&mut want) {
                return Ok(self.events.remove(seen + i));
            }
            seen = self.events.len();
            if !self.read_until(deadline).await? {
                return Ok(None);
            }
        }
    }

    /// The next event of any kind; `None` at `deadline`.
    pub async fn next_event(&mut self, deadline: Instant) -> Result<Option<Event>, AmqpError> {
        self.wait_for(deadline, |_| true).await
    }

    /// Reads and handles one frame (sending heartbeats while waiting); false at `deadline`.
    async fn read_until(&mut self, deadline: Instant) -> Result<bool, AmqpError> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let beat_at = self.heartbeat.map(|h| self.last_sent + h);
            let wake = beat_at.map_or(deadline, |b| b.min(deadline));
            match tokio::time::timeout_at(wake, self.reader.next_frame()).await {
                Ok(f) => {
                    let f = f?;
                    if f.kind != TYPE_AMQP {
                        return Err(AmqpError::Protocol("SASL frame after SASL".into()));
                    }
                    if !f.body.is_empty() {
                        self.on_frame(&f.body).await?;
                    }
                    return Ok(true);
                }
                Err(_) if beat_at.is_some_and(|b| Instant::now() >= b) => {
                    self.write(&heartbeat()).await?;
                }
                Err(_) => {}
            }
        }
    }

    async fn on_frame(&mut self, body: &[u8]) -> Result<(), AmqpError> {
        let (performative, at) = decode_performative(body)?;
        match performative {
            Performative::Attach(a) => self.on_attach(a),
            Performative::Flow(f) => self.on_flow(&f).await?,
            Performative::Transfer(t) => self.on_transfer(&t, &body[at..]).await?,
            Performative::Disposition(d) => self.events.push_back(Event::Disposition(d)),
            Performative::Detach(d) => self.on_detach(d.handle, d.error).await?,
            Performative::Close(e) => {
                let _ = self.send_performative(&p::close(None), &[]).await;
                return Err(AmqpError::Closed(describe(e.as_ref())));
            }
            Performative::End(e) => {
                let _ = self.send_performative(&p::end(None), &[]).await;
                return Err(AmqpError::Closed(format!(
                    "session ended: {}",
                    describe(e.as_ref())
                )));
            }
            Performative::Open(_) | Performative::Begin(_) => {
                return Err(AmqpError::Protocol("a second open or begin".into()));
            }
        }
        Ok(())
    }

    fn on_attach(&mut self, a: Attach) {
        let Some((&ours, link)) = self.links.iter_mut().find(|(_, l)| l.name == a.name) else {
            tracing::debug!(link = %a.name, "attach for an unknown link ignored");
            return;
        };
        // The hub's terminus on its side is null when it refuses; its detach follows.
        let theirs = if link.sender { &a.target } else { &a.source };
        link.refused = theirs.is_null();
        link.remote_handle = Some(a.handle);
        if !link.sender {
            link.delivery_count = a.initial_delivery_count.unwrap_or(0);
        }
        self.remote.insert(a.handle, ours);
    }

    async fn on_flow(&mut self, f: &Flow) -> Result<(), AmqpError> {
        let s = &mut self.session;
        s.remote_incoming = match f.next_incoming_id {
            Some(next) => next
                .wrapping_add(f.incoming_window)
                .wrapping_sub(s.next_outgoing_id),
            None => f.incoming_window,
        };
        let Some(ours) = f.handle.and_then(|h| self.remote.get(&h).copied()) else {
            return Ok(());
        };
        let Some(l) = self.links.get_mut(&ours) else {
            return Ok(());
        };
        if l.sender {
            let their_count = f.delivery_count.unwrap_or(l.delivery_count);
            l.credit = their_count
                .wrapping_add(f.link_credit.unwrap_or(0))
                .wrapping_sub(l.delivery_count);
        }
        if f.echo {
            self.grant(ours).await?;
        }
        Ok(())
    }

    async fn on_transfer(&mut self, t: &Transfer, payload: &[u8]) -> Result<(), AmqpError> {
        let s = &mut self.session;
        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        s.incoming_remaining = s.incoming_remaining.saturating_sub(1);
        let widen = s.incoming_remaining < INCOMING_WINDOW / 2;
        let ours = self.remote.get(&t.handle).copied().ok_or_else(|| {
            AmqpError::Protocol(format!("transfer on unattached handle {}", t.handle))
        })?;
        let l = self
            .links
            .get_mut(&ours)
            .filter(|l| !l.sender)
            .ok_or_else(|| AmqpError::Protocol("transfer on a link where we send".into()))?;
        let (id, settled, mut bytes) =
            l.partial
                .take()
                .unwrap_or((t.delivery_id, t.settled, Vec::new()));
        if bytes.len() + payload.len() > MAX_MESSAGE {
            return Err(AmqpError::Protocol(format!(
                "a message larger than {MAX_MESSAGE} bytes"
            )));
        }
        bytes.extend_from_slice(payload);
        if t.aborted {
            return Ok(());
        }
        if t.more {
            l.partial = Some((id, settled, bytes));
            return Ok(());
        }
        l.credit = l.credit.saturating_sub(1);
        l.delivery_count = l.delivery_count.wrapping_add(1);
        let top_up = l.credit <= l.max_credit / 2;
        self.events.push_back(Event::Message {
            handle: ours,
            payload: bytes,
        });
        if !(settled || t.settled)
            && let Some(id) = id
        {
            self.send_performative(&p::disposition(id, None), &[])
                .await?;
        }
        if widen {
            self.session.incoming_remaining = INCOMING_WINDOW;
        }
        if top_up || widen {
            self.grant(ours).await?;
        }
        Ok(())
    }

    async fn on_detach(&mut self, remote: u32, error: Option<Value>) -> Result<(), AmqpError> {
        let Some(ours) = self.remote.remove(&remote) else {
            return Ok(());
        };
        let refused = self.links.get(&ours).is_some_and(|l| l.refused);
        if !refused {
            self.links.remove(&ours);
        }
        self.send_performative(&p::detach(ours, None), &[]).await?;
        self.events.push_back(Event::Detached {
            handle: ours,
            error,
        });
        Ok(())
    }

    /// Closes the connection, waiting briefly for the hub's close.
    pub async fn close(mut self) {
        if self.send_performative(&p::close(None), &[]).await.is_ok() {
            let deadline = Instant::now() + Duration::from_secs(2);
            while let Ok(true) = self.read_until(deadline).await {}
        }
        let _ = self.writer.shutdown().await;
    }
}

/// An AMQP error as text for logs and errors.
fn describe(error: Option<&Value>) -> String {
    match error.map(error_parts) {
        Some((condition, description)) => format!("{condition}: {description}"),
        None => "closed without an error".into(),
    }
}
