//! The report's data: what a run (or a merge of shards' runs) produced, as the JSON report
//! carries it. Writers ([`super::text`], [`super::html`], [`super::hlog`]) and [`super::merge`]
//! read it; the fleet fills it.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::certificates::CertificateReport;
use super::error::{ReportError, SCHEMA};
use super::operator::OperatorReport;
use super::provisioning::ProvisioningReport;
use super::stats::{self, HistogramMap, PhaseStats};
use super::timeline::Timeline;
use crate::metrics::Snapshot;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// Always [`SCHEMA`].
    pub schema: String,
    pub scenario: String,
    /// `embedded` or `remote`.
    pub target: String,
    pub started_at: String,
    pub wall_seconds: f64,
    /// True when the run was stopped early (Ctrl-C).
    pub interrupted: bool,
    /// The report files this one was merged from (empty for a single run).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub merged_from: Vec<String>,
    /// The slice of the fleet this run was (`i/n` of `fleetsim run --shard`); absent for a whole
    /// run and for a merge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shard: Option<String>,
    /// The start barrier the run waited for (`fleetsim run --start-at`), absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_barrier: Option<StartBarrier>,
    /// The run id its identities carry (twin tag `fleetsim.run`, and a device-id prefix): what
    /// `fleetsim cleanup --report` removes. Absent for embedded runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    pub devices: DeviceCounts,
    /// Devices per cohort (one, `default`, for a scenario without cohorts).
    #[serde(default)]
    pub cohorts: Vec<CohortCounts>,
    pub messages: MessageCounts,
    pub phases: Vec<PhaseStats>,
    /// `phase/kind` → count.
    pub errors: BTreeMap<String, u64>,
    /// Panics caught at a task's boundary, by where: `device/<phase>` (the phase the device was
    /// in), `arrivals`, `operator/<phase>`, `emulator.ca`, `emulator.hub`, `emulator.dps`, `emulator.amqp`. Any fails
    /// the run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub panics: BTreeMap<String, u64>,
    /// `service/endpoint/reason` → retries a client made by itself before its caller saw a
    /// result (EZCA's official 2/4/8 s policy).
    #[serde(default)]
    pub retries: BTreeMap<String, u64>,
    /// The scenario's thresholds, checked against this report.
    #[serde(default)]
    pub thresholds: Vec<ThresholdResult>,
    /// What the embedded hub counted (all its hubs, in a DPS run), to compare with `messages`.
    pub hub: Option<HubCounts>,
    /// How DPS provisioned the devices, and the devices per hub (DPS runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningReport>,
    /// Certificate health, renewals, swaps and revocations ([`super::certificates`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<CertificateReport>,
    /// What fleetsim as the operator did (direct methods, desired properties, queries), when
    /// the scenario has such events.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub operator: Option<OperatorReport>,
    /// What fleetsim as the backend read of the acknowledged telemetry (`backend.consume`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backend: Option<super::backend::BackendReport>,
    /// How the key pool served the run (`certificate.key_source: pool` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_pool: Option<KeyPoolCounts>,
    /// The run over time, one point per `report.interval` (absent in older reports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Timeline>,
    /// Which device was in which state when the scenario's duration ended, with certificate
    /// expiries, last errors and the run's events: what `fleetsim report --web` draws.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet_map: Option<crate::metrics::board::FleetMap>,
    /// QoS 1 accounting: sent = acked + lost per cause ([`super::qos1`]); absent without QoS 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qos1: Option<super::qos1::Qos1Report>,
    /// The faults the run injected, in order ([`super::faults`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub faults: Vec<super::faults::FaultEvent>,
}

/// The shared start of a distributed run (`fleetsim run --start-at`): every shard's arrival
/// clock starts at `at`. A shard that was ready only after it starts anyway from `at`, so its
/// devices whose slots have passed start late (counted in `devices.late` and `arrival.late`),
/// and it says by how much here instead of shifting its clock.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct StartBarrier {
    /// The barrier, RFC 3339 (merged: the shards' barriers, `+`-joined when they differ).
    pub at: String,
    /// How long after `at` this shard was ready to start, 0 when it waited (merged: the latest).
    pub late_seconds: f64,
    /// The shards that were ready only after `at` (this one, or the merged report's).
    #[serde(default)]
    pub late_shards: Vec<String>,
}

/// The key pool's side of a run: keys that were ready on disk, and the keys devices had to wait
/// for because the pool was short (generated during the run), with the time they waited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct KeyPoolCounts {
    pub kind: String,
    pub from_pool: u64,
    pub generated_during_run: u64,
    pub waits: u64,
    pub wait_seconds: f64,
    pub max_wait_ms: f64,
}

impl KeyPoolCounts {
    /// Adds another shard's counts.
    pub fn add(&mut self, other: &KeyPoolCounts) {
        if self.kind.is_empty() {
            self.kind = other.kind.clone();
        } else if self.kind != other.kind {
            self.kind = "mixed".into();
        }
        self.from_pool += other.from_pool;
        self.generated_during_run += other.generated_during_run;
        self.waits += other.waits;
        self.wait_seconds += other.wait_seconds;
        self.max_wait_ms = self.max_wait_ms.max(other.max_wait_ms);
    }
}

/// The embedded hub's totals, as the report keeps them (the fleet fills them from the emulator).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct HubCounts {
    pub messages: u64,
    pub bytes: u64,
    /// Meters of the daily quota the messages counted for (4 KB each; 0.5 KB on F1).
    #[serde(default)]
    pub meters: u64,
    pub connects: u64,
    pub refused: u64,
    pub drops: u64,
    pub devices_registered: u64,
    /// Requests the hub refused by a throttle.
    #[serde(default)]
    pub throttled: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct DeviceCounts {
    pub planned: u64,
    pub started: u64,
    pub enrolled: u64,
    pub connected: u64,
    /// Devices that renewed at least once.
    pub renewed: u64,
    pub renewals: u64,
    pub failed: u64,
    /// Devices that started after their arrival slot (their lateness is the `arrival.late` phase).
    #[serde(default)]
    pub late: u64,
}

/// One cohort's devices.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CohortCounts {
    pub name: String,
    pub planned: u64,
    pub started: u64,
    pub enrolled: u64,
    pub connected: u64,
    pub failed: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct MessageCounts {
    pub sent: u64,
    pub acked: u64,
    pub failed: u64,
    /// Payload bytes of the messages sent.
    #[serde(default)]
    pub bytes: u64,
    /// IoT Hub's 4 KB meters of the messages sent: what they count against a hub's daily
    /// quota (size with properties, at least one meter each).
    #[serde(default)]
    pub meters: u64,
}

impl Report {
    pub fn new(
        scenario: &str,
        target: &str,
        started_at: String,
        wall_seconds: f64,
        snapshot: Snapshot,
    ) -> Result<Self, ReportError> {
        Ok(Self {
            schema: SCHEMA.into(),
            scenario: scenario.into(),
            target: target.into(),
            started_at,
            wall_seconds,
            interrupted: false,
            merged_from: Vec::new(),
            shard: None,
            start_barrier: None,
            run_id: None,
            devices: DeviceCounts::default(),
            cohorts: Vec::new(),
            messages: MessageCounts {
                sent: snapshot.messages_sent,
                acked: snapshot.messages_acked,
                failed: 0,
                bytes: snapshot.bytes_sent,
                meters: snapshot.meters_sent,
            },
            phases: stats::phase_stats(&snapshot.latency, &snapshot.uncorrected)?,
            errors: snapshot.errors,
            panics: BTreeMap::new(),
            retries: snapshot.retries,
            thresholds: Vec::new(),
            hub: None,
            provisioning: None,
            certificates: None,
            operator: None,
            backend: None,
            key_pool: None,
            timeline: None,
            fleet_map: None,
            qos1: None,
            faults: Vec::new(),
        })
    }

    /// The histograms behind the phase table: (corrected, uncorrected).
    pub fn histograms(&self) -> Result<(HistogramMap, HistogramMap), ReportError> {
        stats::histograms(&self.phases)
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }

    /// The thresholds that failed.
    pub fn failed_thresholds(&self) -> impl Iterator<Item = &ThresholdResult> {
        self.thresholds.iter().filter(|t| !t.pass)
    }

    pub fn write_json(&self, path: &Path) -> Result<(), ReportError> {
        let json = serde_json::to_vec_pretty(self)?;
        std::fs::write(path, json).map_err(|source| ReportError::Write {
            path: path.display().to_string(),
            source,
        })
    }
}

/// One threshold's verdict.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ThresholdResult {
    /// As written in the scenario.
    pub threshold: String,
    pub pass: bool,
    /// The value seen, with its unit (`3.68 ms`, `0.02%`, `0`), or why there was none.
    pub actual: String,
}
