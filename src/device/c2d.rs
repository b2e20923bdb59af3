//! Cloud-to-device messages on a device, as the Azure IoT SDKs take them over MQTT: the hub
//! delivers each at QoS 1 on `devices/{id}/messages/devicebound/{property bag}`; the device's
//! MQTT client acknowledges it on receipt (PUBACK), which completes it in IoT Hub.
//!
//! MQTT has no reject or abandon (IoT Hub offers them over AMQP and HTTPS). Over MQTT the Python
//! device SDK acknowledges every message on receipt and the C# SDK throws `NotSupportedException`
//! for reject and abandon, so a device on MQTT cannot hand a message back. The share of messages the cohort's behaviour
//! says its application rejects or abandons (`behaviour.c2d`) is therefore acknowledged like
//! every other, then counted as rejected or abandoned by the application ([`CloudReport`]'s
//! `c2d_rejected`, `c2d_abandoned`): the hub sees them completed, as it would a real MQTT device's.
//!
//! A message carrying the application property `fleetsim-sent-at` (the send time in Unix epoch
//! milliseconds, set by fleetsim's C2D sender) records `c2d.delivery`: receive time − send time,
//! on the wall clock (sender and device are on synchronised clocks, or one machine). A message
//! without it is only counted as received; an unreadable one (a malformed property bag or send
//! time) is counted as malformed under `c2d.delivery`, never a failure of the device.
//!
//! [`CloudReport`]: super::CloudReport

use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::backends::Backends;
use super::core::Device;
use crate::metrics::{Outcome, Phase};

pub use crate::iothub::topics::C2D_SENT_AT as SENT_AT_PROPERTY;

/// A C2D message as the device's application sees it: IoT Hub's system properties by name, the
/// application properties as sent (`None`: a property without a value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    pub message_id: Option<String>,
    pub correlation_id: Option<String>,
    pub user_id: Option<String>,
    pub to: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// `$.exp` as the hub wrote it.
    pub expiry: Option<String>,
    /// `iothub-ack`: the feedback the sender asked for (`none`, `positive`, `negative`, `full`).
    pub ack: Option<String>,
    pub properties: Vec<(String, Option<String>)>,
}

impl Received {
    /// Splits a decoded property bag into system and application properties.
    pub fn from_properties(bag: Vec<(String, Option<String>)>) -> Self {
        let mut r = Received::default();
        for (key, value) in bag {
            let slot = match key.as_str() {
                "$.mid" => &mut r.message_id,
                "$.cid" => &mut r.correlation_id,
                "$.uid" => &mut r.user_id,
                "$.to" => &mut r.to,
                "$.ct" => &mut r.content_type,
                "$.ce" => &mut r.content_encoding,
                "$.exp" => &mut r.expiry,
                "iothub-ack" => &mut r.ack,
                _ => {
                    r.properties.push((key, value));
                    continue;
                }
            };
            *slot = value;
        }
        r
    }

    /// An application property's value (`Some(None)`: present without a value).
    pub fn property(&self, name: &str) -> Option<Option<&str>> {
        self.properties
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref())
    }

    /// The send time fleetsim's sender stamped: `None` if absent, `Some(Err)` if unreadable.
    pub fn sent_at_ms(&self) -> Option<Result<i64, ()>> {
        let value = self.property(SENT_AT_PROPERTY)?;
        Some(value.and_then(|v| v.trim().parse().ok()).ok_or(()))
    }
}

/// What the device's application does with a message (over MQTT it is acknowledged anyway).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Complete,
    Reject,
    Abandon,
}

/// The application's verdict for a draw `u` in [0, 1): the first `reject` of the range rejects,
/// the next `abandon` abandons, the rest completes.
pub fn verdict(u: f64, reject: f64, abandon: f64) -> Verdict {
    if u < reject {
        Verdict::Reject
    } else if u < reject + abandon {
        Verdict::Abandon
    } else {
        Verdict::Complete
    }
}

/// Wall-clock time in Unix epoch milliseconds.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl<B: Backends> Device<'_, B> {
    /// A C2D message arrived (its PUBACK already on its way): time it, let the application
    /// judge it, count it. Returns what was malformed about it, for `cloud` to count.
    pub(super) fn c2d_message(
        &mut self,
        properties: Vec<(String, Option<String>)>,
        reject: f64,
        abandon: f64,
    ) -> Option<&'static str> {
        let received_at = now_ms();
        let end = Instant::now();
        let message = Received::from_properties(properties);
        self.report.cloud.c2d_received += 1;
        let mut malformed = None;
        match message.sent_at_ms() {
            None => {}
            Some(Err(())) => malformed = Some("bad_sent_at"),
            Some(Ok(sent)) => {
                let took = u64::try_from(received_at.saturating_sub(sent)).unwrap_or(0);
                let start = end.checked_sub(Duration::from_millis(took)).unwrap_or(end);
                let recorder = &self.services.recorder;
                recorder.record(Phase::C2dDelivery, Outcome::Ok, start, end);
            }
        }
        // No draw when there is nothing to decide: the device's random sequence stays as it was.
        let draw: f64 = match reject + abandon > 0.0 {
            true => self.rng.random(),
            false => 1.0,
        };
        match verdict(draw, reject, abandon) {
            Verdict::Complete => {}
            Verdict::Reject => self.report.cloud.c2d_rejected += 1,
            Verdict::Abandon => self.report.cloud.c2d_abandoned += 1,
        }
        tracing::trace!(device = %self.spec.id, message_id = ?message.message_id, "C2D message");
        malformed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bag(pairs: &[(&str, Option<&str>)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    #[test]
    fn system_and_application_properties_are_told_apart() {
        let r = Received::from_properties(bag(&[
            ("$.mid", Some("m1")),
            ("$.cid", Some("c1")),
            ("$.to", Some("/devices/d/messages/devicebound")),
            ("$.ct", Some("application/json")),
            ("$.ce", Some("utf-8")),
            ("$.exp", Some("2030-01-01T00:00:00.0000000Z")),
            ("iothub-ack", Some("full")),
            ("colour", Some("blue")),
            ("flag", None),
            (SENT_AT_PROPERTY, Some("1700000000123")),
        ]));
        assert_eq!(r.message_id.as_deref(), Some("m1"));
        assert_eq!(r.correlation_id.as_deref(), Some("c1"));
        assert_eq!(r.content_type.as_deref(), Some("application/json"));
        assert_eq!(r.content_encoding.as_deref(), Some("utf-8"));
        assert!(r.expiry.is_some() && r.to.is_some());
        assert_eq!(r.ack.as_deref(), Some("full"));
        assert_eq!(r.property("colour"), Some(Some("blue")));
        assert_eq!(r.property("flag"), Some(None));
        assert_eq!(r.property("absent"), None);
        assert_eq!(r.sent_at_ms(), Some(Ok(1_700_000_000_123)));
        assert_eq!(r.properties.len(), 3);

        let bad = Received::from_properties(bag(&[(SENT_AT_PROPERTY, Some("yesterday"))]));
        assert_eq!(bad.sent_at_ms(), Some(Err(())));
        let none = Received::from_properties(bag(&[(SENT_AT_PROPERTY, None)]));
        assert_eq!(none.sent_at_ms(), Some(Err(())));
        assert_eq!(Received::default().sent_at_ms(), None);
    }

    #[test]
    fn verdicts_split_the_range() {
        assert_eq!(verdict(0.05, 0.1, 0.2), Verdict::Reject);
        assert_eq!(verdict(0.15, 0.1, 0.2), Verdict::Abandon);
        assert_eq!(verdict(0.35, 0.1, 0.2), Verdict::Complete);
        assert_eq!(verdict(0.0, 0.0, 0.0), Verdict::Complete);
    }
}
