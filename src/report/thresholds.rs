//! Thresholds (parsed in `scenario::thresholds`) checked against a report: each gives PASS or
//! FAIL with the value it saw. A latency threshold on a phase with no samples fails: a run that
//! never issued a certificate has not shown that issuance is fast.

use super::error::ReportError;
use super::model::Report;
pub use super::model::ThresholdResult;
use super::stats::HistogramMap;
use crate::metrics::Outcome;
use crate::scenario::thresholds::{Metric, Stat, Threshold};

/// Checks every threshold against `report`.
pub fn evaluate(
    thresholds: &[Threshold],
    report: &Report,
) -> Result<Vec<ThresholdResult>, ReportError> {
    let (latency, _) = report.histograms()?;
    let operations: u64 = latency.values().map(|h| h.len()).sum();
    let failures: u64 = latency
        .iter()
        .filter(|((_, outcome), _)| *outcome != Outcome::Ok)
        .map(|(_, h)| h.len())
        .sum();
    let figures = Figures {
        report,
        latency: &latency,
        operations,
        failures,
    };
    let results = thresholds
        .iter()
        .map(|t| match figures.seen(&t.metric) {
            Some((value, shown)) => ThresholdResult {
                threshold: t.text().into(),
                pass: t.op.holds(value, t.limit),
                actual: shown,
            },
            None => ThresholdResult {
                threshold: t.text().into(),
                pass: false,
                actual: match t.metric {
                    Metric::ErrorRate => "no operations".into(),
                    _ => "no samples".into(),
                },
            },
        })
        .collect();
    Ok(results)
}

/// What thresholds are checked against.
struct Figures<'a> {
    report: &'a Report,
    latency: &'a HistogramMap,
    /// Operations recorded, and those that did not end `ok`.
    operations: u64,
    failures: u64,
}

impl Figures<'_> {
    /// The value a metric has in the report, with how to show it; `None` when there is none.
    fn seen(&self, metric: &Metric) -> Option<(f64, String)> {
        let count = |n: u64| (n as f64, n.to_string());
        let certificates = self.report.certificates.as_ref();
        match *metric {
            Metric::Latency {
                phase,
                outcome,
                stat,
            } => self.latency.get(&(phase, outcome)).map(|h| {
                let ms = match stat {
                    Stat::Quantile(q) => h.value_at_quantile(q) as f64 / 1000.0,
                    Stat::Max => h.highest_equivalent(h.max()) as f64 / 1000.0,
                    Stat::Mean => h.mean() / 1000.0,
                };
                (ms, format!("{ms:.2} ms"))
            }),
            Metric::ErrorRate => (self.operations > 0).then(|| {
                let (failures, operations) = (self.failures, self.operations);
                let rate = failures as f64 / operations as f64;
                let shown = format!("{:.3}% ({failures} of {operations})", rate * 100.0);
                (rate, shown)
            }),
            Metric::Errors => Some(count(self.failures)),
            Metric::FailedDevices => Some(count(self.report.devices.failed)),
            Metric::MessagesFailed => Some(count(self.report.messages.failed)),
            Metric::ExpiredBeforeRenewal => {
                certificates.map(|c| count(c.health.expired_before_renewal))
            }
            Metric::MessagesLost => certificates
                .filter(|c| c.swap.devices_compared > 0)
                .map(|c| {
                    let n = c.swap.qos1_lost;
                    let shown = format!("{n} (over {} devices)", c.swap.devices_compared);
                    (n as f64, shown)
                }),
            // Every QoS 1 message sent is acked or lost for a cause; none sent is 0 unaccounted.
            Metric::MessagesUnaccounted => {
                Some(self.report.qos1.as_ref().map_or((0.0, "0".into()), |q| {
                    let n = q.unaccounted;
                    (n as f64, format!("{n} (of {} QoS 1 messages)", q.sent))
                }))
            }
            Metric::RevokedOnline => {
                certificates.map(|c| count(c.revocation.as_ref().map_or(0, |r| r.still_online)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{Phase, Recorder};
    use std::time::{Duration, Instant};

    fn check(report: &Report, text: &str) -> ThresholdResult {
        let t: Threshold = text.parse().unwrap();
        evaluate(&[t], report).unwrap().remove(0)
    }

    #[test]
    fn thresholds_pass_and_fail_on_the_report() {
        let r = Recorder::new();
        let t0 = Instant::now();
        // ca.issue: 1..=100 ms; 1 throttled out of 1000 operations in all.
        for ms in 1..=100u64 {
            r.record(
                Phase::CaIssue,
                Outcome::Ok,
                t0,
                t0 + Duration::from_millis(ms),
            );
        }
        for _ in 0..899 {
            r.record(
                Phase::Keygen,
                Outcome::Ok,
                t0,
                t0 + Duration::from_micros(50),
            );
        }
        r.record(
            Phase::CaIssue,
            Outcome::Throttled,
            t0,
            t0 + Duration::from_millis(3),
        );
        let mut report = Report::new("t", "embedded", String::new(), 1.0, r.snapshot()).unwrap();
        report.devices.failed = 2;

        let pass = |t: &str| assert!(check(&report, t).pass, "{t}: {:?}", check(&report, t));
        let fail = |t: &str| assert!(!check(&report, t).pass, "{t}: {:?}", check(&report, t));
        pass("ca.issue p99 < 100ms");
        fail("ca.issue p99 < 98ms");
        pass("ca.issue p50 <= 50.1ms");
        pass("ca.issue max >= 100ms");
        pass("ca.issue mean < 51ms");
        fail("ca.issue mean < 50ms");
        pass("ca.issue/throttled max < 4ms");
        pass("errors rate <= 0.1%");
        fail("errors rate < 0.1%");
        pass("errors == 1");
        fail("failed_devices == 0");
        pass("failed_devices < 3");
        pass("messages_failed == 0");

        let none = check(&report, "ca.renew p99 < 1s");
        assert!(!none.pass);
        assert_eq!(none.actual, "no samples");
        assert_eq!(check(&report, "ca.issue p99 < 500ms").actual, "99.01 ms");
        assert_eq!(
            check(&report, "errors rate < 1%").actual,
            "0.100% (1 of 1000)"
        );
    }
}
