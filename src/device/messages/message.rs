//! One device's messages: the payload (a template's JSON or raw bytes), the topic with its
//! property bag, and the message's size and 4 KB meters as IoT Hub counts them.

use std::sync::Arc;

use rand::RngCore;

use super::eval::{self, Context, State};
use super::plan::TelemetryPlan;
use super::program::PropertyValue;
use super::value;
use crate::iothub::topics;
use crate::scenario::Payload;
use crate::scenario::draw::{self, lognormal_parameters};
use crate::scenario::telemetry::{MAX_MESSAGE_BYTES, SizeModel};

/// A message ready to publish.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// `devices/{id}/messages/events/{property bag}`.
    pub topic: String,
    pub payload: Vec<u8>,
    /// IoT Hub's size: the body, system property values, application property names and values.
    pub size: u64,
    /// 4 KB meters against the hub's daily quota.
    pub meters: u64,
}

impl Message {
    /// Whether IoT Hub takes it (at most 256 KB).
    pub fn fits(&self) -> bool {
        self.size <= MAX_MESSAGE_BYTES
    }
}

/// Builds one device's messages in order; its generators' state (random walks, the seeded
/// generator) lives here, so the same seed gives the same sequence.
pub struct MessageBuilder {
    plan: Arc<TelemetryPlan>,
    state: State,
    /// `devices/{id}/messages/events/`.
    prefix: String,
    /// The next message's number.
    n: u64,
}

impl MessageBuilder {
    /// The builder of `device_id`'s messages, its draws seeded with `seed`.
    pub fn new(plan: Arc<TelemetryPlan>, device_id: &str, seed: u64) -> Self {
        let state = State::new(&plan.program, seed);
        Self {
            prefix: topics::telemetry(device_id, &[]),
            plan,
            state,
            n: 0,
        }
    }

    /// How many messages it has built.
    pub fn built(&self) -> u64 {
        self.n
    }

    /// Whether its messages carry fleetsim's sequence and send time (a backend reads them).
    pub fn stamped(&self) -> bool {
        self.plan.stamped
    }

    /// The next message of device `device_id` (fleet-wide `index`), at `now_ms` on the wall
    /// clock (Unix milliseconds).
    pub fn build(&mut self, device_id: &str, index: u64, now_ms: i64) -> Message {
        let ctx = Context {
            device_id,
            cohort: &self.plan.cohort,
            index,
            n: self.n,
            now_ms,
        };
        self.n += 1;
        let program = &self.plan.program;
        let payload = match &self.plan.settings.payload {
            Payload::Json(_) => {
                let mut out = String::with_capacity(program.payload_hint);
                program.write_payload(&mut out, &mut self.state, &ctx);
                out.into_bytes()
            }
            Payload::Raw(model) => raw(model, &mut self.state),
        };
        let mut topic = String::with_capacity(self.prefix.len() + program.bag_hint);
        topic.push_str(&self.prefix);
        let mut size = payload.len() as u64;
        for p in &program.properties {
            let text = match &p.value {
                PropertyValue::Const(v) => std::borrow::Cow::Borrowed(&**v),
                PropertyValue::Gen(g) => {
                    std::borrow::Cow::Owned(value::text(&eval::value(g, &mut self.state, &ctx)))
                }
            };
            topics::push_property(&mut topic, &p.name, &text);
            size += topics::message_size(0, &[(&*p.name, &*text)]);
        }
        Message {
            topic,
            payload,
            size,
            meters: topics::meters(size, topics::METER_BYTES),
        }
    }
}

/// Raw bytes of a size drawn from `model`.
fn raw(model: &SizeModel, state: &mut State) -> Vec<u8> {
    let len = match *model {
        SizeModel::Fixed(n) => n,
        SizeModel::LogNormal { p50, p99 } => {
            let (mu, sigma) = lognormal_parameters(p50 as f64, p99 as f64);
            let x = draw::lognormal(&mut state.rng, mu, sigma).round();
            x.clamp(0.0, MAX_MESSAGE_BYTES as f64) as u64
        }
    };
    let mut bytes = vec![0u8; len as usize];
    state.rng.fill_bytes(&mut bytes);
    bytes
}

/// What a plan's messages cost the hub, on average, per device.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SizeProfile {
    pub mean_bytes: f64,
    pub mean_meters: f64,
    pub messages_per_second: f64,
}

/// The mean size and 4 KB meters of `plan`'s messages, from `samples` messages of a probe
/// device: the size model a run uses, for planning a hub's daily quota.
pub fn size_profile(plan: &Arc<TelemetryPlan>, samples: u32) -> SizeProfile {
    let id = "probe-device-000000";
    let mut builder = MessageBuilder::new(plan.clone(), id, 0);
    // Timestamps as long as today's.
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let (mut size, mut meters) = (0u64, 0u64);
    for _ in 0..samples.max(1) {
        let m = builder.build(id, 0, now_ms);
        size += m.size;
        meters += m.meters;
    }
    let n = f64::from(samples.max(1));
    SizeProfile {
        mean_bytes: size as f64 / n,
        mean_meters: meters as f64 / n,
        messages_per_second: plan.settings.messages_per_second(),
    }
}
