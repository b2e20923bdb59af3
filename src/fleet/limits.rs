//! The fleet's ceilings per traffic class (`fleet.limits`), turned into the [`Gate`] every
//! device waits on. Each shard gets 1/n of each rate, so n shards together stay under the
//! scenario's ceiling.

use crate::device::gate::{Gate, TrafficClass};
use crate::scenario::Limits;

use super::shard::Shard;

pub fn gate(limits: &Limits, shard: Shard) -> Gate {
    let mut gate = Gate::default();
    for (class, rate) in [
        (TrafficClass::Enrolment, limits.enrolments),
        (TrafficClass::Connect, limits.connects),
        (TrafficClass::Publish, limits.publishes),
        (TrafficClass::Method, limits.methods),
        (TrafficClass::TwinUpdate, limits.twin_updates),
        (TrafficClass::TwinRead, limits.twin_reads),
    ] {
        if let Some(rate) = rate {
            gate = gate.limit(class, shard.rate(rate.0));
        }
    }
    gate
}
