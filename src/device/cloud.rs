//! What a connected device does with the cloud, as its cohort's [`CloudBehaviour`] says, the way
//! the Azure IoT SDKs do it:
//! - after every connect ([`Device::cloud_connected`]): subscribe (IoT Hub's topic filters),
//!   `GET` the twin and apply the desired properties it knows, send its reported properties;
//! - a desired-properties patch: apply what it knows (e.g. `telemetryInterval` changes the
//!   telemetry interval), then acknowledge IoT Plug and Play's way, reported
//!   `{name: {"value": …, "ac": 200, "av": <desired $version>}}` (`ac: 400` for a value it cannot
//!   use);
//! - a direct method: answer after its think time with the status and payload configured, timed
//!   as `method.device` (request received → answer sent), then its effect (reconnect, renew,
//!   set the interval), which `online` carries out ([`Applied`]);
//! - a twin answer: a reported patch's `204` closes its `twin.reported` timing (reported PATCH →
//!   the hub's answer);
//! - a cloud-to-device message: acknowledged, timed and judged in [`super::c2d`].
//!
//! Bad input from the cloud (a topic no feature sends, a request without `$rid`, a payload or
//! patch that is not JSON, a value it cannot use) is counted under the phase it concerns
//! (`method.device`, `twin.desired`, `twin.reported`) and never stops the device.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::time::Instant;

use super::backends::{Backends, Delivery, DeviceSession, ServiceError, Session};
use super::behaviour::{CloudBehaviour, interval_from};
use super::core::Device;
use crate::iothub::topics::{self, CloudMessage, Subscription};
use crate::metrics::{Outcome, Phase};
use crate::scenario::behaviour::{DesiredAction, Effect};
use crate::scenario::placeholders::{Vars, render};

/// How long a device waits for the hub's answer to a twin request.
const TWIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What a method or a desired property asks `online` to do.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Applied {
    SetInterval(Duration),
    Renew,
    /// Disconnect, stay away this long, connect again.
    Reconnect(Duration),
}

/// A device's dealings with the cloud while it lives (boxed in the online state, only for
/// devices that have a behaviour).
pub(super) struct Cloud {
    behaviour: Arc<CloudBehaviour>,
    next_rid: u64,
    /// Twin requests waiting for the hub's answer.
    requests: Vec<TwinRequest>,
    /// Method answers waiting for their think time, soonest first.
    answers: Vec<PendingAnswer>,
    /// The desired properties' `$version` last applied.
    desired_version: u64,
    /// Consecutive connects whose setup (subscriptions) failed.
    pub failures: u32,
}

struct TwinRequest {
    rid: u64,
    get: bool,
    sent: Instant,
}

struct PendingAnswer {
    due: Instant,
    received: Instant,
    rid: String,
    status: i64,
    payload: Vec<u8>,
    effect: Option<Applied>,
}

impl Cloud {
    pub fn new(behaviour: Arc<CloudBehaviour>) -> Self {
        Self {
            behaviour,
            next_rid: 1,
            requests: Vec::new(),
            answers: Vec::new(),
            desired_version: 0,
            failures: 0,
        }
    }

    /// When the device next has something to do for the cloud: an answer due, a twin request
    /// to give up on.
    pub fn wake(&self) -> Option<Instant> {
        let answer = self.answers.first().map(|a| a.due);
        let request = self.requests.iter().map(|r| r.sent + TWIN_TIMEOUT).min();
        answer.into_iter().chain(request).min()
    }

    fn rid(&mut self) -> u64 {
        let rid = self.next_rid;
        self.next_rid += 1;
        rid
    }
}

impl<B: Backends> Device<'_, B> {
    /// A new session is up: subscribe, read the twin, report. Requests and answers of the old
    /// session are dropped (the hub would not take them on this one).
    pub(super) async fn cloud_connected(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
    ) -> Result<(), ServiceError> {
        cloud.requests.clear();
        cloud.answers.clear();
        let id = self.spec.id.as_str();
        let filters = cloud
            .behaviour
            .subscriptions
            .iter()
            .map(|s| (s.filter(id), s.at_least_once()))
            .collect::<Vec<_>>();
        if !filters.is_empty() {
            session.subscribe(filters).await?;
        }
        if cloud.behaviour.subscribes(Subscription::Twin) {
            let rid = cloud.rid();
            session
                .publish(topics::twin_get(rid), Vec::new(), false)
                .await?;
            cloud.requests.push(TwinRequest {
                rid,
                get: true,
                sent: Instant::now(),
            });
        }
        if let Some(template) = cloud.behaviour.reported.clone() {
            let patch = render(&template, &self.vars(None, None));
            self.send_reported(session, cloud, &patch).await;
        }
        Ok(())
    }

    fn vars<'v>(&'v self, method: Option<&'v str>, request: Option<&'v Value>) -> Vars<'v> {
        Vars {
            device_id: &self.spec.id,
            index: self.spec.index,
            connects: self.report.connects,
            method,
            request,
        }
    }

    /// A message from the cloud; returns what it asks `online` to do now (desired properties).
    pub(super) async fn cloud_message(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
        delivery: Delivery,
    ) -> Vec<Applied> {
        match topics::parse_cloud_message(&delivery.topic, &self.spec.id) {
            Some(CloudMessage::MethodRequest { name, rid }) => {
                self.method_request(cloud, &name, rid, &delivery.payload);
                Vec::new()
            }
            Some(CloudMessage::DesiredPatch { version }) => {
                self.desired_patch(session, cloud, version, &delivery.payload)
                    .await
            }
            Some(CloudMessage::TwinResponse {
                status,
                rid,
                version: _,
            }) => {
                self.twin_response(session, cloud, status, &rid, &delivery.payload)
                    .await
            }
            Some(CloudMessage::C2d { properties }) => {
                let b = &cloud.behaviour;
                if let Some(kind) = self.c2d_message(properties, b.c2d_reject, b.c2d_abandon) {
                    self.malformed(Phase::C2dDelivery, kind);
                }
                Vec::new()
            }
            None => {
                self.malformed(phase_of(&delivery.topic), "unknown_topic");
                Vec::new()
            }
        }
    }

    fn malformed(&mut self, phase: Phase, kind: &str) {
        self.report.cloud.malformed += 1;
        self.services.recorder.error(phase, kind);
        tracing::debug!(device = %self.spec.id, phase = phase.name(), kind, "bad input from the cloud");
    }

    /// Schedules the answer to method `name` (request `rid`) after its think time.
    fn method_request(&mut self, cloud: &mut Cloud, name: &str, rid: String, payload: &[u8]) {
        let received = Instant::now();
        let request: Value = match payload.is_empty() {
            true => Value::Null,
            false => match serde_json::from_slice(payload) {
                Ok(v) => v,
                Err(_) => {
                    self.malformed(Phase::MethodDevice, "malformed_payload");
                    let body = serde_json::json!({"message": "the request's payload is not JSON"});
                    return queue(cloud, received, received, rid, 400, &body, None);
                }
            },
        };
        let Some(answer) = cloud.behaviour.method(name).cloned() else {
            self.malformed(Phase::MethodDevice, "unknown_method");
            let body = serde_json::json!({"message": format!("unknown method {name}")});
            return queue(cloud, received, received, rid, 404, &body, None);
        };
        let effect = match answer.effect {
            None => None,
            Some(Effect::Renew) => Some(Applied::Renew),
            Some(Effect::Reconnect) => Some(Applied::Reconnect(answer.downtime)),
            Some(Effect::SetInterval) => match interval_from(&request) {
                Ok(every) => Some(Applied::SetInterval(every)),
                Err(e) => {
                    self.malformed(Phase::MethodDevice, "bad_value");
                    let body = serde_json::json!({"message": e});
                    return queue(cloud, received, received, rid, 400, &body, None);
                }
            },
        };
        let body = render(&answer.payload, &self.vars(Some(name), Some(&request)));
        let think = answer
            .think
            .map_or(Duration::ZERO, |t| t.sample(&mut self.rng));
        queue(
            cloud,
            received,
            received + think,
            rid,
            answer.status,
            &body,
            effect,
        );
    }

    /// Answers the methods whose think time is over, gives up on twin requests the hub did not
    /// answer; returns the effects of the answered methods, in order.
    pub(super) async fn cloud_due(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
        now: Instant,
    ) -> Vec<Applied> {
        let recorder = self.services.recorder.clone();
        let due = cloud.answers.iter().take_while(|a| a.due <= now).count();
        let mut effects = Vec::new();
        for a in cloud.answers.drain(..due).collect::<Vec<_>>() {
            let topic = topics::method_response(a.status, &a.rid);
            let sent = session.publish(topic, a.payload, false).await;
            let end = Instant::now();
            match sent {
                Ok(()) => {
                    recorder.record(Phase::MethodDevice, Outcome::Ok, a.received, end);
                    self.report.cloud.methods_answered += 1;
                    effects.extend(a.effect);
                }
                Err(e) => {
                    recorder.record(Phase::MethodDevice, e.outcome(), a.received, end);
                    recorder.error(Phase::MethodDevice, &e.kind);
                }
            }
        }
        let (late, waiting): (Vec<_>, Vec<_>) = cloud
            .requests
            .drain(..)
            .partition(|r| r.sent + TWIN_TIMEOUT <= now);
        cloud.requests = waiting;
        for r in late {
            let phase = if r.get {
                Phase::TwinDesired
            } else {
                Phase::TwinReported
            };
            if !r.get {
                recorder.record(Phase::TwinReported, Outcome::Timeout, r.sent, now);
            }
            recorder.error(phase, "no_answer");
        }
        effects
    }

    /// Sends a reported-properties patch, timed as `twin.reported` until the hub answers.
    async fn send_reported(&mut self, session: &mut Session<B>, cloud: &mut Cloud, patch: &Value) {
        let rid = cloud.rid();
        let body = serde_json::to_vec(patch).unwrap_or_default();
        let sent = Instant::now();
        match session
            .publish(topics::twin_patch_reported(rid), body, false)
            .await
        {
            Ok(()) => cloud.requests.push(TwinRequest {
                rid,
                get: false,
                sent,
            }),
            Err(e) => {
                let recorder = &self.services.recorder;
                recorder.record(Phase::TwinReported, e.outcome(), sent, Instant::now());
                recorder.error(Phase::TwinReported, &e.kind);
            }
        }
    }

    /// The hub's answer to twin request `rid`: a reported patch's end, or the twin itself.
    async fn twin_response(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
        status: u16,
        rid: &str,
        payload: &[u8],
    ) -> Vec<Applied> {
        let Some(at) = cloud.requests.iter().position(|r| rid.parse() == Ok(r.rid)) else {
            // An answer to a request given up on, or to a connection before this one.
            return Vec::new();
        };
        let request = cloud.requests.swap_remove(at);
        let recorder = self.services.recorder.clone();
        if !request.get {
            let outcome = twin_outcome(status);
            recorder.record(Phase::TwinReported, outcome, request.sent, Instant::now());
            match outcome {
                Outcome::Ok => self.report.cloud.reported_accepted += 1,
                _ => recorder.error(Phase::TwinReported, &format!("http_{status}")),
            }
            return Vec::new();
        }
        if status != 200 {
            recorder.error(Phase::TwinDesired, &format!("get_http_{status}"));
            return Vec::new();
        }
        let twin: Map<String, Value> = match serde_json::from_slice(payload) {
            Ok(t) => t,
            Err(_) => {
                self.malformed(Phase::TwinDesired, "malformed_twin");
                return Vec::new();
            }
        };
        let section = |name: &str| twin.get(name).and_then(Value::as_object).cloned();
        let desired = section("desired").unwrap_or_default();
        let reported = section("reported").unwrap_or_default();
        let version = desired.get("$version").and_then(Value::as_u64);
        self.apply_desired(session, cloud, &desired, version, Some(&reported))
            .await
    }

    /// A desired-properties patch the hub pushed.
    async fn desired_patch(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
        version: Option<u64>,
        payload: &[u8],
    ) -> Vec<Applied> {
        let patch: Map<String, Value> = match serde_json::from_slice(payload) {
            Ok(p) => p,
            Err(_) => {
                self.malformed(Phase::TwinDesired, "malformed_patch");
                return Vec::new();
            }
        };
        let version = version.or_else(|| patch.get("$version").and_then(Value::as_u64));
        self.apply_desired(session, cloud, &patch, version, None)
            .await
    }

    /// Applies the desired properties the device knows from `desired` at `version` (newer than
    /// what it applied last), and acknowledges them in one reported patch. From a whole twin
    /// (`reported` given), a property already acknowledged at this version is applied again
    /// without a new acknowledgement (the device's state after a reconnect).
    async fn apply_desired(
        &mut self,
        session: &mut Session<B>,
        cloud: &mut Cloud,
        desired: &Map<String, Value>,
        version: Option<u64>,
        reported: Option<&Map<String, Value>>,
    ) -> Vec<Applied> {
        let Some(version) = version else {
            self.malformed(Phase::TwinDesired, "no_version");
            return Vec::new();
        };
        if version <= cloud.desired_version {
            return Vec::new();
        }
        cloud.desired_version = version;
        let mut effects = Vec::new();
        let mut acks = Map::new();
        for (name, action) in cloud.behaviour.desired.clone() {
            let Some(value) = desired.get(&name).filter(|v| !v.is_null()) else {
                continue;
            };
            let acked = reported
                .and_then(|r| r.get(&name))
                .is_some_and(|ack| acknowledges(ack, value, version));
            let (code, note) = match action {
                DesiredAction::Ack => (200, "acknowledged".to_string()),
                DesiredAction::SetInterval => match interval_from(value) {
                    Ok(every) => {
                        effects.push(Applied::SetInterval(every));
                        (200, "applied".to_string())
                    }
                    Err(e) => {
                        self.malformed(Phase::TwinDesired, "bad_value");
                        (400, e)
                    }
                },
            };
            self.report.cloud.desired_applied += u64::from(code == 200);
            if !acked {
                let ack =
                    serde_json::json!({"value": value, "ac": code, "av": version, "ad": note});
                acks.insert(name, ack);
            }
        }
        if !acks.is_empty() {
            self.send_reported(session, cloud, &Value::Object(acks))
                .await;
        }
        effects
    }
}

/// Queues an answer, keeping the queue soonest first.
fn queue(
    cloud: &mut Cloud,
    received: Instant,
    due: Instant,
    rid: String,
    status: i64,
    body: &Value,
    effect: Option<Applied>,
) {
    let payload = serde_json::to_vec(body).unwrap_or_default();
    let at = cloud.answers.partition_point(|a| a.due <= due);
    cloud.answers.insert(
        at,
        PendingAnswer {
            due,
            received,
            rid,
            status,
            payload,
            effect,
        },
    );
}

/// Whether a reported acknowledgement already covers `value` at `version`.
fn acknowledges(ack: &Value, value: &Value, version: u64) -> bool {
    ack.get("av").and_then(Value::as_u64) == Some(version)
        && ack.get("value") == Some(value)
        && ack
            .get("ac")
            .and_then(Value::as_u64)
            .is_some_and(|c| (200..300).contains(&c))
}

/// The outcome of a twin request the hub answered with `status`.
fn twin_outcome(status: u16) -> Outcome {
    match status {
        200..=299 => Outcome::Ok,
        429 => Outcome::Throttled,
        400..=499 => Outcome::Rejected,
        _ => Outcome::Error,
    }
}

/// The phase bad input on `topic` is counted under.
fn phase_of(topic: &str) -> Phase {
    if topic.starts_with("devices/") {
        Phase::C2dDelivery
    } else if topic.starts_with("$iothub/twin/res/") {
        Phase::TwinReported
    } else if topic.starts_with("$iothub/twin/") {
        Phase::TwinDesired
    } else {
        Phase::MethodDevice
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn acknowledgements_and_outcomes() {
        let ack = json!({"value": 5, "ac": 200, "av": 3});
        assert!(acknowledges(&ack, &json!(5), 3));
        assert!(!acknowledges(&ack, &json!(6), 3));
        assert!(!acknowledges(&ack, &json!(5), 4));
        assert!(!acknowledges(
            &json!({"value": 5, "ac": 400, "av": 3}),
            &json!(5),
            3
        ));
        assert_eq!(twin_outcome(204), Outcome::Ok);
        assert_eq!(twin_outcome(429), Outcome::Throttled);
        assert_eq!(twin_outcome(400), Outcome::Rejected);
        assert_eq!(twin_outcome(503), Outcome::Error);
        assert_eq!(phase_of("$iothub/twin/res/x"), Phase::TwinReported);
        assert_eq!(phase_of("$iothub/twin/PATCH/x"), Phase::TwinDesired);
        assert_eq!(phase_of("$iothub/methods/POST/x"), Phase::MethodDevice);
        assert_eq!(
            phase_of("devices/d/messages/devicebound/%FF"),
            Phase::C2dDelivery
        );
    }

    #[test]
    fn answers_queue_soonest_first() {
        let behaviour = Arc::new(CloudBehaviour {
            subscriptions: Vec::new(),
            reported: None,
            methods: Default::default(),
            desired: Default::default(),
            c2d_reject: 0.0,
            c2d_abandon: 0.0,
        });
        let mut cloud = Cloud::new(behaviour);
        let t0 = Instant::now();
        for (rid, ms) in [("a", 30), ("b", 10), ("c", 20), ("d", 10)] {
            let due = t0 + Duration::from_millis(ms);
            queue(&mut cloud, t0, due, rid.into(), 200, &Value::Null, None);
        }
        let order: Vec<&str> = cloud.answers.iter().map(|a| a.rid.as_str()).collect();
        assert_eq!(order, ["b", "d", "c", "a"]);
        assert_eq!(cloud.wake(), Some(t0 + Duration::from_millis(10)));
    }
}
