//! One verdict for a distributed run: which of the `n` shards arrived ([`Shards`]), their
//! reports merged exactly, the scenario's thresholds checked on the merged histograms, and
//! everything that makes the run fail named ([`Verdict`]): shards that never reported, shards
//! that failed or were interrupted, failed thresholds.
//!
//! The collector (`fleetsim collect`) and `fleetsim report --expect` both decide through here.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use crate::fleet::Shard;
use crate::report::{Report, ReportError};
use crate::scenario::Threshold;

/// What arrived from one shard.
#[derive(Debug, Clone)]
pub enum Arrival {
    /// Its report, and where it came from (a file name).
    Report { source: String, report: Box<Report> },
    /// The shard said it failed, and why (it has no report).
    Failed(String),
}

/// Why an arrival was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{0}")]
    NotOurs(String),
    #[error("shard {0} has already arrived")]
    Duplicate(Shard),
}

/// The shards of one run, as they arrive.
#[derive(Debug, Clone)]
pub struct Shards {
    pub expected: u32,
    /// The scenario's name, when known: reports of another scenario are refused.
    pub scenario: Option<String>,
    pub arrived: BTreeMap<u32, Arrival>,
}

impl Shards {
    pub fn new(expected: u32, scenario: Option<String>) -> Self {
        Self {
            expected,
            scenario,
            arrived: BTreeMap::new(),
        }
    }

    /// Which of our shards `text` (`i/n`) names.
    pub fn shard_of(&self, text: Option<&str>) -> Result<Shard, Refusal> {
        let Some(text) = text else {
            return Err(Refusal::NotOurs(
                "not a shard's report (no `shard`: was it run with --shard?)".into(),
            ));
        };
        let shard: Shard = text
            .parse()
            .map_err(|e: crate::fleet::shard::ShardError| Refusal::NotOurs(e.to_string()))?;
        if shard.count != self.expected {
            return Err(Refusal::NotOurs(format!(
                "shard {shard} is one of {}, this run has {} shards",
                shard.count, self.expected
            )));
        }
        Ok(shard)
    }

    /// Takes a shard's report (refused when it is not one of ours or its shard arrived already).
    pub fn admit_report(&mut self, source: String, report: Report) -> Result<Shard, Refusal> {
        let shard = self.shard_of(report.shard.as_deref())?;
        if let Some(name) = &self.scenario
            && &report.scenario != name
        {
            return Err(Refusal::NotOurs(format!(
                "a report of scenario {:?}, this run is {name:?}",
                report.scenario
            )));
        }
        self.admit(shard, || Arrival::Report {
            source,
            report: Box::new(report),
        })
    }

    /// Takes a shard's word that it failed.
    pub fn admit_failure(&mut self, shard: &str, error: String) -> Result<Shard, Refusal> {
        let shard = self.shard_of(Some(shard))?;
        self.admit(shard, || Arrival::Failed(error))
    }

    fn admit(&mut self, shard: Shard, arrival: impl FnOnce() -> Arrival) -> Result<Shard, Refusal> {
        if self.arrived.contains_key(&shard.index) {
            return Err(Refusal::Duplicate(shard));
        }
        self.arrived.insert(shard.index, arrival());
        Ok(shard)
    }

    /// The shards that have not arrived.
    pub fn missing(&self) -> Vec<Shard> {
        (0..self.expected)
            .filter(|i| !self.arrived.contains_key(i))
            .map(|index| Shard {
                index,
                count: self.expected,
            })
            .collect()
    }

    pub fn complete(&self) -> bool {
        self.arrived.len() as u64 == u64::from(self.expected)
    }
}

/// The run's verdict: the merged report (none when no shard reported) and every reason it fails
/// besides its thresholds.
#[derive(Debug, Clone)]
pub struct Verdict {
    pub merged: Option<Report>,
    pub problems: Vec<String>,
}

impl Verdict {
    /// Merges the reports that arrived and checks `thresholds` (the scenario's) on the merged
    /// figures; without them, the thresholds the shards were checked against.
    pub fn judge(shards: &Shards, thresholds: Option<&[Threshold]>) -> Result<Self, ReportError> {
        let mut problems = Vec::new();
        let missing = shards.missing();
        if !missing.is_empty() {
            let names: Vec<String> = missing.iter().map(|s| s.to_string()).collect();
            problems.push(format!(
                "{} of {} shards never reported: {}",
                missing.len(),
                shards.expected,
                names.join(", ")
            ));
        }
        let mut reports = Vec::new();
        let mut sources = Vec::new();
        for (&index, arrival) in &shards.arrived {
            let shard = Shard {
                index,
                count: shards.expected,
            };
            match arrival {
                Arrival::Failed(error) => problems.push(format!("shard {shard} failed: {error}")),
                Arrival::Report { source, report } => {
                    if report.interrupted {
                        problems.push(format!("shard {shard} was stopped before its end"));
                    }
                    reports.push(report.as_ref().clone());
                    sources.push(source.clone());
                }
            }
        }
        let merged = match reports.is_empty() {
            true => None,
            false => {
                let mut merged = crate::report::merge(&reports)?;
                merged.merged_from = sources;
                if let Some(thresholds) = thresholds {
                    merged.thresholds = crate::report::thresholds::evaluate(thresholds, &merged)?;
                }
                Some(merged)
            }
        };
        Ok(Self { merged, problems })
    }

    pub fn passed(&self) -> bool {
        self.problems.is_empty()
            && self
                .merged
                .as_ref()
                .is_some_and(|m| m.failed_thresholds().next().is_none())
    }

    /// The verdict's lines: PASS, or FAIL with each reason.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let failed: Vec<_> = self
            .merged
            .iter()
            .flat_map(|m| m.failed_thresholds())
            .collect();
        let _ = match self.passed() {
            true => writeln!(s, "verdict: PASS"),
            false => writeln!(s, "verdict: FAIL"),
        };
        for p in &self.problems {
            let _ = writeln!(s, "  {p}");
        }
        if self.merged.is_none() {
            let _ = writeln!(s, "  no shard reported: nothing to merge");
        }
        for t in failed {
            let _ = writeln!(
                s,
                "  threshold failed: {} (actual {})",
                t.threshold, t.actual
            );
        }
        s
    }
}
