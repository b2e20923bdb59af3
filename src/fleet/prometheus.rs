//! The run's `/metrics` endpoint: starts the exporter on the listener the caller bound and, when
//! the target is embedded, adds the emulators' own counters, so one scrape shows both sides of the
//! wire (the metrics module knows nothing of emulators; this is where they meet).

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::error::FleetError;
use crate::emulator::{CaEmulator, HubEmulator};
use crate::metrics::Recorder;
use crate::metrics::exporter::{self, Kind, Sample, SampleSource};

/// The endpoint while it serves. It stops when dropped (on every way out of a run, early errors
/// included); [`Endpoint::stop`] also waits for it to finish.
pub(super) struct Endpoint {
    stop: DropGuard,
    task: JoinHandle<()>,
}

impl Endpoint {
    pub async fn stop(self) {
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Serves `/metrics` on `listener` until the returned endpoint is stopped or dropped.
pub(super) fn start(
    listener: &std::net::TcpListener,
    recorder: Arc<Recorder>,
    emulators: Option<(CaEmulator, HubEmulator)>,
) -> Result<Endpoint, FleetError> {
    let setup = |e: std::io::Error| FleetError::Setup(format!("metrics listener: {e}"));
    // A duplicate of the caller's socket: the options stay cloneable and the caller keeps theirs.
    let std_listener = listener.try_clone().map_err(setup)?;
    std_listener.set_nonblocking(true).map_err(setup)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(setup)?;
    let extra = emulators.map(|(ca, hub)| emulator_samples(ca, hub));
    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = exporter::serve(listener, recorder, extra, stopped).await {
            tracing::warn!(error = %e, "metrics endpoint stopped");
        }
    });
    Ok(Endpoint {
        stop: stop.drop_guard(),
        task,
    })
}

/// The embedded CA's and hub's counters, read on every scrape.
fn emulator_samples(ca: CaEmulator, hub: HubEmulator) -> SampleSource {
    Arc::new(move || {
        let h = hub.stats();
        let counter = |name, help, value: u64| Sample {
            name,
            help,
            kind: Kind::Counter,
            value: value as f64,
        };
        vec![
            counter(
                "fleetsim_hub_messages_received_total",
                "Telemetry messages the embedded hub received.",
                h.messages,
            ),
            counter(
                "fleetsim_hub_connects_total",
                "MQTT connections the embedded hub accepted.",
                h.connects,
            ),
            counter(
                "fleetsim_hub_refused_total",
                "MQTT connections the embedded hub refused (CONNACK error).",
                h.refused,
            ),
            counter(
                "fleetsim_hub_throttled_total",
                "Requests the embedded hub refused by throttling (closed connections, 429s).",
                h.throttled,
            ),
            Sample {
                name: "fleetsim_hub_devices_registered",
                help: "Device identities in the embedded hub's registry.",
                kind: Kind::Gauge,
                value: h.devices_registered as f64,
            },
            counter(
                "fleetsim_ca_certificates_issued_total",
                "Certificates the embedded CA issued (renewals included).",
                ca.issued_count() as u64,
            ),
        ]
    })
}
