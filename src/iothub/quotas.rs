//! IoT Hub's tiers and the limits Azure publishes for them (reference `iothub-protocol.md` §5.1
//! per-hub throttles, §5.2 daily message quota). A fact of IoT Hub, so it lives with the protocol
//! models: the scenario names a tier, the hub emulator builds its throttles from the table, and
//! the device side may size its rates by it. Nothing here depends on the rest of fleetsim.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// IoT Hub tiers: free, basic (B1–B3: no cloud-to-device, twins or direct methods) and standard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
pub enum Sku {
    F1,
    B1,
    B2,
    B3,
    S1,
    S2,
    S3,
}

impl Sku {
    pub const ALL: [Sku; 7] = [
        Sku::F1,
        Sku::B1,
        Sku::B2,
        Sku::B3,
        Sku::S1,
        Sku::S2,
        Sku::S3,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Sku::F1 => "F1",
            Sku::B1 => "B1",
            Sku::B2 => "B2",
            Sku::B3 => "B3",
            Sku::S1 => "S1",
            Sku::S2 => "S2",
            Sku::S3 => "S3",
        }
    }

    /// The tier's published limits.
    pub fn limits(self) -> &'static TierLimits {
        match self {
            Sku::F1 => &FREE,
            Sku::B1 => &BASIC_1,
            Sku::B2 => &BASIC_2,
            Sku::B3 => &BASIC_3,
            Sku::S1 => &STANDARD_1,
            Sku::S2 => &STANDARD_2,
            Sku::S3 => &STANDARD_3,
        }
    }
}

impl fmt::Display for Sku {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A tier name that is not one of IoT Hub's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown IoT Hub tier {0:?}: expected F1, B1, B2, B3, S1, S2 or S3")]
pub struct UnknownSku(pub String);

impl FromStr for Sku {
    type Err = UnknownSku;

    /// The tier's name in any case (`s1`, `S1`).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Sku::ALL
            .into_iter()
            .find(|sku| sku.name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| UnknownSku(s.to_string()))
    }
}

/// One throttle of a tier: `per_unit` for each unit the hub has, but never less than `at_least`
/// (the docs' "higher of 100/s or 12/s/unit"; a flat per-hub figure has `per_unit` 0).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Throttle {
    pub per_unit: f64,
    pub at_least: f64,
}

impl Throttle {
    const fn per_unit(per_unit: f64) -> Self {
        Self {
            per_unit,
            at_least: 0.0,
        }
    }

    const fn flat(at_least: f64) -> Self {
        Self {
            per_unit: 0.0,
            at_least,
        }
    }

    const fn higher_of(at_least: f64, per_unit: f64) -> Self {
        Self { per_unit, at_least }
    }

    /// The limit of a hub with `units` units (at least one).
    pub fn for_units(self, units: u32) -> f64 {
        (self.per_unit * f64::from(units.max(1))).max(self.at_least)
    }
}

/// What a tier allows (reference §5.1, §5.2). `None`: the tier lacks the feature (basic tiers have
/// no cloud-to-device messages, twins or direct methods).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TierLimits {
    /// Identity registry operations (create, read, update, delete) per minute.
    pub registry_ops_per_min: Throttle,
    /// New device connections per second: a rate, not a cap on connected devices.
    pub new_connections_per_sec: Throttle,
    /// Device-to-cloud sends per second, whatever their size.
    pub d2c_per_sec: Throttle,
    /// Cloud-to-device sends per minute.
    pub c2d_per_min: Option<Throttle>,
    /// Direct-method traffic in KB per second, metered in 4 KB (a 0–4 KB call counts 4 KB).
    pub direct_method_kb_per_sec: Option<Throttle>,
    pub twin_reads_per_sec: Option<Throttle>,
    pub twin_updates_per_sec: Option<Throttle>,
    /// Registry queries per minute.
    pub queries_per_min: Throttle,
    /// Device-to-cloud messages per UTC day and unit, counted in meters of `meter_bytes`.
    pub daily_messages_per_unit: u64,
    pub meter_bytes: u64,
    /// The most units a hub of this tier may have.
    pub max_units: u32,
}

impl TierLimits {
    /// Messages per UTC day for a hub of `units` units.
    pub fn daily_messages(&self, units: u32) -> u64 {
        self.daily_messages_per_unit * u64::from(units.clamp(1, self.max_units))
    }

    /// Whether the tier has cloud-to-device messages, twins and direct methods.
    pub fn has_cloud_to_device(&self) -> bool {
        self.c2d_per_min.is_some()
    }
}

/// Level 1 (F1, B1, S1): "higher of 100/s or 12/s/unit" for connections and sends.
const LEVEL_1: TierLimits = TierLimits {
    registry_ops_per_min: Throttle::per_unit(100.0),
    new_connections_per_sec: Throttle::higher_of(100.0, 12.0),
    d2c_per_sec: Throttle::higher_of(100.0, 12.0),
    c2d_per_min: Some(Throttle::per_unit(100.0)),
    direct_method_kb_per_sec: Some(Throttle::per_unit(160.0)),
    twin_reads_per_sec: Some(Throttle::flat(100.0)),
    twin_updates_per_sec: Some(Throttle::flat(50.0)),
    queries_per_min: Throttle::per_unit(20.0),
    daily_messages_per_unit: 400_000,
    meter_bytes: 4096,
    max_units: 200,
};

const LEVEL_2: TierLimits = TierLimits {
    registry_ops_per_min: Throttle::per_unit(100.0),
    new_connections_per_sec: Throttle::per_unit(120.0),
    d2c_per_sec: Throttle::per_unit(120.0),
    c2d_per_min: Some(Throttle::per_unit(100.0)),
    direct_method_kb_per_sec: Some(Throttle::per_unit(480.0)),
    twin_reads_per_sec: Some(Throttle::higher_of(100.0, 10.0)),
    twin_updates_per_sec: Some(Throttle::higher_of(50.0, 5.0)),
    queries_per_min: Throttle::per_unit(20.0),
    daily_messages_per_unit: 6_000_000,
    meter_bytes: 4096,
    max_units: 200,
};

const LEVEL_3: TierLimits = TierLimits {
    registry_ops_per_min: Throttle::per_unit(5_000.0),
    new_connections_per_sec: Throttle::per_unit(6_000.0),
    d2c_per_sec: Throttle::per_unit(6_000.0),
    c2d_per_min: Some(Throttle::per_unit(5_000.0)),
    direct_method_kb_per_sec: Some(Throttle::per_unit(24_000.0)),
    twin_reads_per_sec: Some(Throttle::per_unit(500.0)),
    twin_updates_per_sec: Some(Throttle::per_unit(250.0)),
    queries_per_min: Throttle::per_unit(1_000.0),
    daily_messages_per_unit: 300_000_000,
    meter_bytes: 4096,
    max_units: 10,
};

/// Free: level 1's throttles, one unit, 8,000 messages a day metered in 0.5 KB.
const FREE: TierLimits = TierLimits {
    daily_messages_per_unit: 8_000,
    meter_bytes: 512,
    max_units: 1,
    ..LEVEL_1
};

/// A basic tier: its level's throttles, without cloud-to-device messages, twins or methods.
const fn basic(level: TierLimits) -> TierLimits {
    TierLimits {
        c2d_per_min: None,
        direct_method_kb_per_sec: None,
        twin_reads_per_sec: None,
        twin_updates_per_sec: None,
        ..level
    }
}

const BASIC_1: TierLimits = basic(LEVEL_1);
const BASIC_2: TierLimits = basic(LEVEL_2);
const BASIC_3: TierLimits = basic(LEVEL_3);
const STANDARD_1: TierLimits = LEVEL_1;
const STANDARD_2: TierLimits = LEVEL_2;
const STANDARD_3: TierLimits = LEVEL_3;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_1_connections_are_the_higher_of_100_per_second_or_12_per_unit() {
        let s1 = Sku::S1.limits();
        assert_eq!(s1.new_connections_per_sec.for_units(1), 100.0);
        assert_eq!(s1.new_connections_per_sec.for_units(10), 120.0);
        assert_eq!(s1.d2c_per_sec.for_units(1), 100.0);
        assert_eq!(s1.registry_ops_per_min.for_units(3), 300.0);
        assert_eq!(s1.daily_messages(2), 800_000);
    }

    #[test]
    fn the_table_matches_the_reference() {
        let s2 = Sku::S2.limits();
        assert_eq!(s2.twin_reads_per_sec.unwrap().for_units(1), 100.0);
        assert_eq!(s2.twin_reads_per_sec.unwrap().for_units(20), 200.0);
        assert_eq!(s2.twin_updates_per_sec.unwrap().for_units(20), 100.0);
        assert_eq!(s2.direct_method_kb_per_sec.unwrap().for_units(2), 960.0);
        let s3 = Sku::S3.limits();
        assert_eq!(s3.d2c_per_sec.for_units(2), 12_000.0);
        assert_eq!(s3.c2d_per_min.unwrap().for_units(1), 5_000.0);
        assert_eq!(s3.queries_per_min.for_units(2), 2_000.0);
        assert_eq!(s3.daily_messages(1), 300_000_000);
        assert_eq!(s3.max_units, 10);
        let f1 = Sku::F1.limits();
        assert_eq!((f1.daily_messages(5), f1.meter_bytes), (8_000, 512));
        assert_eq!(f1.twin_updates_per_sec.unwrap().for_units(1), 50.0);
    }

    #[test]
    fn basic_tiers_have_their_levels_throttles_and_no_cloud_to_device_features() {
        for (basic, standard) in [(Sku::B1, Sku::S1), (Sku::B2, Sku::S2), (Sku::B3, Sku::S3)] {
            let (b, s) = (basic.limits(), standard.limits());
            assert!(!b.has_cloud_to_device() && s.has_cloud_to_device());
            assert_eq!(b.twin_reads_per_sec, None);
            assert_eq!(b.direct_method_kb_per_sec, None);
            assert_eq!(b.d2c_per_sec, s.d2c_per_sec);
            assert_eq!(b.daily_messages(1), s.daily_messages(1));
        }
    }

    #[test]
    fn tiers_parse_by_name_in_any_case() {
        assert_eq!("s1".parse(), Ok(Sku::S1));
        assert_eq!(" B3".parse(), Ok(Sku::B3));
        let err = "S4".parse::<Sku>().unwrap_err();
        assert!(err.to_string().contains("F1, B1, B2, B3, S1, S2 or S3"));
        for sku in Sku::ALL {
            assert_eq!(sku.to_string().parse(), Ok(sku));
        }
    }
}
