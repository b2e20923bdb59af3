//! Pass/fail conditions on a run's results, written in the scenario as strings:
//!
//! ```text
//! ca.issue p99 < 500ms            latency of a phase (outcome `ok` unless written phase/outcome):
//! mqtt.publish/ok p50 <= 20ms       p50, p90, p99, p99.9, any pN, max or mean; units as durations
//! errors rate < 0.1%              non-ok operations / all recorded operations
//! errors < 10                     non-ok operations
//! failed_devices == 0             devices that gave up
//! messages_failed == 0            telemetry messages that failed
//! expired_before_renewal == 0     devices whose certificate expired before a renewal succeeded
//! messages_lost == 0              QoS 1 messages the devices sent that the hub never received
//! revoked_online == 0             revoked devices still connected at the end of the run
//! messages_unaccounted == 0       QoS 1 messages neither acknowledged nor lost for a known cause
//! ```
//!
//! Comparisons: `<`, `<=`, `==`, `>=`, `>`. Each threshold parses in its `Deserialize` impl, so a
//! bad one is reported by the YAML loader with its line and column. Evaluation against a report
//! lives in `report::thresholds`.

use std::borrow::Cow;
use std::fmt;
use std::str::FromStr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::units::Span;
use crate::metrics::{Outcome, Phase};

/// One threshold, as written and as understood.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    text: String,
    pub metric: Metric,
    pub op: Comparison,
    /// Milliseconds for latencies, a fraction (0.001 for 0.1%) for rates, else a count.
    pub limit: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Metric {
    Latency {
        phase: Phase,
        outcome: Outcome,
        stat: Stat,
    },
    ErrorRate,
    Errors,
    FailedDevices,
    MessagesFailed,
    ExpiredBeforeRenewal,
    MessagesLost,
    RevokedOnline,
    MessagesUnaccounted,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Stat {
    /// A quantile in (0, 1].
    Quantile(f64),
    Max,
    Mean,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    Less,
    LessOrEqual,
    Equal,
    GreaterOrEqual,
    Greater,
}

impl Comparison {
    pub fn holds(self, actual: f64, limit: f64) -> bool {
        match self {
            Comparison::Less => actual < limit,
            Comparison::LessOrEqual => actual <= limit,
            Comparison::Equal => actual == limit,
            Comparison::GreaterOrEqual => actual >= limit,
            Comparison::Greater => actual > limit,
        }
    }
}

const HELP: &str = "expected `<phase>[/<outcome>] <p50|p90|p99|p99.9|pN|max|mean> <op> <duration>`, \
`errors rate <op> <percent>`, or `<counter> <op> <count>` with <counter> one of errors, \
failed_devices, messages_failed, expired_before_renewal, messages_lost, revoked_online, messages_unaccounted; \
<op> one of <, <=, ==, >=, >";

impl Threshold {
    /// The threshold as written.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Threshold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

fn comparison(s: &str) -> Option<Comparison> {
    Some(match s {
        "<" => Comparison::Less,
        "<=" => Comparison::LessOrEqual,
        "==" => Comparison::Equal,
        ">=" => Comparison::GreaterOrEqual,
        ">" => Comparison::Greater,
        _ => return None,
    })
}

fn stat(s: &str) -> Option<Stat> {
    match s {
        "max" => Some(Stat::Max),
        "mean" => Some(Stat::Mean),
        // p50, p99, p99.9, p999 (a common spelling of p99.9) ...
        _ => {
            let digits = s.strip_prefix('p')?;
            let percent: f64 = match digits {
                "999" => 99.9,
                "9999" => 99.99,
                d => d.parse().ok()?,
            };
            // 99.9 / 100 is 0.9990000000000001 in floating point, which would move the
            // quantile's rank up by one in a histogram of 10,000; dividing exact integers gives
            // the double nearest to 0.999.
            let quantile = (percent * 1e6).round() / 1e8;
            (percent > 0.0 && percent <= 100.0).then_some(Stat::Quantile(quantile))
        }
    }
}

fn count(s: &str, what: &str) -> Result<f64, String> {
    s.parse::<u64>()
        .map(|n| n as f64)
        .map_err(|_| format!("{what}: {s:?} is not a whole number"))
}

impl FromStr for Threshold {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let bad = |why: String| format!("invalid threshold {text:?}: {why}");
        let words: Vec<&str> = text.split_whitespace().collect();
        let (metric, op, limit) = match words.as_slice() {
            ["errors", "rate", op, limit] => {
                let value = limit
                    .strip_suffix('%')
                    .and_then(|v| v.trim().parse::<f64>().ok())
                    .filter(|v| (0.0..=100.0).contains(v))
                    .ok_or_else(|| bad(format!("{limit:?} is not a percentage such as 0.1%")))?;
                (Metric::ErrorRate, *op, value / 100.0)
            }
            ["errors", op, limit] => (Metric::Errors, *op, count(limit, "errors").map_err(bad)?),
            ["failed_devices", op, limit] => (
                Metric::FailedDevices,
                *op,
                count(limit, "failed_devices").map_err(bad)?,
            ),
            ["messages_failed", op, limit] => (
                Metric::MessagesFailed,
                *op,
                count(limit, "messages_failed").map_err(bad)?,
            ),
            [
                name @ ("expired_before_renewal"
                | "messages_lost"
                | "revoked_online"
                | "messages_unaccounted"),
                op,
                limit,
            ] => {
                let metric = match *name {
                    "expired_before_renewal" => Metric::ExpiredBeforeRenewal,
                    "messages_lost" => Metric::MessagesLost,
                    "messages_unaccounted" => Metric::MessagesUnaccounted,
                    _ => Metric::RevokedOnline,
                };
                (metric, *op, count(limit, name).map_err(bad)?)
            }
            [target, stat_word, op, limit] => {
                let (phase_name, outcome_name) = target.split_once('/').unwrap_or((target, "ok"));
                let phase = Phase::from_name(phase_name).ok_or_else(|| {
                    let names: Vec<_> = Phase::ALL.iter().map(|p| p.name()).collect();
                    bad(format!(
                        "unknown phase {phase_name:?}; phases are {}",
                        names.join(", ")
                    ))
                })?;
                let outcome = Outcome::from_name(outcome_name).ok_or_else(|| {
                    bad(format!(
                        "unknown outcome {outcome_name:?}; outcomes are ok, error, timeout, throttled, rejected"
                    ))
                })?;
                let stat = stat(stat_word).ok_or_else(|| {
                    bad(format!(
                        "unknown statistic {stat_word:?}; use p50, p90, p99, p99.9, pN, max or mean"
                    ))
                })?;
                let limit: Span = limit.parse().map_err(bad)?;
                let metric = Metric::Latency {
                    phase,
                    outcome,
                    stat,
                };
                (metric, *op, limit.0.as_secs_f64() * 1000.0)
            }
            _ => return Err(bad(HELP.into())),
        };
        let op = comparison(op).ok_or_else(|| bad(format!("unknown comparison {op:?}; {HELP}")))?;
        Ok(Threshold {
            text: words.join(" "),
            metric,
            op,
            limit,
        })
    }
}

impl JsonSchema for Threshold {
    fn schema_name() -> Cow<'static, str> {
        "Threshold".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A condition on the run's results: a phase's latency (ca.issue p99 < \
                            500ms, mqtt.publish/timeout max <= 2s: pN, max or mean), errors rate \
                            < 0.1%, errors < 10, failed_devices == 0, messages_failed == 0, \
                            expired_before_renewal == 0, messages_lost == 0 or revoked_online == \
                            0; comparisons <, <=, ==, >=, >.",
            "type": "string",
            "pattern": r"^\s*(errors\s+rate|errors|failed_devices|messages_failed|expired_before_renewal|messages_lost|messages_unaccounted|revoked_online|[a-z0-9_.]+(/[a-z]+)?\s+(p[0-9.]+|max|mean))\s*(<|<=|==|>=|>)\s*[0-9.]+\s*(%|ms|s|m|min|h|d)?\s*$",
        })
    }
}

impl<'de> Deserialize<'de> for Threshold {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Threshold {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Threshold {
        s.parse().unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn thresholds_parse() {
        let t = parse("ca.issue p99 < 500ms");
        assert_eq!(
            t.metric,
            Metric::Latency {
                phase: Phase::CaIssue,
                outcome: Outcome::Ok,
                stat: Stat::Quantile(0.99)
            }
        );
        assert_eq!((t.op, t.limit), (Comparison::Less, 500.0));
        let t = parse("mqtt.publish/timeout  p99.9 <= 2s");
        assert_eq!(
            t.metric,
            Metric::Latency {
                phase: Phase::MqttPublish,
                outcome: Outcome::Timeout,
                stat: Stat::Quantile(0.999)
            }
        );
        assert_eq!((t.op, t.limit), (Comparison::LessOrEqual, 2000.0));
        assert_eq!(
            t.text(),
            "mqtt.publish/timeout p99.9 <= 2s",
            "spaces normalised"
        );
        assert_eq!(parse("mqtt.connect max > 1ms").metric, {
            Metric::Latency {
                phase: Phase::MqttConnect,
                outcome: Outcome::Ok,
                stat: Stat::Max,
            }
        });
        let t = parse("errors rate < 0.1%");
        assert_eq!(t.metric, Metric::ErrorRate);
        assert!((t.limit - 0.001).abs() < 1e-12);
        let t = parse("failed_devices == 0");
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::FailedDevices, Comparison::Equal, 0.0)
        );
        assert_eq!(parse("errors >= 3").metric, Metric::Errors);
        assert_eq!(parse("messages_failed == 0").metric, Metric::MessagesFailed);
        let t = parse("expired_before_renewal == 0");
        assert_eq!(
            (t.metric, t.op, t.limit),
            (Metric::ExpiredBeforeRenewal, Comparison::Equal, 0.0)
        );
        assert_eq!(parse("messages_lost <= 1").metric, Metric::MessagesLost);
        assert_eq!(parse("revoked_online == 0").metric, Metric::RevokedOnline);
        assert!(
            "expired_before_renewal == none"
                .parse::<Threshold>()
                .is_err()
        );
    }

    #[test]
    fn bad_thresholds_say_why() {
        for (bad, why) in [
            ("ca.isue p99 < 500ms", "unknown phase \"ca.isue\""),
            ("ca.issue/fine p99 < 500ms", "unknown outcome"),
            ("ca.issue p101 < 500ms", "unknown statistic"),
            ("ca.issue p99 < 500", "invalid duration"),
            ("ca.issue p99 =< 500ms", "unknown comparison"),
            ("errors rate < 0.1", "not a percentage"),
            ("failed_devices == none", "not a whole number"),
            ("everything fine", "expected `<phase>"),
        ] {
            let err = bad.parse::<Threshold>().unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn comparisons_hold_as_written() {
        assert!(Comparison::Less.holds(1.0, 2.0) && !Comparison::Less.holds(2.0, 2.0));
        assert!(Comparison::LessOrEqual.holds(2.0, 2.0));
        assert!(Comparison::Equal.holds(0.0, 0.0) && !Comparison::Equal.holds(1.0, 0.0));
        assert!(Comparison::GreaterOrEqual.holds(2.0, 2.0));
        assert!(Comparison::Greater.holds(3.0, 2.0) && !Comparison::Greater.holds(2.0, 2.0));
    }
}
