//! Cloud-to-device messages as the hub holds them: [`C2dMessage`] (what a service sent to
//! `/messages/devicebound`), the [`C2dSink`] the AMQP endpoint hands them to, and [`C2dQueues`],
//! the in-memory per-device queues with IoT Hub's limits (reference §3: 50 pending per device,
//! 64 KB per message; TTL from the message's expiry or the hub default of one hour) and the
//! feedback records `iothub-ack` asks for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::codec::Value;
use super::message::Message;
use crate::emulator::gcra::{Admission, Bucket};
use crate::sync::lock;

/// IoT Hub's C2D limits (reference §3).
pub const MAX_PENDING: usize = 50;
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;
/// The hub's default time to live for C2D messages (`defaultTtlAsIso8601: PT1H`).
pub const DEFAULT_TTL: Duration = Duration::from_secs(3600);

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
    enqueued_ms: i64,
    expires_ms: i64,
    in_flight: bool,
}

/// How [`C2dQueues`] behaves.
pub struct C2dLimits {
    pub max_pending: usize,
    pub max_bytes: usize,
    pub default_ttl: Duration,
    /// C2D sends per second for the whole hub (reference §5.1), `None`: unlimited.
    pub sends_per_second: Option<f64>,
}

impl Default for C2dLimits {
    fn default() -> Self {
        Self {
            max_pending: MAX_PENDING,
            max_bytes: MAX_MESSAGE_BYTES,
            default_ttl: DEFAULT_TTL,
            sends_per_second: None,
        }
    }
}

/// Per-device C2D queues in memory. `device_exists` asks the hub's registry.
pub struct C2dQueues {
    limits: C2dLimits,
    device_exists: Box<dyn Fn(&str) -> bool + Send + Sync>,
    queues: Mutex<HashMap<String, VecDeque<Queued>>>,
    feedback: Mutex<VecDeque<Feedback>>,
    throttle: Option<Bucket>,
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
        let throttle = limits
            .sends_per_second
            .map(|r| Bucket::new(r, Duration::ZERO));
        Self {
            limits,
            device_exists: Box::new(device_exists),
            queues: Mutex::new(HashMap::new()),
            feedback: Mutex::new(VecDeque::new()),
            throttle,
        }
    }

    fn record(&self, q: &Queued, status: FeedbackStatus) {
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
        let mut queues = lock(&self.queues);
        let q = queues.get_mut(device_id)?;
        self.expire(q, now_ms());
        let next = q.iter_mut().find(|m| !m.in_flight)?;
        next.in_flight = true;
        Some(next.msg.clone())
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
            .position(|m| m.in_flight && m.msg.message_id.as_deref() == message_id)
        else {
            return false;
        };
        if let Some(done) = q.remove(i) {
            self.record(&done, status);
        }
        true
    }

    /// Puts every in-flight message of `device_id` back for redelivery (the device went away).
    pub fn abandon_in_flight(&self, device_id: &str) {
        if let Some(q) = lock(&self.queues).get_mut(device_id) {
            q.iter_mut().for_each(|m| m.in_flight = false);
        }
    }

    /// Drops every message of `device_id` (a CleanSession 1 connect).
    pub fn purge(&self, device_id: &str) {
        if let Some(q) = lock(&self.queues).remove(device_id) {
            q.iter()
                .for_each(|m| self.record(m, FeedbackStatus::Purged));
        }
    }

    /// Takes the feedback records gathered so far.
    pub fn drain_feedback(&self) -> Vec<Feedback> {
        lock(&self.feedback).drain(..).collect()
    }
}

impl C2dSink for C2dQueues {
    fn enqueue(&self, msg: C2dMessage) -> Result<(), C2dRefusal> {
        if msg.size() > self.limits.max_bytes {
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
            return Err(C2dRefusal::QueueFull(msg.device_id));
        }
        if let Some(bucket) = &self.throttle
            && matches!(
                bucket.admit(tokio::time::Instant::now()),
                Admission::Refuse(_)
            )
        {
            return Err(C2dRefusal::Throttled);
        }
        let ttl = self.limits.default_ttl.as_millis() as i64;
        let expires_ms = msg.expiry_ms.unwrap_or(now.saturating_add(ttl));
        queue.push_back(Queued {
            msg,
            enqueued_ms: now,
            expires_ms,
            in_flight: false,
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(device: &str, id: &str, ack: Ack) -> C2dMessage {
        C2dMessage {
            device_id: device.into(),
            message_id: Some(id.into()),
            correlation_id: None,
            user_id: None,
            content_type: None,
            content_encoding: None,
            expiry_ms: None,
            ack,
            properties: vec![("k".into(), Some("v".into())), ("flag".into(), None)],
            body: Bytes::from_static(b"body"),
        }
    }

    fn queues() -> C2dQueues {
        C2dQueues::new(C2dLimits::default(), |id| id.starts_with("dev"))
    }

    #[test]
    fn limits_are_the_hubs() {
        let q = queues();
        for i in 0..MAX_PENDING {
            q.enqueue(msg("dev1", &i.to_string(), Ack::None)).unwrap();
        }
        assert_eq!(q.pending("dev1"), 50);
        assert_eq!(
            q.enqueue(msg("dev1", "51", Ack::None)),
            Err(C2dRefusal::QueueFull("dev1".into()))
        );
        assert!(q.enqueue(msg("dev2", "other device", Ack::None)).is_ok());
        assert_eq!(
            q.enqueue(msg("nobody", "x", Ack::None)),
            Err(C2dRefusal::DeviceNotFound("nobody".into()))
        );
        let mut big = msg("dev2", "big", Ack::None);
        big.body = Bytes::from(vec![0; MAX_MESSAGE_BYTES]);
        assert!(matches!(q.enqueue(big), Err(C2dRefusal::TooLarge(_))));
    }

    #[test]
    fn expiry_delivery_and_feedback() {
        let q = queues();
        let mut old = msg("dev1", "old", Ack::Negative);
        old.expiry_ms = Some(now_ms() - 1);
        q.enqueue(old).unwrap();
        q.enqueue(msg("dev1", "a", Ack::Positive)).unwrap();
        q.enqueue(msg("dev1", "b", Ack::Full)).unwrap();
        assert_eq!(q.pending("dev1"), 2, "the expired one is gone");

        let a = q.next_for_delivery("dev1").unwrap();
        assert_eq!(a.message_id.as_deref(), Some("a"));
        assert_eq!(a.properties[1], ("flag".into(), None));
        let b = q.next_for_delivery("dev1").unwrap();
        assert!(q.next_for_delivery("dev1").is_none(), "both in flight");
        q.abandon_in_flight("dev1");
        assert_eq!(
            q.next_for_delivery("dev1").unwrap().message_id,
            a.message_id
        );
        q.next_for_delivery("dev1");
        assert!(q.settle("dev1", Some("a"), FeedbackStatus::Success));
        assert!(q.settle("dev1", b.message_id.as_deref(), FeedbackStatus::Rejected));
        assert!(!q.settle("dev1", Some("a"), FeedbackStatus::Success));
        assert_eq!(q.pending("dev1"), 0);

        let statuses: Vec<_> = q
            .drain_feedback()
            .into_iter()
            .map(|f| (f.original_message_id.unwrap(), f.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("old".to_string(), FeedbackStatus::Expired),
                ("a".to_string(), FeedbackStatus::Success),
                ("b".to_string(), FeedbackStatus::Rejected),
            ]
        );
    }

    #[test]
    fn purge_and_throttle() {
        let q = C2dQueues::new(
            C2dLimits {
                sends_per_second: Some(1.0),
                ..Default::default()
            },
            |_| true,
        );
        q.enqueue(msg("d", "1", Ack::Full)).unwrap();
        assert_eq!(
            q.enqueue(msg("d", "2", Ack::None)),
            Err(C2dRefusal::Throttled)
        );
        q.purge("d");
        assert_eq!(q.pending("d"), 0);
        assert_eq!(q.drain_feedback()[0].status, FeedbackStatus::Purged);
    }

    #[test]
    fn refusals_carry_the_hubs_conditions() {
        assert_eq!(
            C2dRefusal::QueueFull("d".into()).condition(),
            "amqp:resource-limit-exceeded"
        );
        assert!(
            C2dRefusal::QueueFull("d".into())
                .description()
                .starts_with("DeviceMaximumQueueDepthExceeded")
        );
    }
}
