//! `--state`: opens the soak state, seeds the embedded emulators and the recorder from it, and
//! bridges the emulators' journals into the state's writer. The state itself is [`crate::state`].

use std::collections::HashMap;
use std::sync::Arc;

use super::error::FleetError;
use crate::emulator::Emulators;
use crate::emulator::ca::{Domain, IssuedRecord};
use crate::emulator::persist::{CaIdentity, Journal, JournalEvent, Restore};
use crate::metrics::Recorder;
use crate::report::stats::HistogramMap;
use crate::report::timeline::Timeline;
use crate::state::{
    CaDomainRow, CaIdentityRow, Checkpoint, DeviceJournal, Op, ResolvedIntents, StateFile,
    StateWriter, Store, StoredDevice,
};

/// An opened state, loaded, with its writer running.
pub struct Opened {
    pub writer: StateWriter,
    pub devices: HashMap<String, StoredDevice>,
    pub checkpoint: Option<Checkpoint>,
    pub restore: Restore,
    pub caller_oid: Option<String>,
    pub intents: ResolvedIntents,
    pub resumed: bool,
    /// The timeline of the runs before, and the recorder's histograms at its last point.
    pub timeline: Option<(Timeline, HistogramMap)>,
    /// The embedded issuing CA the fleet uses (`target.embedded.ca.issuing_ca`): the one a new
    /// state saves, so a resumed soak's certificates chain to it whichever it is.
    pub issuing: crate::emulator::ca::IssuingKey,
}

fn err(e: crate::state::StateError) -> FleetError {
    FleetError::Setup(e.to_string())
}

pub fn open(file: &StateFile) -> Result<Opened, FleetError> {
    let mut store = Store::open(file).map_err(err)?;
    let intents = store.resolve_intents().map_err(err)?;
    let devices = store.devices().map_err(err)?;
    let checkpoint = store.checkpoint().map_err(err)?;
    let rows = store.emulator_rows().map_err(err)?;
    let resumed = store.resumed;
    let timeline = match store.timeline().map_err(err)? {
        Some((timeline, base)) => Some(stored_timeline(&timeline, &base)?),
        None => None,
    };
    let caller_oid = rows.ca.as_ref().map(|c| c.caller_oid.clone());
    let restore = Restore {
        ca: rows.ca.map(|c| CaIdentity {
            ca_id: c.ca_id,
            template_id: c.template_id,
            root_der: c.root_der.into(),
            issuing_der: c.issuing_der.into(),
            issuing_key_pkcs8: c.issuing_key_pkcs8,
        }),
        issued: rows
            .issued
            .into_iter()
            // The restored CA is the one issuing CA that was saved (index 0).
            .map(|r| IssuedRecord {
                der: r.der.into(),
                ca: 0,
                subject_cn: r.subject_cn,
                requested_by: r.requested_by,
                revoked: r.revoked_at.is_some(),
            })
            .collect(),
        domains: rows
            .domains
            .into_iter()
            .map(|d| {
                (
                    d.name,
                    Domain {
                        id: d.id,
                        ca: 0,
                        owners: d.owners,
                        requesters: d.requesters,
                    },
                )
            })
            .collect(),
        hub_devices: rows
            .hub_devices
            .iter()
            .filter_map(|j| serde_json::from_str(j).ok())
            .collect(),
        ..Restore::default()
    };
    let writer = store.into_writer().map_err(err)?;
    Ok(Opened {
        writer,
        devices,
        checkpoint,
        restore,
        caller_oid,
        intents,
        resumed,
        timeline,
        issuing: crate::emulator::ca::IssuingKey::EcdsaP256,
    })
}

fn stored_timeline(timeline: &str, base: &str) -> Result<(Timeline, HistogramMap), FleetError> {
    let bad = |e: String| FleetError::Setup(format!("state timeline: {e}"));
    let timeline: Timeline = serde_json::from_str(timeline).map_err(|e| bad(e.to_string()))?;
    let base: crate::report::Report = serde_json::from_str(base).map_err(|e| bad(e.to_string()))?;
    let (latency, _) = base.histograms().map_err(|e| bad(e.to_string()))?;
    Ok((timeline, latency))
}

/// Opens `file` for a run: seeds `recorder` with the stored checkpoint and tells the user
/// (unless `progress` is off) what the run resumes from.
pub fn open_for_run(
    file: &StateFile,
    recorder: &Recorder,
    progress: crate::ui::Progress,
) -> Result<Opened, FleetError> {
    let opened = open(file)?;
    opened.seed(recorder)?;
    if !opened.intents.unresolved.is_empty() {
        tracing::warn!(
            devices = ?opened.intents.unresolved,
            "certificate requests cut off by the last stop could not be matched; these devices request again"
        );
    }
    if progress != crate::ui::Progress::Off && opened.resumed {
        eprintln!(
            "fleetsim: resuming from {} ({} devices known, {:.1} s done, {} certificates recovered)",
            file.path.display(),
            opened.devices.len(),
            opened.elapsed_before().as_secs_f64(),
            opened.intents.adopted.len()
        );
    }
    Ok(opened)
}

impl Opened {
    pub fn journal(&self) -> DeviceJournal {
        self.writer.journal()
    }

    /// How much of the run's duration the parts before this one ran.
    pub fn elapsed_before(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.checkpoint.as_ref().map_or(0, |c| c.elapsed_ms))
    }

    /// Connects the emulators' journals to the state, saves a new CA's identity, and returns
    /// the caller id the fleet uses with the CA (the stored one when resuming).
    pub fn attach(&self, emulators: &Emulators) -> String {
        let bridge: Arc<dyn Journal> = Arc::new(Bridge(self.journal()));
        emulators.ca.set_journal(bridge.clone());
        emulators.hub.set_journal(bridge);
        match &self.caller_oid {
            Some(oid) => oid.clone(),
            None => {
                let oid = uuid::Uuid::new_v4().to_string();
                let id = emulators.ca.identity_of(self.issuing);
                self.journal().send(Op::CaIdentity(CaIdentityRow {
                    ca_id: id.ca_id,
                    template_id: id.template_id,
                    root_der: id.root_der.to_vec(),
                    issuing_der: id.issuing_der.to_vec(),
                    issuing_key_pkcs8: id.issuing_key_pkcs8,
                    caller_oid: oid.clone(),
                }));
                oid
            }
        }
    }

    /// Adds the stored checkpoint's counters and histograms to `recorder`.
    pub fn seed(&self, recorder: &Recorder) -> Result<(), FleetError> {
        let Some(c) = &self.checkpoint else {
            return Ok(());
        };
        let report: crate::report::Report = serde_json::from_str(&c.report_json)
            .map_err(|e| FleetError::Setup(format!("state checkpoint: {e}")))?;
        let (latency, uncorrected) = report.histograms()?;
        recorder.absorb(
            &latency,
            &uncorrected,
            [
                report.messages.sent,
                report.messages.acked,
                report.messages.failed,
            ],
            &report.errors,
        );
        Ok(())
    }
}

/// Writes a checkpoint of `recorder` at `elapsed` (queued, not awaited).
pub fn checkpoint(
    journal: &DeviceJournal,
    scenario: &str,
    recorder: &Recorder,
    elapsed: std::time::Duration,
    new_segment: bool,
) {
    let snapshot = recorder.snapshot();
    write_checkpoint(journal, scenario, snapshot, elapsed, new_segment, None);
}

/// Writes a checkpoint of `snapshot`, the one `timeline`'s last point was just sampled from,
/// together with the timeline (queued, not awaited): a resumed run continues the timeline
/// exactly from that point.
pub fn checkpoint_with_timeline(
    journal: &DeviceJournal,
    scenario: &str,
    snapshot: crate::metrics::Snapshot,
    elapsed: std::time::Duration,
    new_segment: bool,
    timeline: &Timeline,
) {
    match serde_json::to_string(timeline) {
        Ok(json) => write_checkpoint(
            journal,
            scenario,
            snapshot,
            elapsed,
            new_segment,
            Some(json),
        ),
        Err(e) => tracing::warn!(error = %e, "state timeline skipped"),
    }
}

fn write_checkpoint(
    journal: &DeviceJournal,
    scenario: &str,
    snapshot: crate::metrics::Snapshot,
    elapsed: std::time::Duration,
    new_segment: bool,
    timeline_json: Option<String>,
) {
    let failed = snapshot.messages_failed;
    match crate::report::Report::new(scenario, "checkpoint", String::new(), 0.0, snapshot) {
        Ok(mut report) => {
            report.messages.failed = failed;
            if let Ok(json) = serde_json::to_string(&report) {
                journal.send(Op::Checkpoint {
                    elapsed_ms: elapsed.as_millis() as u64,
                    report_json: json,
                    new_segment,
                    timeline_json,
                });
            }
        }
        Err(e) => tracing::warn!(error = %e, "state checkpoint skipped"),
    }
}

/// Commits the last writes, then adopts certificates the CA issued to requests the stop cut
/// off (the emulators have stopped, so nothing more is on its way).
pub async fn close(opened: Opened, file: Option<&StateFile>) {
    if let Err(e) = opened.writer.close().await {
        tracing::warn!(error = %e, "state: last writes failed");
    }
    if let Some(file) = file
        && let Err(e) = Store::open(file).and_then(|mut s| s.resolve_intents())
    {
        tracing::warn!(error = %e, "state: cut-off requests not resolved");
    }
}

/// Queues the embedded emulators' durable changes into the state.
struct Bridge(DeviceJournal);

impl Journal for Bridge {
    fn record(&self, event: JournalEvent) {
        let op = match event {
            JournalEvent::Issued {
                subject_cn,
                requested_by,
                der,
            } => Op::CaIssued {
                subject_cn,
                requested_by,
                der,
            },
            JournalEvent::Domain { name, domain } => Op::CaDomain(CaDomainRow {
                name,
                id: domain.id,
                owners: domain.owners,
                requesters: domain.requesters,
            }),
            JournalEvent::Revoked { thumbprint, at } => Op::CaRevoked { thumbprint, at },
            JournalEvent::HubDevice { id, device } => Op::HubDevice {
                id,
                json: device.and_then(|d| serde_json::to_string(&d).ok()),
            },
        };
        self.0.send(op);
    }
}
