//! What devices send and when, built once per cohort and run per device.
//!
//! A cohort's [`TelemetryPlan`] is built from the scenario's resolved settings: its payload
//! template and properties compiled ([`program`]) and its schedule. Each device then keeps its
//! own [`MessageBuilder`] (seeded generator, random walks; [`message`], [`eval`]) and
//! [`MessageSchedule`] ([`schedule`]), so the same scenario seed gives every device the same
//! payload sequence in every run. The step that sends them is `device::telemetry`.
//!
//! A leaf of `device`: it imports no step. Inside, the files import one way: `value` is a leaf
//! (random draws come from [`crate::scenario::draw`]), `program` compiles, `plan` holds a cohort's compiled program, `eval` runs it,
//! `message` builds messages with them; `schedule` stands apart.

pub mod eval;
pub mod message;
mod plan;
pub mod program;
pub mod schedule;
pub mod value;

pub use message::{Message, MessageBuilder, SizeProfile, size_profile};
pub use plan::TelemetryPlan;
pub use program::Program;
pub use schedule::MessageSchedule;

/// The seed of a device's payload draws, from its own seed: apart from its other draws (backoff
/// jitter), so a retry elsewhere never changes its payloads.
pub fn payload_seed(device_seed: u64) -> u64 {
    device_seed ^ 0x7061_796c_6f61_6473
}

/// The seed of a device's schedule draws (jitter, Poisson gaps), from its own seed.
pub fn schedule_seed(device_seed: u64) -> u64 {
    device_seed ^ 0x7363_6865_6475_6c65
}

#[cfg(test)]
mod tests;
