//! `fleetsim plan`: what a scenario will ask of the CA and the hub before it runs, set against
//! the hub tier's published throttles and daily quota (`iothub::quotas`, reference
//! `iothub-protocol.md` §5). Each line is a rate or a count with the limit it meets: it fits,
//! it is throttled (the hub shapes, then refuses with 429, and the run slows), or it exceeds a
//! quota or a cap (requests fail). `fleetsim run` refuses a remote plan with an exceeding line.
//!
//! Pure computation over the scenario; [`check`] adds what a live hub and CA say about
//! themselves (the hub's SKU and units, the CA list).

mod events;
mod model;
mod text;

pub use model::{HubTier, Line, Plan, REGISTRY_CAP, Verdict, number};

use crate::distributed::sizing;
use crate::scenario::{Scenario, Target};
use model::{Figures, against_throttle, line, minutes};

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
    issued.note = "each stays at the CA until it expires (run with --state, then `fleetsim cleanup --state FILE --revoke` revokes them)".into();
    lines.push(issued);
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

#[cfg(test)]
mod tests;
