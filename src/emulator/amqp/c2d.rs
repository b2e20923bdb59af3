//! Cloud-to-device messages as the hub holds them: [`C2dMessage`] (what a service sent to
//! `/messages/devicebound`), the [`C2dSink`] the AMQP endpoint hands them to, and [`C2dQueues`],
//! the in-memory per-device queues with IoT Hub's limits (reference §3: 50 pending per device,
//! 64 KB per message; TTL from the message's expiry or the hub default of one hour), the C2D
//! throttle (reference §5.1, per minute: a minute's worth of burst, as the hub's other
//! per-minute throttles) and the feedback records `iothub-ack` asks for.
//!
//! The hub owns the queues; the AMQP endpoint fills them and the hub's MQTT endpoint delivers
//! from them. A message out for delivery is *in flight* to one connection (its owner), so a
//! connection that goes away puts back only what it held ([`C2dQueues::release`]) and never a
//! message a newer connection of the same device holds.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::amqp::codec::Value;
use crate::amqp::message::Message;
use crate::emulator::gcra::{Admission, Bucket};
use crate::sync::lock;

/// IoT Hub's C2D limits (reference §3).
pub const MAX_PENDING: usize = 50;
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The hub's default time to live for C2D messages (`defaultTtlAsIso8601: PT1H`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);
/// How often a message is delivered before the hub gives up on it (IoT Hub's
/// `maxDeliveryCount` default): a message put back this many times is dead-lettered.
pub const MAX_DELIVERIES: u32 = 10;

/// Which feedback the sender asked for (`iothub-ack`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Ack {
    #[default]
    None,
    Positive,
    Negative,
    Full,
}

impl Ack {
    fn parse(s: &str) -> Option<Ack> {
        Some(match s {
            "none" => Ack::None,
            "positive" => Ack::Positive,
            "negative" => Ack::Negative,
            "full" => Ack::Full,
            _ => return None,
        })
    }

    fn wants(self, outcome: FeedbackStatus) -> bool {
        match self {
            Ack::None => false,
            Ack::Full => true,
            Ack::Positive => outcome == FeedbackStatus::Success,
            Ack::Negative => outcome != FeedbackStatus::Success,
        }
    }
}

/// One C2D message as the service sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct C2dMessage {
    pub device_id: String,
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// Absolute expiry, milliseconds since the Unix epoch.
    pub expiry_ms: Option<i64>,
    pub ack: Ack,
    /// Application properties; `None` is a property without a value (`key` in a property bag).
    pub properties: Vec<(String, Option<String>)>,
    pub body: Bytes,
}

impl C2dMessage {
    /// Size as IoT Hub counts it against the 64 KB limit: body and properties.
    pub fn size(&self) -> usize {
        let props: usize = self
            .properties
            .iter()
            .map(|(k, v)| k.len() + v.as_ref().map_or(0, String::len))
            .sum();
        self.body.len() + props
    }

    /// Reads a message sent to `/messages/devicebound`. `to` must name the device.
    pub fn from_amqp(m: &Message) -> Result<C2dMessage, C2dRefusal> {
        let to = m.properties.to.as_deref().unwrap_or_default();
        let device_id = to
            .strip_prefix("/devices/")
            .and_then(|rest| rest.strip_suffix("/messages/devicebound"))
            .filter(|id| !id.is_empty() && !id.contains('/'))
            .ok_or_else(|| {
                C2dRefusal::Invalid(format!(
                    "'to' must be /devices/{{id}}/messages/devicebound, got '{to}'"
                ))
            })?;
        let device_id = percent_encoding::percent_decode_str(device_id)
            .decode_utf8()
            .map_err(|_| C2dRefusal::Invalid("device id is not UTF-8".into()))?
            .into_owned();
        let mut ack = Ack::None;
        let mut properties = Vec::new();
        for (k, v) in &m.application_properties {
            if k == "iothub-ack" {
                ack = Ack::parse(&v.to_string()).ok_or_else(|| {
                    C2dRefusal::Invalid(format!(
                        "iothub-ack must be none, positive, negative or full, got '{v}'"
                    ))
                })?;
                continue;
            }
            properties.push((k.clone(), (!v.is_null()).then(|| v.to_string())));
        }
        let p = &m.properties;
        let text = |v: &Option<Value>| v.as_ref().map(Value::to_string);
        Ok(C2dMessage {
            device_id,
            message_id: text(&p.message_id),
            correlation_id: text(&p.correlation_id),
            user_id: p
                .user_id
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned()),
            content_type: p.content_type.clone(),
            content_encoding: p.content_encoding.clone(),
            expiry_ms: p.absolute_expiry_time,
            ack,
            properties,
            body: Bytes::from(m.body_bytes()),
        })
    }
}

/// Why the hub refused a C2D message; each maps to the AMQP error IoT Hub rejects it with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum C2dRefusal {
    #[error("device '{0}' is not registered")]
    DeviceNotFound(String),
    #[error("device '{0}' already has {MAX_PENDING} messages pending")]
    QueueFull(String),
    #[error("message of {0} bytes is over the {MAX_MESSAGE_BYTES}-byte limit")]
    TooLarge(usize),
    #[error("cloud-to-device sends are throttled")]
    Throttled,
    #[error("{0}")]
    Invalid(String),
}

impl C2dRefusal {
    /// The AMQP error condition, as Microsoft's IoT Hub-compatible server (Edge hub's
    /// `AmqpErrorMapper`) and the service SDKs' error translation use them.
    pub fn condition(&self) -> &'static str {
        match self {
            C2dRefusal::DeviceNotFound(_) => "amqp:not-found",
            C2dRefusal::QueueFull(_) => "amqp:resource-limit-exceeded",
            C2dRefusal::TooLarge(_) => "amqp:link:message-size-exceeded",
            C2dRefusal::Throttled => "com.microsoft:device-container-throttled",
            C2dRefusal::Invalid(_) => "com.microsoft:argument-error",
        }
    }

    /// The description, led by IoT Hub's error code name and number (reference §4.3).
    pub fn description(&self) -> String {
        let code = match self {
            C2dRefusal::DeviceNotFound(_) => "DeviceNotFound (404001)",
            C2dRefusal::QueueFull(_) => "DeviceMaximumQueueDepthExceeded (403004)",
            C2dRefusal::TooLarge(_) => "MessageTooLarge (413001)",
            C2dRefusal::Throttled => "ThrottlingException (429001)",
            C2dRefusal::Invalid(_) => "ArgumentInvalid (400004)",
        };
        format!("{code}: {self}")
    }
}

/// Where the AMQP endpoint puts accepted C2D messages.
pub trait C2dSink: Send + Sync {
    fn enqueue(&self, msg: C2dMessage) -> Result<(), C2dRefusal>;
}

/// What happened to a message, for `iothub-ack` feedback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedbackStatus {
    Success,
    Expired,
    /// Put back unacknowledged `max_deliveries` times (IoT Hub's `DeliveryCountExceeded`).
    DeliveryCountExceeded,
    Rejected,
    Purged,
}

/// One feedback record, as the hub reports it on `/messages/servicebound/feedback`.
#[derive(Debug, Clone, PartialEq)]
pub struct Feedback {
    pub device_id: String,
    pub original_message_id: Option<String>,
    pub status: FeedbackStatus,
    pub enqueued_ms: i64,
}

struct Queued {
    msg: C2dMessage,
    /// Names the message among the hub's (its lock token, in IoT Hub's terms).
    token: u64,
    enqueued_ms: i64,
    expires_ms: i64,
    /// The connection the message is out to, if it is out for delivery.
    in_flight: Option<u64>,
    /// How many times it went out (first delivery included).
    deliveries: u32,
}

/// The owner [`C2dQueues::next_for_delivery`] takes messages for (no connection in particular).
const ANY_OWNER: u64 = 0;

/// A message handed out for delivery.
#[derive(Debug, Clone, PartialEq)]
pub struct OutForDelivery {
    pub msg: C2dMessage,
    /// How many times it has gone out, this time included (more than 1: a redelivery).
    pub deliveries: u32,
    /// What [`C2dQueues::settle_token`] takes to end this delivery.
    pub token: u64,
}

/// What the queues did so far, for the hub's statistics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct C2dStats {
    /// Messages accepted into a queue.
    pub enqueued: u64,
    /// Messages the device acknowledged (PUBACK).
    pub completed: u64,
    /// Messages dropped at their expiry, never delivered or never acknowledged.
    pub expired: u64,
    /// Messages dropped by a CleanSession 1 connect.
    pub purged: u64,
    /// Sends refused: the device's queue was full.
    pub queue_full: u64,
    /// Sends refused: over the size limit.
    pub too_large: u64,
    /// Sends refused by the C2D throttle.
    pub throttled: u64,
    /// Deliveries started (first deliveries and redeliveries).
    pub deliveries: u64,
    /// Messages dropped after `max_deliveries` deliveries without an acknowledgement.
    pub dead_lettered: u64,
}

#[derive(Default)]
struct Counters {
    enqueued: AtomicU64,
    completed: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
    queue_full: AtomicU64,
    too_large: AtomicU64,
    throttled: AtomicU64,
    deliveries: AtomicU64,
    dead_lettered: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// How [`C2dQueues`] behaves.
pub struct C2dLimits {
    pub max_pending: usize,
    pub max_bytes: usize,
    pub default_ttl: Duration,
    /// Deliveries after which a message put back is dead-lettered.
    pub max_deliveries: u32,
    /// C2D sends per minute for the whole hub (reference §5.1), `None`: unlimited.
    pub sends_per_minute: Option<f64>,
}

impl Default for C2dLimits {
    fn default() -> Self {
        Self {
            max_pending: MAX_PENDING,
            max_bytes: MAX_MESSAGE_BYTES,
            default_ttl: DEFAULT_TTL,
            max_deliveries: MAX_DELIVERIES,
            sends_per_minute: None,
        }
    }
}

/// Something to call with a device id.
type DeviceHook = Box<dyn Fn(&str) + Send + Sync>;

/// Per-device C2D queues in memory. `device_exists` asks the hub's registry; `ready` (see
/// [`C2dQueues::on_ready`]) tells the hub a device has a message it could deliver.
pub struct C2dQueues {
    limits: C2dLimits,
    device_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
    ready: std::sync::OnceLock<DeviceHook>,
    queues: Mutex<HashMap<String, VecDeque<Queued>>>,
    feedback: Mutex<VecDeque<Feedback>>,
    throttle: Option<Bucket>,
    counters: Counters,
    next_token: AtomicU64,
}

/// Feedback records kept until someone drains them (oldest dropped past this).
const MAX_FEEDBACK: usize = 10_000;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl C2dQueues {
    pub fn new(
        limits: C2dLimits,
        device_exists: impl Fn(&str) -> bool + Send + Sync + 'static,
    ) -> Self {
        // Published per minute and applied in minute ranges: a minute's worth of burst.
        let throttle = limits
            .sends_per_minute
            .map(|m| Bucket::with_burst(m / 60.0, m, Duration::ZERO));
        Self {
            limits,
            device_exists: Box::new(device_exists),
            ready: std::sync::OnceLock::new(),
            queues: Mutex::new(HashMap::new()),
            feedback: Mutex::new(VecDeque::new()),
            throttle,
            counters: Counters::default(),
            next_token: AtomicU64::new(1),
        }
    }

    /// Calls `hook` with a device's id whenever that device has a message it could be given
    /// (a new one queued, one put back). Set once; later calls are ignored.
    pub fn on_ready(&self, hook: impl Fn(&str) + Send + Sync + 'static) {
        let _ = self.ready.set(Box::new(hook));
    }

    fn notify(&self, device_id: &str) {
        if let Some(hook) = self.ready.get() {
            hook(device_id);
        }
    }

    /// What the queues did so far.
    pub fn stats(&self) -> C2dStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        C2dStats {
            enqueued: get(&c.enqueued),
            completed: get(&c.completed),
            expired: get(&c.expired),
            purged: get(&c.purged),
            queue_full: get(&c.queue_full),
            too_large: get(&c.too_large),
            throttled: get(&c.throttled),
            deliveries: get(&c.deliveries),
            dead_lettered: get(&c.dead_lettered),
        }
    }

    fn record(&self, q: &Queued, status: FeedbackStatus) {
        match status {
            FeedbackStatus::Success => bump(&self.counters.completed),
            FeedbackStatus::Expired => bump(&self.counters.expired),
            FeedbackStatus::Purged => bump(&self.counters.purged),
            FeedbackStatus::DeliveryCountExceeded => bump(&self.counters.dead_lettered),
            FeedbackStatus::Rejected => {}
        }
        if q.msg.ack.wants(status) {
            let mut f = lock(&self.feedback);
            if f.len() >= MAX_FEEDBACK {
                f.pop_front();
            }
            f.push_back(Feedback {
                device_id: q.msg.device_id.clone(),
                original_message_id: q.msg.message_id.clone(),
                status,
                enqueued_ms: q.enqueued_ms,
            });
        }
    }

    /// Drops expired messages of one queue, recording their feedback.
    fn expire(&self, queue: &mut VecDeque<Queued>, now: i64) {
        queue.retain(|q| {
            let live = q.expires_ms > now;
            if !live {
                self.record(q, FeedbackStatus::Expired);
            }
            live
        });
    }

    /// Messages of `device_id` not yet completed (delivered or not).
    pub fn pending(&self, device_id: &str) -> usize {
        let mut queues = lock(&self.queues);
        match queues.get_mut(device_id) {
            Some(q) => {
                self.expire(q, now_ms());
                q.len()
            }
            None => 0,
        }
    }

    /// The oldest live message of `device_id` not already out for delivery, marked in flight.
    pub fn next_for_delivery(&self, device_id: &str) -> Option<C2dMessage> {
        self.next_for(device_id, ANY_OWNER).map(|out| out.msg)
    }

    /// Like [`C2dQueues::next_for_delivery`], in flight to connection `owner` (never 0).
    pub fn next_for(&self, device_id: &str, owner: u64) -> Option<OutForDelivery> {
        let mut queues = lock(&self.queues);
        let q = queues.get_mut(device_id)?;
        self.expire(q, now_ms());
        let next = q.iter_mut().find(|m| m.in_flight.is_none())?;
        next.in_flight = Some(owner);
        next.deliveries += 1;
        bump(&self.counters.deliveries);
        Some(OutForDelivery {
            msg: next.msg.clone(),
            deliveries: next.deliveries,
            token: next.token,
        })
    }

    /// Ends the delivery of `message_id`: `Success` completes it, `Rejected` dead-letters it;
    /// either way it leaves the queue. False if it was not in flight.
    pub fn settle(
        &self,
        device_id: &str,
        message_id: Option<&str>,
        status: FeedbackStatus,
    ) -> bool {
        let mut queues = lock(&self.queues);
        let Some(q) = queues.get_mut(device_id) else {
            return false;
        };
        let Some(i) = q
            .iter()
            .position(|m| m.in_flight.is_some() && m.msg.message_id.as_deref() == message_id)
        else {
            return false;
        };
        if let Some(done) = q.remove(i) {
            self.record(&done, status);
        }
        true
    }

    /// Ends the delivery of the message `token` names with `status`, whichever connection it is
    /// out to now (the device has it: a late acknowledgement counts); the message, or `None` if
    /// it is no longer queued (it expired meanwhile, or a CleanSession 1 connect purged it).
    pub fn settle_token(
        &self,
        device_id: &str,
        token: u64,
        status: FeedbackStatus,
    ) -> Option<C2dMessage> {
        let mut queues = lock(&self.queues);
        let q = queues.get_mut(device_id)?;
        let i = q.iter().position(|m| m.token == token)?;
        let done = q.remove(i)?;
        if q.is_empty() {
            queues.remove(device_id);
        }
        drop(queues);
        self.record(&done, status);
        Some(done.msg)
    }

    /// Puts every in-flight message of `device_id` back for redelivery (the device went away).
    pub fn abandon_in_flight(&self, device_id: &str) {
        self.put_back(device_id, |_| true);
    }

    /// Puts back for redelivery what connection `owner` of `device_id` held (it went away
    /// before acknowledging).
    pub fn release(&self, device_id: &str, owner: u64) {
        self.put_back(device_id, |o| o == owner);
    }

    /// Puts back the in-flight messages `owned` picks; one that has gone out `max_deliveries`
    /// times is dead-lettered instead.
    fn put_back(&self, device_id: &str, owned: impl Fn(u64) -> bool) {
        let mut released = false;
        if let Some(q) = lock(&self.queues).get_mut(device_id) {
            let max = self.limits.max_deliveries;
            q.retain_mut(|m| {
                if !m.in_flight.is_some_and(&owned) {
                    return true;
                }
                if m.deliveries >= max {
                    self.record(m, FeedbackStatus::DeliveryCountExceeded);
                    return false;
                }
                m.in_flight = None;
                released = true;
                true
            });
        }
        if released {
            self.notify(device_id);
        }
    }

    /// Drops every message of `device_id` (a CleanSession 1 connect).
    pub fn purge(&self, device_id: &str) {
        if let Some(q) = lock(&self.queues).remove(device_id) {
            q.iter()
                .for_each(|m| self.record(m, FeedbackStatus::Purged));
        }
    }

    /// Takes the feedback records gathered so far, after dropping what expired meanwhile (so an
    /// expiry is reported even for a device that never comes back).
    pub fn drain_feedback(&self) -> Vec<Feedback> {
        let now = now_ms();
        let mut queues = lock(&self.queues);
        for q in queues.values_mut() {
            self.expire(q, now);
        }
        queues.retain(|_, q| !q.is_empty());
        drop(queues);
        lock(&self.feedback).drain(..).collect()
    }
}

impl C2dSink for C2dQueues {
    fn enqueue(&self, msg: C2dMessage) -> Result<(), C2dRefusal> {
        if msg.size() > self.limits.max_bytes {
            bump(&self.counters.too_large);
            return Err(C2dRefusal::TooLarge(msg.size()));
        }
        if !(self.device_exists)(&msg.device_id) {
            return Err(C2dRefusal::DeviceNotFound(msg.device_id));
        }
        let now = now_ms();
        let mut queues = lock(&self.queues);
        let queue = queues.entry(msg.device_id.clone()).or_default();
        self.expire(queue, now);
        if queue.len() >= self.limits.max_pending {
            bump(&self.counters.queue_full);
            return Err(C2dRefusal::QueueFull(msg.device_id));
        }
        if let Some(bucket) = &self.throttle
            && matches!(
                bucket.admit(tokio::time::Instant::now()),
                Admission::Refuse(_)
            )
        {
            bump(&self.counters.throttled);
            return Err(C2dRefusal::Throttled);
        }
        let ttl = self.limits.default_ttl.as_millis() as i64;
        let expires_ms = msg.expiry_ms.unwrap_or(now.saturating_add(ttl));
        let device_id = msg.device_id.clone();
        queue.push_back(Queued {
            msg,
            token: self.next_token.fetch_add(1, Ordering::Relaxed),
            enqueued_ms: now,
            expires_ms,
            in_flight: None,
            deliveries: 0,
        });
        drop(queues);
        bump(&self.counters.enqueued);
        self.notify(&device_id);
        Ok(())
    }
}

#[cfg(test)]
#[path = "c2d_tests.rs"]
mod tests;
