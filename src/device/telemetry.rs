//! Telemetry: the step that sends the message that is due, through the fleet's publish limit,
//! timed as `mqtt.publish` from when it was due (the open model: a herd the hub or the simulator
//! cannot take at once shows up as latency), and counts its bytes and IoT Hub meters. What is
//! sent and when comes from the device's cohort plan ([`super::messages`]); without a
//! `payload` in the scenario, the EZCA IoT sample's message (`deviceId`, `messageId`,
//! `temperature`, `humidity`, and the `temperatureAlert` property, `"true"` above 30 °C).

use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::backends::{Backends, DeviceSession, ServiceError, Session};
use super::core::{Device, DeviceSpec};
use super::gate::TrafficClass;
use super::messages::{MessageBuilder, MessageSchedule, payload_seed, schedule_seed};
use crate::iothub::topics::push_property;
use crate::iothub::{SENT_AT_PROPERTY, SEQUENCE_PROPERTY};
use crate::metrics::qos1;
use crate::metrics::{Outcome, Phase};

/// Why a QoS 1 message whose publish failed was lost.
fn lost_cause(e: &ServiceError) -> &str {
    match e.kind.as_str() {
        "timeout" => qos1::cause::PUBLISH_TIMEOUT,
        "closed" | "transport" | "tls" | "closed_before_connack" => qos1::cause::CONNECTION_LOST,
        other => other,
    }
}

/// The wall clock as time since the Unix epoch.
fn wall_now() -> Duration {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
}

/// Where a device's telemetry stands: its next message, and when it is due.
pub(super) struct Telemetry {
    builder: MessageBuilder,
    schedule: MessageSchedule,
    /// When the next message is due.
    pub due: Instant,
    /// When the device was meant to arrive (`first_telemetry` counts from there).
    intended_start: Instant,
    first: bool,
}

impl Telemetry {
    /// The telemetry of `spec`'s device, online now: the first message is due at once, or at the
    /// first aligned tick.
    pub fn new(spec: &DeviceSpec, intended_start: Instant) -> Self {
        let plan = spec.telemetry.clone();
        let mut schedule = MessageSchedule::new(plan.settings.schedule, schedule_seed(spec.seed));
        let due = schedule.first(Instant::now(), wall_now());
        Self {
            builder: MessageBuilder::new(plan, &spec.id, payload_seed(spec.seed)),
            schedule,
            due,
            intended_start,
            first: true,
        }
    }

    /// Changes the interval between messages from now on (cloud-to-device behaviours).
    pub fn set_interval(&mut self, every: Duration) {
        self.due = self
            .schedule
            .set_interval(every, Instant::now(), wall_now(), self.due);
    }
}

/// How sending a message went.
pub(super) enum Sent {
    /// Sent (and, at least once, acknowledged).
    Delivered,
    /// Over IoT Hub's 256 KB: not sent (as the SDKs refuse it), counted as failed.
    TooLarge,
    /// The publish failed: the connection is presumed lost.
    Failed,
    /// The run stopped while the message waited for the publish limit.
    Stopped,
}

impl<B: Backends> Device<'_, B> {
    /// Sends the message that is due on `session`; the next one is due when the schedule says.
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
        let now_ms = i64::try_from(wall_now().as_millis()).unwrap_or(i64::MAX);
        let message = telemetry
            .builder
            .build(&self.spec.id, self.spec.index, now_ms);
        self.report.messages_sent += 1;
        self.report.bytes_sent += message.payload.len() as u64;
        self.report.meters_sent += message.meters;
        let recorder = &self.services.recorder;
        recorder.message_sent();
        recorder.message_bytes(message.payload.len() as u64, message.meters);
        let services = self.services;
        let in_flight = self
            .spec
            .at_least_once
            .then(|| services.recorder.qos1.send());
        if !message.fits() {
            if let Some(m) = in_flight {
                m.lost(qos1::cause::TOO_LARGE);
            }
            let sent = self.too_large(telemetry);
            telemetry.due = telemetry.schedule.next(Instant::now(), wall_now());
            return sent;
        }
        let seq = telemetry.builder.built() - 1;
        let mut topic = message.topic;
        if telemetry.builder.stamped() {
            // A backend reads these back: d2c.delivery from the send time, and lost or
            // duplicated messages from the sequence (not counted in the message's size: they
            // are fleetsim's, not the scenario's).
            push_property(&mut topic, SEQUENCE_PROPERTY, &seq.to_string());
            push_property(&mut topic, SENT_AT_PROPERTY, &now_ms.to_string());
        }
        // Not cancelled by the stop signal: a message already handed to the hub is seen
        // through to its PUBACK (bounded by the ack timeout), so sent == acked at the end.
        let start = Instant::now();
        let result = session
            .publish(topic, message.payload, self.spec.at_least_once)
            .await;
        let sent = match result {
            Ok(()) => {
                if let Some(m) = in_flight {
                    m.acked();
                }
                self.delivered(telemetry, seq, start)
            }
            Err(e) => {
                if let Some(m) = in_flight {
                    m.lost(lost_cause(&e));
                }
                self.publish_failed(telemetry, start, &e)
            }
        };
        telemetry.due = telemetry.schedule.next(Instant::now(), wall_now());
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
        // The device's first message ever: a migrated SAS device sent its first before it
        // migrated, and its new telemetry after the migration is not a first.
        if telemetry.first && !self.report.migrated {
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
        self.note_error(Phase::MqttPublish, &e.kind);
        self.report.messages_failed += 1;
        recorder.message_failed();
        Sent::Failed
    }

    fn too_large(&mut self, telemetry: &Telemetry) -> Sent {
        let now = Instant::now();
        let recorder = &self.services.recorder;
        recorder.record(Phase::MqttPublish, Outcome::Rejected, telemetry.due, now);
        self.note_error(Phase::MqttPublish, "message_too_large");
        self.report.messages_failed += 1;
        recorder.message_failed();
        Sent::TooLarge
    }
}
