//! The plan's model: a hub's tier, the verdict of a line, a line, the plan; and the figures of
//! a scenario the lines are computed from, with the helpers every line uses.

use crate::distributed::sizing;
use crate::iothub::quotas::{Sku, TierLimits};
use crate::scenario::{Provisioning, Registration, Scenario, Target};

/// The most devices and modules one hub holds (reference §5.1).
pub const REGISTRY_CAP: u64 = 1_000_000;

/// A hub's tier and unit count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HubTier {
    pub sku: Sku,
    pub units: u32,
}

impl HubTier {
    pub(super) fn limits(&self) -> &'static TierLimits {
        self.sku.limits()
    }
}

/// How a planned figure meets its limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Within the limit (or no limit applies).
    Fits,
    /// Above a rate throttle: the hub queues, then refuses with 429; the run is slower than asked.
    Throttled,
    /// Above a quota or cap: requests fail (403002 for the daily quota).
    Exceeds,
    /// Not known without the hub's tier.
    Unknown,
}

impl Verdict {
    pub fn word(self) -> &'static str {
        match self {
            Verdict::Fits => "fits",
            Verdict::Throttled => "throttled",
            Verdict::Exceeds => "EXCEEDS",
            Verdict::Unknown => "unknown",
        }
    }
}

/// One figure of the plan.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Line {
    /// What is counted, e.g. `hub: new connections`.
    pub what: String,
    /// Per second at the peak (for rates).
    pub per_second: Option<f64>,
    /// Per minute at the peak (for rates).
    pub per_minute: Option<f64>,
    /// Over the whole run.
    pub total: Option<f64>,
    /// The limit, in words with its number (`100/s (S1 × 1)`).
    pub limit: String,
    pub verdict: Verdict,
    /// Why, with the number it exceeds or when (`quota spent after 13.3 min`).
    pub note: String,
}

/// What a run of a scenario will do, figure by figure.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Plan {
    pub scenario: String,
    /// Whether the target is remote (a real hub, or `fleetsim emulate`): only then does `run`
    /// insist on a plan that fits.
    pub remote: bool,
    pub devices: u64,
    pub duration_secs: f64,
    #[serde(serialize_with = "tier_name")]
    pub tier: Option<HubTier>,
    /// Where the tier came from (`scenario`, `hub`, or why it is unknown).
    pub tier_source: String,
    pub lines: Vec<Line>,
}

fn tier_name<S: serde::Serializer>(t: &Option<HubTier>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_str(&format!("{} x {}", t.sku, t.units)),
        None => s.serialize_none(),
    }
}

impl Plan {
    /// The lines over a quota or a cap.
    pub fn exceeding(&self) -> impl Iterator<Item = &Line> {
        self.lines.iter().filter(|l| l.verdict == Verdict::Exceeds)
    }

    pub fn throttled(&self) -> impl Iterator<Item = &Line> {
        self.lines
            .iter()
            .filter(|l| l.verdict == Verdict::Throttled)
    }
}

/// The scenario's traffic, as the plan's lines need it.
pub(crate) struct Figures {
    pub devices: u64,
    /// Run length in real seconds.
    pub duration: f64,
    /// Arrivals per second at the peak (enrolments, registrations, connects); for a closed
    /// model, every device at once.
    pub arrivals_per_sec: f64,
    pub paced: bool,
    pub messages_per_sec: f64,
    /// Daily-quota meters per second (messages weighed in the tier's 4 KB meters).
    pub meters_per_sec: f64,
    /// Renewals per second once the fleet is up, and over the run.
    pub renewals_per_sec: f64,
    pub renewals_total: f64,
    pub bulk: bool,
    /// Identities fleetsim creates (none with DPS: DPS creates them).
    pub via_registry: bool,
    pub open_files: u64,
    pub hub_connections: u64,
}

impl Figures {
    pub(super) fn of(scenario: &Scenario) -> Self {
        let sizing = sizing::plan(scenario, u64::MAX);
        let devices = sizing.devices;
        let duration = scenario.duration.as_secs_f64();
        let (arrivals_per_sec, paced) = match sizing.peak_arrivals_per_second {
            Some(p) => (p, true),
            None => (devices as f64, false),
        };
        let period = renewal_period_secs(scenario);
        let renewals_per_sec = period.map_or(0.0, |p| devices as f64 / p);
        let renewals_total = period.map_or(0.0, |p| devices as f64 * (duration / p).floor());
        Figures {
            devices,
            duration,
            arrivals_per_sec,
            paced,
            messages_per_sec: sizing.messages_per_second,
            meters_per_sec: sizing.meters_per_day / 86_400.0,
            renewals_per_sec,
            renewals_total,
            bulk: scenario.fleet.registration == Registration::Bulk,
            via_registry: scenario.fleet.provisioning() == Provisioning::Registry,
            open_files: sizing.open_files,
            hub_connections: sizing.hub_connections,
        }
    }
}

/// Real seconds between a device's renewals: `renew_at` of the certificate's lifetime, the day
/// compressed by `time_scale` on embedded runs (a remote CA issues real days).
fn renewal_period_secs(scenario: &Scenario) -> Option<f64> {
    let policy = &scenario.certificate;
    let day = match (&scenario.target.value, &scenario.time_scale) {
        (Target::Embedded(_), Some(scale)) => scale.value.as_secs_f64(),
        _ => 86_400.0,
    };
    let period = f64::from(policy.validity_days.get()) * day * policy.renew_at.fraction();
    (period > 0.0).then_some(period)
}

pub(super) fn line(what: &str, per_second: Option<f64>, total: Option<f64>) -> Line {
    Line {
        what: what.into(),
        per_second,
        per_minute: per_second.map(|r| r * 60.0),
        total,
        limit: "none published".into(),
        verdict: Verdict::Fits,
        note: String::new(),
    }
}

/// Sets `l`'s limit and verdict for a rate against a throttle.
pub(crate) fn against_throttle(l: &mut Line, limit_per_sec: f64, tier: &HubTier) {
    l.limit = format!(
        "{} /s ({} x {})",
        number(limit_per_sec),
        tier.sku,
        tier.units
    );
    match l.per_second {
        Some(r) if r > limit_per_sec * 1.000_001 => {
            l.verdict = Verdict::Throttled;
            l.note = format!(
                "{:.1}x the throttle: the hub queues, then refuses with 429",
                r / limit_per_sec
            );
        }
        _ => l.verdict = Verdict::Fits,
    }
}

/// A number with thousands separators and at most one decimal.
pub fn number(x: f64) -> String {
    let rounded = if x.fract().abs() < 0.05 || x.abs() >= 1000.0 {
        format!("{:.0}", x)
    } else {
        format!("{:.1}", x)
    };
    let (int, frac) = rounded.split_once('.').unwrap_or((&rounded, ""));
    let (sign, digits) = int.strip_prefix('-').map_or(("", int), |d| ("-", d));
    let mut grouped = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            grouped.push(',');
        }
        grouped.push(c);
    }
    match frac.is_empty() {
        true => format!("{sign}{grouped}"),
        false => format!("{sign}{grouped}.{frac}"),
    }
}

pub(super) fn minutes(secs: f64) -> String {
    match secs < 3600.0 {
        true => format!("{:.1} min", secs / 60.0),
        false => format!("{:.1} h", secs / 3600.0),
    }
}
