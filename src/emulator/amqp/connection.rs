//! One AMQP connection after TLS: protocol headers, SASL, open, then sessions and links until
//! close. The engine is one task with one owner of all state: handling an input (a frame, an
//! append to the event log, a heartbeat tick) only updates state and queues frames in `out`,
//! which is then written in one go. Any protocol violation ends the connection with a `close`
//! carrying the AMQP error and one log line naming the peer and the reason.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_util::sync::CancellationToken;

use super::cbs::Grants;
use super::eventhub::event_message;
use super::eventlog::ReaderGuard;
use super::links::{self, Handled, Node};
use super::sasl;
use super::shared::Shared;
use crate::amqp::codec::{DecodeError, Value};
use crate::amqp::frames::{
    AMQP_HEADER, FrameError, FrameReader, SASL_HEADER, TYPE_AMQP, frame, heartbeat,
};
use crate::amqp::message::encode_message;
use crate::amqp::performatives::{
    self as p, Attach, Flow, Performative, Transfer, decode_performative, encode_value,
};

/// Our maximum frame size (the peer's may lower what we send).
pub const MAX_FRAME: u32 = 64 * 1024;
const CHANNEL_MAX: u16 = 255;
const MAX_LINKS_PER_SESSION: usize = 64;
/// Largest message a peer may send in one delivery (C2D's limit is 64 KB; the rest is slack
/// for headers so the sink, not the framing, refuses oversize messages with IoT Hub's error).
const MAX_DELIVERY: usize = 1024 * 1024;
const INCOMING_WINDOW: u32 = 2048;
const LINK_CREDIT: u32 = 100;
/// We close connections silent for longer than this (we advertise it as our idle timeout).
const IDLE: Duration = Duration::from_secs(240);
const HANDSHAKE: Duration = Duration::from_secs(10);
/// Output queued per pump before it is written.
const PUMP_BYTES: usize = 1024 * 1024;
const MAX_PENDING_REPLIES: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("undecodable frame: {0}")]
    Decode(#[from] DecodeError),
    #[error("protocol violation: {0}")]
    Protocol(String),
    #[error("SASL failed: {0}")]
    Sasl(String),
    #[error("{0} timed out")]
    Timeout(&'static str),
}

impl ConnError {
    fn condition(&self) -> &'static str {
        match self {
            ConnError::Frame(_) => "amqp:connection:framing-error",
            ConnError::Decode(_) => "amqp:decode-error",
            ConnError::Timeout(_) => "amqp:resource-limit-exceeded",
            _ => "amqp:not-allowed",
        }
    }
}

struct Link {
    node: Node,
    /// Receiving links: credit we granted. Sending links: credit the peer granted.
    credit: u32,
    delivery_count: u32,
    settled_sends: bool,
    drain: bool,
    partial: Option<(u32, bool, Vec<u8>)>,
    replies: VecDeque<Vec<u8>>,
    /// Partition receivers: counted in the event log while attached.
    _reader: Option<ReaderGuard>,
}

struct Session {
    next_outgoing_id: u32,
    next_delivery_id: u32,
    remote_incoming: u32,
    next_incoming_id: u32,
    incoming_remaining: u32,
    links: HashMap<u32, Link>,
}

struct Conn<W> {
    shared: Arc<Shared>,
    io: WriteHalf<W>,
    out: Vec<u8>,
    max_out_frame: usize,
    sessions: HashMap<u16, Session>,
    /// Channels whose session the peer ended: pyamqp still sends detaches there after its
    /// `end`; they are dropped until a new `begin` maps the channel again.
    ended: HashSet<u16>,
    grants: Grants,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves one connection until it closes; logs why if it was not a clean close.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    io: S,
    peer: SocketAddr,
    shared: Arc<Shared>,
    stop: CancellationToken,
) {
    crate::inject::panic_at("emulator.amqp");
    let (r, w) = tokio::io::split(io);
    let mut reader = FrameReader::new(r, MAX_FRAME as usize);
    let mut conn = Conn {
        shared,
        io: w,
        out: Vec::new(),
        max_out_frame: 512,
        sessions: HashMap::new(),
        ended: HashSet::new(),
        grants: Grants::default(),
    };
    let result = match tokio::time::timeout(HANDSHAKE, conn.handshake(&mut reader)).await {
        Err(_) => Err(ConnError::Timeout("the AMQP handshake")),
        Ok(Ok(idle)) => conn.serve(&mut reader, idle, stop).await,
        Ok(Err(e)) => Err(e),
    };
    match result {
        Ok(()) => tracing::debug!(%peer, "AMQP connection closed"),
        Err(ConnError::Frame(e)) if e.is_peer_gone() => {
            tracing::debug!(%peer, reason = %e, "AMQP connection closed by the peer")
        }
        Err(e) => {
            tracing::warn!(%peer, error = %e, "AMQP connection closed: bad input from the peer");
            if matches!(e, ConnError::Frame(FrameError::BadHeader(_))) {
                // Answer a wrong protocol header with the one we speak, then close (part 2.2).
                conn.out.extend(SASL_HEADER);
            } else if conn.max_out_frame > 512 || !matches!(e, ConnError::Sasl(_)) {
                conn.queue(
                    0,
                    &p::close(Some(p::error(e.condition(), &e.to_string()))),
                    &[],
                );
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), conn.flush()).await;
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), conn.io.shutdown()).await;
}

impl<W: AsyncRead + AsyncWrite + Unpin> Conn<W> {
    fn queue(&mut self, channel: u16, performative: &Value, payload: &[u8]) {
        self.out.extend(frame(
            TYPE_AMQP,
            channel,
            &encode_value(performative),
            payload,
        ));
    }

    async fn flush(&mut self) -> Result<(), ConnError> {
        if !self.out.is_empty() {
            self.io.write_all(&self.out).await.map_err(FrameError::Io)?;
            self.io.flush().await.map_err(FrameError::Io)?;
            self.out.clear();
        }
        Ok(())
    }

    /// Protocol headers, SASL and open. Returns the heartbeat period the peer asked for.
    async fn handshake(
        &mut self,
        reader: &mut FrameReader<ReadHalf<W>>,
    ) -> Result<Option<Duration>, ConnError> {
        let mut header = reader.protocol_header().await?;
        if header == SASL_HEADER {
            self.out.extend(SASL_HEADER);
            self.out.extend(sasl::mechanisms_frame());
            self.flush().await?;
            let init = reader.next_frame().await?;
            match sasl::on_init(&init, &self.shared.policies, &self.shared.host, now_secs()) {
                Ok(auth) => {
                    if let Some((resource, expiry)) = auth.grant {
                        self.grants.add(resource, expiry);
                    }
                    self.out.extend(sasl::outcome_frame(0));
                    self.flush().await?;
                }
                Err(why) => {
                    self.out.extend(sasl::outcome_frame(1));
                    return Err(ConnError::Sasl(why));
                }
            }
            header = reader.protocol_header().await?;
        }
        if header != AMQP_HEADER {
            return Err(FrameError::BadHeader(header).into());
        }
        self.out.extend(AMQP_HEADER);
        self.flush().await?;
        let f = reader.next_frame().await?;
        let open = match decode_performative(&f.body)? {
            (Performative::Open(o), _) if f.kind == TYPE_AMQP => o,
            _ => return Err(ConnError::Protocol("the first frame must be open".into())),
        };
        self.max_out_frame = open
            .max_frame_size
            .unwrap_or(u32::MAX)
            .clamp(512, MAX_FRAME) as usize;
        let idle_ms = IDLE.as_millis() as u32;
        self.queue(
            0,
            &p::open("fleetsim-iothub", MAX_FRAME, CHANNEL_MAX, idle_ms),
            &[],
        );
        self.flush().await?;
        Ok(open
            .idle_timeout_ms
            .filter(|ms| *ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms / 2).max(100))))
    }

    async fn serve(
        &mut self,
        reader: &mut FrameReader<ReadHalf<W>>,
        heartbeat_every: Option<Duration>,
        stop: CancellationToken,
    ) -> Result<(), ConnError> {
        let mut appended = self.shared.events.subscribe();
        let mut log_alive = true;
        let period = heartbeat_every.unwrap_or(Duration::from_secs(3600));
        let mut beat = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    self.queue(0, &p::close(None), &[]);
                    return self.flush().await;
                }
                r = tokio::time::timeout(IDLE, reader.next_frame()) => {
                    let f = r.map_err(|_| ConnError::Timeout("waiting for a frame"))??;
                    if f.kind != TYPE_AMQP {
                        return Err(ConnError::Protocol("SASL frame after SASL".into()));
                    }
                    if !f.body.is_empty() && self.on_frame(f.channel, &f.body)? {
                        return self.flush().await;
                    }
                }
                changed = appended.changed(), if log_alive => log_alive = changed.is_ok(),
                _ = beat.tick(), if heartbeat_every.is_some() => self.out.extend(heartbeat()),
            }
            while self.pump() {
                self.flush().await?;
            }
            self.flush().await?;
        }
    }

    /// Handles one frame; true when the peer closed the connection.
    fn on_frame(&mut self, channel: u16, body: &[u8]) -> Result<bool, ConnError> {
        let (performative, at) = decode_performative(body)?;
        let payload = &body[at..];
        let session_scoped = !matches!(
            performative,
            Performative::Open(_) | Performative::Close(_) | Performative::Begin(_)
        );
        if session_scoped && self.ended.contains(&channel) {
            tracing::debug!(channel, "frame after the peer's end dropped");
            return Ok(false);
        }
        match performative {
            Performative::Open(_) => return Err(ConnError::Protocol("a second open".into())),
            Performative::Close(_) => {
                self.queue(0, &p::close(None), &[]);
                return Ok(true);
            }
            Performative::Begin(b) => self.begin(channel, &b)?,
            Performative::Attach(a) => self.attach(channel, a)?,
            Performative::Flow(f) => self.flow(channel, &f)?,
            Performative::Transfer(t) => self.transfer(channel, &t, payload)?,
            // Dispositions from peers only settle what this server sent.
            Performative::Disposition(_) => {}
            Performative::Detach(d) => {
                if self.session(channel)?.links.remove(&d.handle).is_some() {
                    self.queue(channel, &p::detach(d.handle, None), &[]);
                }
            }
            Performative::End(_) => {
                if self.sessions.remove(&channel).is_none() {
                    return Err(ConnError::Protocol(format!(
                        "end on channel {channel} without a session"
                    )));
                }
                self.ended.insert(channel);
                self.queue(channel, &p::end(None), &[]);
            }
        }
        Ok(false)
    }

    fn session(&mut self, channel: u16) -> Result<&mut Session, ConnError> {
        self.sessions.get_mut(&channel).ok_or_else(|| {
            ConnError::Protocol(format!("frame on channel {channel} without a session"))
        })
    }

    fn begin(&mut self, channel: u16, b: &p::Begin) -> Result<(), ConnError> {
        if self.sessions.contains_key(&channel)
            || channel > CHANNEL_MAX
            || b.remote_channel.is_some()
        {
            return Err(ConnError::Protocol(format!(
                "begin on channel {channel} not allowed"
            )));
        }
        self.ended.remove(&channel);
        self.sessions.insert(
            channel,
            Session {
                next_outgoing_id: 0,
                next_delivery_id: 0,
                remote_incoming: b.incoming_window,
                next_incoming_id: b.next_outgoing_id,
                incoming_remaining: INCOMING_WINDOW,
                links: HashMap::new(),
            },
        );
        self.queue(channel, &p::begin(channel, 0, INCOMING_WINDOW), &[]);
        Ok(())
    }

    fn attach(&mut self, channel: u16, a: Attach) -> Result<(), ConnError> {
        let shared = self.shared.clone();
        let now = now_secs();
        let decision = links::classify(&shared, &a, &self.grants, &shared.host, now);
        let session = self.session(channel)?;
        if session.links.contains_key(&a.handle) || session.links.len() >= MAX_LINKS_PER_SESSION {
            return Err(ConnError::Protocol(format!(
                "attach with handle {} not allowed",
                a.handle
            )));
        }
        let node = match decision {
            Ok(node) => node,
            Err(refusal) => {
                tracing::info!(link = %a.name, condition = refusal.condition, reason = %refusal.description, "AMQP link refused");
                self.queue(channel, &p::attach_reply(&a, false, 0), &[]);
                let error = p::error(refusal.condition, &refusal.description);
                self.queue(channel, &p::detach(a.handle, Some(error)), &[]);
                return Ok(());
            }
        };
        let receiving = !node.we_send();
        let reader = match &node {
            Node::Partition {
                consumer_group,
                partition,
                ..
            } => Some(shared.events.attach_reader(consumer_group, *partition)),
            _ => None,
        };
        session.links.insert(
            a.handle,
            Link {
                node,
                credit: if receiving { LINK_CREDIT } else { 0 },
                delivery_count: if receiving {
                    a.initial_delivery_count.unwrap_or(0)
                } else {
                    0
                },
                settled_sends: a.snd_settle_mode == Some(1),
                drain: false,
                partial: None,
                replies: VecDeque::new(),
                _reader: reader,
            },
        );
        self.queue(channel, &p::attach_reply(&a, true, 0), &[]);
        if receiving {
            self.link_flow(channel, a.handle)?;
        }
        Ok(())
    }

    /// Sends our view of the session and of link `handle`.
    fn link_flow(&mut self, channel: u16, handle: u32) -> Result<(), ConnError> {
        let s = self.session(channel)?;
        let Some(l) = s.links.get(&handle) else {
            return Ok(());
        };
        let f = p::LinkFlow {
            next_incoming_id: s.next_incoming_id,
            incoming_window: s.incoming_remaining,
            next_outgoing_id: s.next_outgoing_id,
            handle: Some(handle),
            delivery_count: l.delivery_count,
            link_credit: l.credit,
            drain: l.drain,
        };
        self.queue(channel, &p::flow(&f), &[]);
        Ok(())
    }

    fn flow(&mut self, channel: u16, f: &Flow) -> Result<(), ConnError> {
        let s = self.session(channel)?;
        s.remote_incoming = match f.next_incoming_id {
            Some(next) => next
                .wrapping_add(f.incoming_window)
                .wrapping_sub(s.next_outgoing_id),
            None => f.incoming_window,
        };
        let Some(handle) = f.handle else {
            return Ok(());
        };
        let Some(l) = s.links.get_mut(&handle) else {
            return Ok(());
        };
        if l.node.we_send() {
            let their_count = f.delivery_count.unwrap_or(l.delivery_count);
            l.credit = their_count
                .wrapping_add(f.link_credit.unwrap_or(0))
                .wrapping_sub(l.delivery_count);
            l.drain = f.drain;
        }
        if f.echo {
            self.link_flow(channel, handle)?;
        }
        Ok(())
    }

    fn transfer(&mut self, channel: u16, t: &Transfer, payload: &[u8]) -> Result<(), ConnError> {
        let s = self.session(channel)?;
        s.next_incoming_id = s.next_incoming_id.wrapping_add(1);
        s.incoming_remaining = s.incoming_remaining.saturating_sub(1);
        let window_low = s.incoming_remaining < INCOMING_WINDOW / 2;
        if window_low {
            s.incoming_remaining = INCOMING_WINDOW;
        }
        let l = s.links.get_mut(&t.handle).ok_or_else(|| {
            ConnError::Protocol(format!("transfer on unattached handle {}", t.handle))
        })?;
        if l.node.we_send() {
            return Err(ConnError::Protocol(
                "transfer on a link where the server sends".into(),
            ));
        }
        let (id, settled, mut bytes) = match l.partial.take() {
            Some(partial) => partial,
            None => {
                let id = t
                    .delivery_id
                    .ok_or_else(|| ConnError::Protocol("transfer without delivery-id".into()))?;
                (id, t.settled, Vec::new())
            }
        };
        if bytes.len() + payload.len() > MAX_DELIVERY {
            let e = p::error(
                "amqp:link:message-size-exceeded",
                &format!("deliveries are limited to {MAX_DELIVERY} bytes"),
            );
            s.links.remove(&t.handle);
            self.queue(channel, &p::detach(t.handle, Some(e)), &[]);
            return Ok(());
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
        let node = l.node.clone();
        let top_up = l.credit < LINK_CREDIT / 2;
        if top_up {
            l.credit = LINK_CREDIT;
        }
        self.deliver(channel, &node, id, settled || t.settled, &bytes)?;
        if top_up || window_low {
            self.link_flow(channel, t.handle)?;
        }
        Ok(())
    }

    /// One complete delivery: hand it to its node, settle it, queue any response.
    fn deliver(
        &mut self,
        channel: u16,
        node: &Node,
        id: u32,
        settled: bool,
        bytes: &[u8],
    ) -> Result<(), ConnError> {
        let shared = self.shared.clone();
        let handled = links::on_delivery(
            &shared,
            node,
            bytes,
            &mut self.grants,
            &shared.host,
            now_secs(),
        );
        let (rejected, response) = match handled {
            Handled::Settle(r) => (r, None),
            Handled::Respond(node, m) => (None, Some((node, m))),
        };
        if !settled {
            self.queue(channel, &p::disposition(id, rejected), &[]);
        }
        if let Some((node, m)) = response {
            let bytes = encode_message(&m);
            let s = self.session(channel)?;
            match s.links.values_mut().find(|l| l.node == node) {
                Some(l) if l.replies.len() < MAX_PENDING_REPLIES => l.replies.push_back(bytes),
                Some(_) => return Err(ConnError::Protocol("too many unanswered requests".into())),
                None => tracing::debug!("request without a response link; answer dropped"),
            }
        }
        Ok(())
    }

    /// Sends what sending links have credit for; true if it stopped at the output cap with more
    /// to send.
    fn pump(&mut self) -> bool {
        let shared = self.shared.clone();
        let max_chunk = self.max_out_frame.saturating_sub(128).max(256);
        let mut flows = Vec::new();
        for (&channel, s) in &mut self.sessions {
            for (&handle, l) in &mut s.links {
                if !l.node.we_send() {
                    continue;
                }
                let mut exhausted = false;
                while l.credit > 0 && self.out.len() < PUMP_BYTES {
                    let message = match &mut l.node {
                        Node::Partition {
                            partition,
                            next_sequence,
                            ..
                        } => {
                            let Some(e) = shared.events.read(*partition, *next_sequence, 1).pop()
                            else {
                                exhausted = true;
                                break;
                            };
                            *next_sequence = e.sequence_number + 1;
                            encode_message(&event_message(&e))
                        }
                        _ => match l.replies.pop_front() {
                            Some(m) => m,
                            None => {
                                exhausted = true;
                                break;
                            }
                        },
                    };
                    let frames = message.len().div_ceil(max_chunk).max(1) as u32;
                    if s.remote_incoming < frames {
                        break;
                    }
                    let id = s.next_delivery_id;
                    s.next_delivery_id = id.wrapping_add(1);
                    let mut chunks = message.chunks(max_chunk).peekable();
                    while let Some(chunk) = chunks.next() {
                        let more = chunks.peek().is_some();
                        let t = encode_value(&p::transfer(handle, id, l.settled_sends, more));
                        self.out.extend(frame(TYPE_AMQP, channel, &t, chunk));
                    }
                    s.next_outgoing_id = s.next_outgoing_id.wrapping_add(frames);
                    s.remote_incoming -= frames;
                    l.credit -= 1;
                    l.delivery_count = l.delivery_count.wrapping_add(1);
                }
                if l.drain && l.credit > 0 && exhausted {
                    l.delivery_count = l.delivery_count.wrapping_add(l.credit);
                    l.credit = 0;
                    flows.push((channel, handle));
                }
            }
        }
        for (channel, handle) in flows {
            let _ = self.link_flow(channel, handle);
        }
        self.out.len() >= PUMP_BYTES
    }
}
