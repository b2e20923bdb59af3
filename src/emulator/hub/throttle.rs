//! IoT Hub's throttles and daily quota (reference §5), per SKU and unit count, built from the
//! published table in [`crate::iothub::quotas`].
//!
//! Each throttled operation class (new connections, device-to-cloud sends, registry operations,
//! twin reads, twin updates, direct methods, queries) is a GCRA bucket with *reservations*: a request within the burst tolerance passes at once; past
//! it, the request is given the next free slot and waits for it (IoT Hub's traffic shaping: delayed
//! CONNACK, PUBACK or HTTP response); when that slot is further away than the shaping window, the
//! request is refused (the connection is closed over MQTT; 429 over REST). governor's limiters
//! cannot reserve a future slot, which shaping needs, hence this small bucket.
//!
//! Per-second throttles allow a burst of one second's worth; the query throttle, published per
//! minute ("operation throttles are applied in minute ranges"), a burst of one minute's worth.
//! Direct methods are metered in 4 KB units (a 0–4 KB call counts 4 KB), so a call takes as many
//! units of the bucket as its payload has started 4 KB blocks.
//!
//! The daily quota counts device-to-cloud messages in 4 KB meters (0.5 KB on F1) and resets at
//! midnight UTC.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

pub use crate::emulator::gcra::{Admission, Bucket};
use crate::iothub::quotas::Sku;

/// The limits of a hub; `None` means unlimited.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HubLimits {
    pub connections_per_sec: Option<f64>,
    pub d2c_per_sec: Option<f64>,
    pub registry_per_sec: Option<f64>,
    /// Twin reads (service `GET /twins/{id}`, device twin GET) per second.
    pub twin_reads_per_sec: Option<f64>,
    /// Twin updates (service PATCH/PUT, device reported PATCH) per second.
    pub twin_updates_per_sec: Option<f64>,
    /// Direct-method traffic in KB per second, metered in 4 KB units.
    pub method_kb_per_sec: Option<f64>,
    /// Registry queries per minute.
    pub queries_per_min: Option<f64>,
    /// Cloud-to-device sends per minute (the hub's C2D queues apply it to AMQP sends).
    pub c2d_per_min: Option<f64>,
    /// Messages per UTC day, counted in meters of `meter_bytes`.
    pub daily_messages: Option<u64>,
    pub meter_bytes: u64,
    /// The longest a request may be held back before it is refused instead.
    pub shaping: Duration,
    /// Whether devices may use twins, direct methods and cloud-to-device messages (basic tiers
    /// have none: subscribing to or publishing on their topics closes the connection).
    pub cloud_to_device: bool,
    /// The tier and units these limits are of (none: unlimited or hand-made limits).
    pub tier: Option<(Sku, u32)>,
}

impl HubLimits {
    pub fn unlimited() -> Self {
        Self {
            connections_per_sec: None,
            d2c_per_sec: None,
            registry_per_sec: None,
            twin_reads_per_sec: None,
            twin_updates_per_sec: None,
            method_kb_per_sec: None,
            queries_per_min: None,
            c2d_per_min: None,
            daily_messages: None,
            meter_bytes: 4096,
            shaping: Duration::from_millis(500),
            cloud_to_device: true,
            tier: None,
        }
    }

    /// The published limits of `sku` with `units` units (clamped to what the tier allows).
    pub fn for_sku(sku: Sku, units: u32, shaping: Duration) -> Self {
        let tier = sku.limits();
        let units = units.clamp(1, tier.max_units);
        Self {
            connections_per_sec: Some(tier.new_connections_per_sec.for_units(units)),
            d2c_per_sec: Some(tier.d2c_per_sec.for_units(units)),
            registry_per_sec: Some(tier.registry_ops_per_min.for_units(units) / 60.0),
            twin_reads_per_sec: tier.twin_reads_per_sec.map(|t| t.for_units(units)),
            twin_updates_per_sec: tier.twin_updates_per_sec.map(|t| t.for_units(units)),
            method_kb_per_sec: tier.direct_method_kb_per_sec.map(|t| t.for_units(units)),
            queries_per_min: Some(tier.queries_per_min.for_units(units)),
            c2d_per_min: tier.c2d_per_min.map(|t| t.for_units(units)),
            daily_messages: Some(tier.daily_messages(units)),
            meter_bytes: tier.meter_bytes,
            shaping,
            cloud_to_device: tier.has_cloud_to_device(),
            tier: Some((sku, units)),
        }
    }
}

/// The size of the direct-method meter: a call counts one unit per started 4 KB of payload.
pub const METHOD_METER_BYTES: usize = 4096;

/// The hub's throttles and quota.
pub struct Throttles {
    pub limits: HubLimits,
    /// One bucket per [`Class`], `None` where unlimited.
    buckets: [Option<Bucket>; Class::COUNT],
    meters_today: AtomicU64,
    day: AtomicU64,
    /// Requests refused by any throttle.
    pub throttled: AtomicU64,
    /// Requests refused, per [`Class`].
    throttled_by: [AtomicU64; Class::COUNT],
}

/// Operation classes with their own throttle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Connect,
    DeviceToCloud,
    Registry,
    TwinRead,
    TwinUpdate,
    DirectMethod,
    Query,
}

impl Class {
    const COUNT: usize = 7;
    const ALL: [Class; Class::COUNT] = [
        Class::Connect,
        Class::DeviceToCloud,
        Class::Registry,
        Class::TwinRead,
        Class::TwinUpdate,
        Class::DirectMethod,
        Class::Query,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

fn utc_day() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() / 86_400)
}

impl Throttles {
    pub fn new(limits: HubLimits) -> Self {
        let shaping = limits.shaping;
        let bucket = |class: Class| match class {
            Class::Connect => limits.connections_per_sec.map(|r| Bucket::new(r, shaping)),
            Class::DeviceToCloud => limits.d2c_per_sec.map(|r| Bucket::new(r, shaping)),
            Class::Registry => limits.registry_per_sec.map(|r| Bucket::new(r, shaping)),
            Class::TwinRead => limits.twin_reads_per_sec.map(|r| Bucket::new(r, shaping)),
            Class::TwinUpdate => limits.twin_updates_per_sec.map(|r| Bucket::new(r, shaping)),
            // In 4 KB units per second.
            Class::DirectMethod => limits
                .method_kb_per_sec
                .map(|kb| Bucket::new(kb / (METHOD_METER_BYTES / 1024) as f64, shaping)),
            // Applied in minute ranges: a minute's worth of burst.
            Class::Query => limits
                .queries_per_min
                .map(|m| Bucket::with_burst(m / 60.0, m, shaping)),
        };
        Self {
            buckets: Class::ALL.map(bucket),
            limits,
            meters_today: AtomicU64::new(0),
            day: AtomicU64::new(utc_day()),
            throttled: AtomicU64::new(0),
            throttled_by: Default::default(),
        }
    }

    pub fn admit(&self, class: Class) -> Admission {
        self.admit_weighted(class, 1)
    }

    /// Admits a request costing `cost` units of `class`'s bucket (direct methods: 4 KB units).
    pub fn admit_weighted(&self, class: Class, cost: u32) -> Admission {
        let answer = self.buckets[class.index()]
            .as_ref()
            .map_or(Admission::After(Duration::ZERO), |b| {
                b.admit_weighted(Instant::now(), cost)
            });
        if matches!(answer, Admission::Refuse(_)) {
            self.throttled.fetch_add(1, Ordering::Relaxed);
            self.throttled_by[class.index()].fetch_add(1, Ordering::Relaxed);
        }
        answer
    }

    /// How many requests of `class` were refused.
    pub fn throttled(&self, class: Class) -> u64 {
        self.throttled_by[class.index()].load(Ordering::Relaxed)
    }

    /// True once today's message quota is spent.
    pub fn quota_spent(&self) -> bool {
        self.roll_day();
        self.limits
            .daily_messages
            .is_some_and(|max| self.meters_today.load(Ordering::Relaxed) >= max)
    }

    /// The size of one meter of the daily quota (4 KB; 0.5 KB on F1).
    pub fn meter_bytes(&self) -> u64 {
        self.limits.meter_bytes
    }

    /// Counts a message of `bytes` against the quota; false if it does not fit.
    pub fn charge_message(&self, bytes: usize) -> bool {
        self.roll_day();
        let meters = (bytes as u64).div_ceil(self.limits.meter_bytes).max(1);
        let before = self.meters_today.fetch_add(meters, Ordering::Relaxed);
        self.limits
            .daily_messages
            .is_none_or(|max| before + meters <= max)
    }

    fn roll_day(&self) {
        let today = utc_day();
        if self.day.swap(today, Ordering::Relaxed) != today {
            self.meters_today.store(0, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sku_table_matches_the_reference() {
        let s1 = HubLimits::for_sku(Sku::S1, 1, Duration::ZERO);
        assert_eq!(s1.connections_per_sec, Some(100.0));
        assert_eq!(s1.daily_messages, Some(400_000));
        assert!((s1.registry_per_sec.unwrap() - 100.0 / 60.0).abs() < 1e-9);
        let s1_10 = HubLimits::for_sku(Sku::S1, 10, Duration::ZERO);
        assert_eq!(s1_10.connections_per_sec, Some(120.0));
        let s3 = HubLimits::for_sku(Sku::S3, 2, Duration::ZERO);
        assert_eq!(s3.d2c_per_sec, Some(12_000.0));
        let f1 = HubLimits::for_sku(Sku::F1, 1, Duration::ZERO);
        assert_eq!((f1.daily_messages, f1.meter_bytes), (Some(8_000), 512));
        assert!(f1.cloud_to_device);
        let b2 = HubLimits::for_sku(Sku::B2, 2, Duration::ZERO);
        assert_eq!((b2.d2c_per_sec, b2.cloud_to_device), (Some(240.0), false));
        assert_eq!((b2.twin_reads_per_sec, b2.method_kb_per_sec), (None, None));
        assert_eq!(
            (s1.twin_reads_per_sec, s1.twin_updates_per_sec),
            (Some(100.0), Some(50.0))
        );
        assert_eq!(
            (s1.method_kb_per_sec, s1.queries_per_min),
            (Some(160.0), Some(20.0))
        );
    }

    #[test]
    fn methods_are_metered_in_4_kb_units_and_queries_burst_a_minute() {
        let mut limits = HubLimits::unlimited();
        limits.method_kb_per_sec = Some(16.0); // 4 units per second, a burst of 4
        limits.queries_per_min = Some(3.0);
        limits.shaping = Duration::ZERO;
        let t = Throttles::new(limits);
        assert_eq!(
            t.admit_weighted(Class::DirectMethod, 3),
            Admission::After(Duration::ZERO)
        );
        assert_eq!(
            t.admit_weighted(Class::DirectMethod, 1),
            Admission::After(Duration::ZERO)
        );
        assert!(matches!(
            t.admit_weighted(Class::DirectMethod, 1),
            Admission::Refuse(_)
        ));
        for _ in 0..3 {
            assert_eq!(t.admit(Class::Query), Admission::After(Duration::ZERO));
        }
        assert!(matches!(t.admit(Class::Query), Admission::Refuse(_)));
        assert_eq!(t.throttled(Class::DirectMethod), 1);
        assert_eq!(t.throttled(Class::Query), 1);
        assert_eq!(t.throttled(Class::TwinRead), 0);
        assert_eq!(t.throttled.load(Ordering::Relaxed), 2);
        assert_eq!(t.admit(Class::TwinRead), Admission::After(Duration::ZERO));
    }

    #[test]
    fn units_past_the_tiers_maximum_count_as_the_maximum() {
        let f1 = HubLimits::for_sku(Sku::F1, 5, Duration::ZERO);
        assert_eq!(f1.registry_per_sec, Some(100.0 / 60.0));
        let s3 = HubLimits::for_sku(Sku::S3, 50, Duration::ZERO);
        assert_eq!(s3.connections_per_sec, Some(60_000.0));
    }

    #[test]
    fn quota_counts_in_meters() {
        let mut limits = HubLimits::for_sku(Sku::F1, 1, Duration::ZERO);
        limits.daily_messages = Some(3);
        let t = Throttles::new(limits);
        assert!(t.charge_message(100)); // 1 meter of 512 B
        assert!(t.charge_message(1024)); // 2 meters
        assert!(t.quota_spent());
        assert!(!t.charge_message(1));
    }
}
