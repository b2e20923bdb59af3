//! The plan's lines for the operator's events: cloud-to-device messages, direct methods, desired
//! properties (twin updates) and registry queries, each against its throttle, and refused
//! outright by a basic tier, which has no cloud-to-device features.

use super::model::{Figures, HubTier, Line, Verdict, against_throttle, line, number};
use crate::scenario::events::Selection;
use crate::scenario::{Action, Scenario};

/// A direct method's call is metered at 4 KB at least (reference §5.1).
const METHOD_METER_KB: f64 = 4.0;

pub(super) fn lines(scenario: &Scenario, f: &Figures, tier: Option<HubTier>, out: &mut Vec<Line>) {
    let mut totals = Totals::default();
    for event in &scenario.events {
        let Some(action) = event.value.action() else {
            continue;
        };
        match action {
            Action::C2d(e) => totals.add_c2d(targets(e.devices, f), e.rate.map(|r| r.0)),
            Action::Method(e) => {
                let kb = (e.payload.to_string().len() as f64 / 1024.0 / METHOD_METER_KB).ceil()
                    * METHOD_METER_KB;
                totals.add_method(targets(e.devices, f), e.rate.map(|r| r.0), kb);
            }
            Action::Desired(e) => totals.add_desired(targets(e.devices, f), e.rate.map(|r| r.0)),
            Action::Query(q) => {
                let runs = match q.every {
                    Some(every) if every.as_secs_f64() > 0.0 => {
                        (f.duration / every.as_secs_f64()).floor().max(1.0)
                    }
                    _ => 1.0,
                };
                totals.queries += runs;
                let per_min = q.every.map_or(1.0, |e| 60.0 / e.as_secs_f64().max(1e-3));
                totals.queries_per_min = totals.queries_per_min.max(per_min);
            }
            Action::Revoke { .. } | Action::Migrate(_) => {}
        }
    }
    totals.push(tier, out);
}

/// How many devices an event reaches, at most (of the whole fleet).
fn targets(selection: Option<Selection>, f: &Figures) -> f64 {
    selection.map_or(f.devices as f64, |s| s.of(f.devices as usize) as f64)
}

/// Event traffic summed over the scenario; rates are each kind's highest (events of a kind do
/// not usually overlap, and the throttle is what one of them meets).
#[derive(Default)]
struct Totals {
    c2d: f64,
    c2d_per_sec: f64,
    methods: f64,
    method_kb_per_sec: f64,
    desired: f64,
    desired_per_sec: f64,
    queries: f64,
    queries_per_min: f64,
}

/// An event without a rate sends to all its devices at once: planned as all in one second.
fn rate_or_burst(rate: Option<f64>, n: f64) -> f64 {
    rate.unwrap_or(n)
}

impl Totals {
    fn add_c2d(&mut self, n: f64, rate: Option<f64>) {
        self.c2d += n;
        self.c2d_per_sec = self.c2d_per_sec.max(rate_or_burst(rate, n));
    }

    fn add_method(&mut self, n: f64, rate: Option<f64>, kb: f64) {
        self.methods += n;
        self.method_kb_per_sec = self.method_kb_per_sec.max(rate_or_burst(rate, n) * kb);
    }

    fn add_desired(&mut self, n: f64, rate: Option<f64>) {
        self.desired += n;
        self.desired_per_sec = self.desired_per_sec.max(rate_or_burst(rate, n));
    }

    fn push(&self, tier: Option<HubTier>, out: &mut Vec<Line>) {
        if self.c2d > 0.0 {
            let mut l = line(
                "hub: cloud-to-device sends",
                Some(self.c2d_per_sec),
                Some(self.c2d),
            );
            judge(&mut l, tier, |t| {
                t.limits().c2d_per_min.map(|c| c.for_units(t.units) / 60.0)
            });
            out.push(l);
        }
        if self.methods > 0.0 {
            let mut l = line(
                "hub: direct methods (KB metered)",
                Some(self.method_kb_per_sec),
                None,
            );
            l.total = Some(self.methods);
            l.note = "total is calls".into();
            judge(&mut l, tier, |t| {
                t.limits()
                    .direct_method_kb_per_sec
                    .map(|k| k.for_units(t.units))
            });
            out.push(l);
        }
        if self.desired > 0.0 {
            let mut l = line(
                "hub: twin updates (desired)",
                Some(self.desired_per_sec),
                Some(self.desired),
            );
            judge(&mut l, tier, |t| {
                t.limits()
                    .twin_updates_per_sec
                    .map(|k| k.for_units(t.units))
            });
            out.push(l);
        }
        if self.queries > 0.0 {
            let mut l = line(
                "hub: registry queries",
                Some(self.queries_per_min / 60.0),
                Some(self.queries),
            );
            judge(&mut l, tier, |t| {
                Some(t.limits().queries_per_min.for_units(t.units) / 60.0)
            });
            if let Some(t) = tier {
                let per_min = t.limits().queries_per_min.for_units(t.units);
                l.limit = format!("{} /min ({} x {})", number(per_min), t.sku, t.units);
            }
            out.push(l);
        }
    }
}

/// `limit` is the tier's throttle per second, `None` when the tier lacks the feature.
fn judge(l: &mut Line, tier: Option<HubTier>, limit: impl Fn(&HubTier) -> Option<f64>) {
    let Some(t) = tier else {
        l.limit = "tier unknown".into();
        l.verdict = Verdict::Unknown;
        return;
    };
    match limit(&t) {
        Some(per_sec) => against_throttle(l, per_sec, &t),
        None => {
            l.limit = format!("not on {} (basic tier)", t.sku);
            l.verdict = Verdict::Exceeds;
            l.note = "basic tiers have no cloud-to-device messages, twins or methods".into();
        }
    }
}
