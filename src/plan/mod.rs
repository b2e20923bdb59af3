//! `fleetsim plan`: what a scenario will ask of the CA and the hub before it runs, set against
//! the hub tier's published throttles and daily quota (`iothub::quotas`, reference
//! `iothub-protocol.md` §5). Each line is a rate or a count with the limit it meets: it fits,
//! it is throttled (the hub shapes, then refuses with 429, and the run slows), or it exceeds a
//! quota or a cap (requests fail). `fleetsim run` refuses a remote plan with an exceeding line.
//!
//! Pure computation over the scenario; [`check`] adds what a live hub and CA say about
//! themselves (the hub's SKU and units, the CA list).

mod events;
mod text;

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
    fn limits(&self) -> &'static TierLimits {
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

/// The tier a scenario names for its hub (embedded `hub.sku`, remote `iothub.sku`).
pub fn scenario_tier(scenario: &Scenario) -> Option<HubTier> {
    match &scenario.target.value {
        Target::Embedded(e) => e.hub.sku.map(|sku| HubTier {
            sku,
            units: e.hub.units.get(),
        }),
        Target::Remote(r) => r.iothub.sku.map(|sku| HubTier {
            sku,
            units: r.iothub.units.get(),
        }),
    }
}

/// Plans `scenario` against `tier` (the scenario's own when `None` is given and it names one).
pub fn plan(scenario: &Scenario, tier: Option<HubTier>, tier_source: &str) -> Plan {
    let figures = Figures::of(scenario);
    let mut lines = Vec::new();
    ca_lines(&figures, &mut lines);
    hub_lines(&figures, tier, &mut lines);
    events::lines(scenario, &figures, tier, &mut lines);
    process_lines(&figures, &mut lines);
    Plan {
        scenario: scenario.name.clone(),
        remote: matches!(scenario.target.value, Target::Remote(_)),
        devices: figures.devices,
        duration_secs: figures.duration,
        tier,
        tier_source: tier_source.to_string(),
        lines,
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
    fn of(scenario: &Scenario) -> Self {
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

fn line(what: &str, per_second: Option<f64>, total: Option<f64>) -> Line {
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

fn ca_lines(f: &Figures, lines: &mut Vec<Line>) {
    let mut enrol = line(
        "ca: enrolments",
        Some(f.arrivals_per_sec),
        Some(f.devices as f64),
    );
    if !f.paced {
        enrol.note = "closed arrival model: as fast as devices finish".into();
    }
    lines.push(enrol);
    let mut renew = line(
        "ca: renewals",
        Some(f.renewals_per_sec),
        Some(f.renewals_total),
    );
    renew.note = "once the fleet is up".into();
    lines.push(renew);
    let mut issued = line(
        "ca: certificates issued",
        None,
        Some(f.devices as f64 + f.renewals_total),
    );
    issued.note = "each stays at the CA (revoke them with `fleetsim cleanup --revoke`)".into();
    lines.push(issued);
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

fn unknown(l: &mut Line, source: &str) {
    l.limit = "tier unknown".into();
    l.verdict = Verdict::Unknown;
    l.note = source.to_string();
}

fn hub_lines(f: &Figures, tier: Option<HubTier>, lines: &mut Vec<Line>) {
    let no_tier = "name the hub's tier (iothub.sku, iothub.units) or use --check";
    let mut identities = line("hub: identities created", None, Some(f.devices as f64));
    if !f.via_registry {
        identities.note = "created by DPS".into();
    }
    identities.limit = format!("{} per hub", number(REGISTRY_CAP as f64));
    if f.devices > REGISTRY_CAP {
        identities.verdict = Verdict::Exceeds;
        identities.note = format!("{} over the cap", f.devices - REGISTRY_CAP);
    }
    lines.push(identities);
    if f.via_registry {
        lines.push(registry_line(f, tier, no_tier));
    }
    let rates = [
        ("hub: new connections", f.arrivals_per_sec),
        ("hub: device-to-cloud sends", f.messages_per_sec),
    ];
    for (what, rate) in rates {
        let total = (what == "hub: device-to-cloud sends").then_some(rate * f.duration);
        let mut l = line(what, Some(rate), total);
        match &tier {
            Some(t) => {
                let throttle = match what {
                    "hub: new connections" => t.limits().new_connections_per_sec,
                    _ => t.limits().d2c_per_sec,
                };
                against_throttle(&mut l, throttle.for_units(t.units), t);
            }
            None => unknown(&mut l, no_tier),
        }
        lines.push(l);
    }
    lines.push(daily_quota_line(f, tier, no_tier));
}

/// Registry operations: one `PUT` per device as it arrives, or one bulk call per 100 devices,
/// all made in a row before the first arrival (so they meet the per-minute budget at once).
fn registry_line(f: &Figures, tier: Option<HubTier>, no_tier: &str) -> Line {
    let mut l = match f.bulk {
        true => {
            let calls = f.devices.div_ceil(100) as f64;
            let mut l = line(
                "hub: registry operations (bulk, 100 per call)",
                None,
                Some(calls),
            );
            l.per_minute = Some(calls);
            l
        }
        false => line(
            "hub: registry operations (one per device)",
            Some(f.arrivals_per_sec),
            Some(f.devices as f64),
        ),
    };
    let Some(t) = tier else {
        unknown(&mut l, no_tier);
        return l;
    };
    let per_min = t.limits().registry_ops_per_min.for_units(t.units);
    match l.per_second {
        Some(_) => against_throttle(&mut l, per_min / 60.0, &t),
        None if l.per_minute.is_some_and(|n| n > per_min) => {
            l.verdict = Verdict::Throttled;
            l.note = format!("takes {}", minutes(60.0 * l.total.unwrap_or(0.0) / per_min));
        }
        None => {}
    }
    l.limit = format!("{} /min ({} x {})", number(per_min), t.sku, t.units);
    l
}

/// Device-to-cloud messages in the tier's meters against its daily quota (counted per UTC day).
fn daily_quota_line(f: &Figures, tier: Option<HubTier>, no_tier: &str) -> Line {
    let day = f.duration.min(86_400.0);
    let mut l = line(
        "hub: messages against the daily quota",
        Some(f.meters_per_sec),
        Some(f.meters_per_sec * day),
    );
    let Some(t) = tier else {
        unknown(&mut l, no_tier);
        return l;
    };
    let quota = t.limits().daily_messages(t.units) as f64;
    let meter_kb = t.limits().meter_bytes as f64 / 1024.0;
    l.limit = format!(
        "{} a day in {} KB meters ({} x {})",
        number(quota),
        meter_kb,
        t.sku,
        t.units
    );
    let per_day = f.meters_per_sec * 86_400.0;
    if f.meters_per_sec <= 0.0 || per_day <= quota {
        return l;
    }
    let spent_after = quota / f.meters_per_sec;
    if f.meters_per_sec * day > quota {
        l.verdict = Verdict::Exceeds;
        l.note = format!(
            "{} a day: the quota is spent after {}, then every request fails (403002)",
            number(per_day),
            minutes(spent_after)
        );
    } else {
        l.note = format!(
            "this run fits, but the rate spends the quota after {}",
            minutes(spent_after)
        );
    }
    l
}

fn process_lines(f: &Figures, lines: &mut Vec<Line>) {
    let mut fds = line("process: open files", None, Some(f.open_files as f64));
    let limit = crate::rlimit::raise_nofile().map(|l| l.hard).ok();
    match limit {
        Some(hard) => {
            fds.limit = format!("{} (hard limit here)", number(hard as f64));
            if f.open_files > hard {
                fds.verdict = Verdict::Exceeds;
                fds.note = "split the fleet into shards (fleetsim plan-shards)".into();
            }
        }
        None => fds.limit = "unreadable here".into(),
    }
    lines.push(fds);
    let mut ports = line(
        "process: source ports to the hub",
        None,
        Some(f.hub_connections as f64),
    );
    ports.limit = format!(
        "{} per destination address",
        number(sizing::PORTS_PER_ADDRESS as f64)
    );
    if f.hub_connections > sizing::PORTS_PER_ADDRESS {
        ports.verdict = Verdict::Exceeds;
        ports.note = "split the fleet into shards (fleetsim plan-shards)".into();
    }
    lines.push(ports);
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

fn minutes(secs: f64) -> String {
    match secs < 3600.0 {
        true => format!("{:.1} min", secs / 60.0),
        false => format!("{:.1} h", secs / 3600.0),
    }
}

#[cfg(test)]
mod tests;
