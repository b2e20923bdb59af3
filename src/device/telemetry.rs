//! Telemetry: the messages the EZCA IoT sample sends (`{"deviceId","messageId","temperature",
//! "humidity"}` with an application property `temperatureAlert` that is `"true"` above 30 °C),
//! and the step that sends the next one, through the fleet's publish limit, timed as
//! `mqtt.publish` from when it was due.

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;
use tokio::time::Instant;

use super::backends::{Backends, DeviceSession, ServiceError, Session};
use super::core::Device;
use super::gate::TrafficClass;
use crate::iothub::{SENT_AT_PROPERTY, SEQUENCE_PROPERTY};
use crate::metrics::{Outcome, Phase};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample<'a> {
    pub device_id: &'a str,
    pub message_id: u64,
    pub temperature: f64,
    pub humidity: f64,
}

/// The payload bytes and the topic for message `message_id` of `device_id`, sent at `sent_ms`
/// (Unix epoch milliseconds). Besides the sample's properties the topic carries fleetsim's
/// sequence number and send time, from which a backend measures `d2c.delivery` and finds
/// lost or duplicated messages.
pub fn next_message(
    device_id: &str,
    message_id: u64,
    sent_ms: i64,
    rng: &mut StdRng,
) -> (String, Vec<u8>) {
    let sample = Sample {
        device_id,
        message_id,
        temperature: ((20.0 + rng.random_range(0.0f64..15.0)) * 100.0).round() / 100.0,
        humidity: ((60.0 + rng.random_range(0.0f64..20.0)) * 100.0).round() / 100.0,
    };
    let alert = if sample.temperature > 30.0 {
        "true"
    } else {
        "false"
    };
    let (seq, sent) = (message_id.to_string(), sent_ms.to_string());
    let topic = crate::iothub::topics::telemetry(
        device_id,
        &[
            ("$.ct", "application/json"),
            ("$.ce", "utf-8"),
            (SEQUENCE_PROPERTY, &seq),
            (SENT_AT_PROPERTY, &sent),
            ("temperatureAlert", alert),
        ],
    );
    let payload = serde_json::to_vec(&sample).unwrap_or_default();
    (topic, payload)
}

/// Where a device's telemetry stands: the next message's id and when it is due.
pub(super) struct Telemetry {
    next_id: u64,
    /// When the next message is due.
    pub due: Instant,
    /// When the device was meant to arrive (`first_telemetry` counts from there).
    intended_start: Instant,
    first: bool,
    /// The interval between messages: the spec's, until the cloud sets another.
    every: Option<std::time::Duration>,
}

impl Telemetry {
    /// The first message is due now.
    pub fn new(intended_start: Instant) -> Self {
        Self {
            next_id: 0,
            due: Instant::now(),
            intended_start,
            first: true,
            every: None,
        }
    }

    /// Changes the interval between messages from now on (cloud-to-device behaviours): the next
    /// message is due no later than one new interval from now.
    pub fn set_interval(&mut self, every: std::time::Duration) {
        self.every = Some(every);
        self.due = self.due.min(Instant::now() + every);
    }
}

/// How sending a message went.
pub(super) enum Sent {
    /// Sent (and, at least once, acknowledged).
    Delivered,
    /// The publish failed: the connection is presumed lost.
    Failed,
    /// The run stopped while the message waited for the publish limit.
    Stopped,
}

impl<B: Backends> Device<'_, B> {
    /// Sends the message that is due on `session`; the next one is due an interval later.
    pub(super) async fn send_telemetry(
        &mut self,
        session: &mut Session<B>,
        telemetry: &mut Telemetry,
    ) -> Sent {
        let gate = &self.services.gate;
        if gate.is_limited(TrafficClass::Publish) {
            tokio::select! {
                _ = self.stop.cancelled() => return Sent::Stopped,
                _ = gate.wait(TrafficClass::Publish, &self.services.recorder) => {}
            }
        }
        let seq = telemetry.next_id;
        let (topic, payload) = next_message(&self.spec.id, seq, epoch_ms(), &mut self.rng);
        telemetry.next_id += 1;
        self.report.messages_sent += 1;
        self.services.recorder.message_sent();
        // Not cancelled by the stop signal: a message already handed to the hub is seen
        // through to its PUBACK (bounded by the ack timeout), so sent == acked at the end.
        let start = Instant::now();
        let result = session
            .publish(topic, payload, self.spec.at_least_once)
            .await;
        let sent = match result {
            Ok(()) => self.delivered(telemetry, seq, start),
            Err(e) => self.publish_failed(telemetry, start, &e),
        };
        telemetry.due += telemetry.every.unwrap_or(self.spec.telemetry_interval);
        sent
    }

    /// Records a delivered message: its latency from when it was due (and, uncorrected, from
    /// when the send began), so a late send shows up as latency.
    fn delivered(&mut self, telemetry: &mut Telemetry, seq: u64, start: Instant) -> Sent {
        let now = Instant::now();
        let recorder = &self.services.recorder;
        recorder.record_with_actual(Phase::MqttPublish, Outcome::Ok, telemetry.due, start, now);
        if self.spec.at_least_once {
            self.report.messages_acked += 1;
            recorder.message_acked();
            recorder.telemetry_acked(&self.spec.id, seq);
        }
        if telemetry.first {
            recorder.record(
                Phase::FirstTelemetry,
                Outcome::Ok,
                telemetry.intended_start,
                now,
            );
            telemetry.first = false;
        }
        Sent::Delivered
    }

    fn publish_failed(&mut self, telemetry: &Telemetry, start: Instant, e: &ServiceError) -> Sent {
        let now = Instant::now();
        let recorder = &self.services.recorder;
        recorder.record_with_actual(Phase::MqttPublish, e.outcome(), telemetry.due, start, now);
        recorder.error(Phase::MqttPublish, &e.kind);
        self.report.messages_failed += 1;
        recorder.message_failed();
        Sent::Failed
    }
}

fn epoch_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sample_matches_the_seed_sample_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        for id in 0..50 {
            let (topic, payload) = next_message("d1", id, 1_700_000_000_000, &mut rng);
            assert!(
                topic.contains(&format!(
                    "fleetsim-seq={id}&fleetsim-sent-at=1700000000000&"
                )),
                "{topic}"
            );
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["deviceId"], "d1");
            assert_eq!(v["messageId"], id);
            let t = v["temperature"].as_f64().unwrap();
            assert!((20.0..35.0).contains(&t));
            assert!((60.0..80.0).contains(&v["humidity"].as_f64().unwrap()));
            let alert = if t > 30.0 {
                "temperatureAlert=true"
            } else {
                "temperatureAlert=false"
            };
            assert!(topic.ends_with(alert), "{topic}");
        }
    }
}
