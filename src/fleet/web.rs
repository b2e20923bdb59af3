//! The run's live web page (`fleetsim run --web`): the fleet board every device writes its state
//! to, and the page served from it for the length of the run (see [`crate::web`]).

use std::sync::{Arc, OnceLock};

use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use super::error::FleetError;
use super::plan::Fleet;
use crate::metrics::Recorder;
use crate::metrics::board::DeviceBoard;
use crate::report::ThresholdResult;
use crate::scenario::Scenario;
use crate::web::{LiveRun, WebView};

/// A board for every device of this process's `fleet`, set on `recorder` so devices keep it up
/// to date (always: the report keeps its final picture).
pub(super) fn board(fleet: &Fleet, recorder: &Recorder) -> Arc<DeviceBoard> {
    let board = Arc::new(DeviceBoard::new(&fleet.names, &fleet.board_devices()));
    recorder.set_board(board.clone());
    board
}

/// The page while it serves; it stops when dropped, [`Page::stop`] also waits for it.
pub(super) struct Page {
    stop: DropGuard,
    task: JoinHandle<()>,
    verdict: Arc<OnceLock<Vec<ThresholdResult>>>,
}

impl Page {
    /// Shows the report's threshold results (`None`: the run failed before its report), then
    /// stops once the open pages have been sent the final picture.
    pub async fn finish(self, verdict: Option<Vec<ThresholdResult>>) {
        let _ = self.verdict.set(verdict.unwrap_or_default());
        drop(self.stop);
        let _ = self.task.await;
    }
}

/// Serves the live page of the run that began at `start` on `listener`.
pub(super) fn start(
    listener: &std::net::TcpListener,
    scenario: &Scenario,
    recorder: Arc<Recorder>,
    board: Arc<DeviceBoard>,
    start: std::time::Instant,
) -> Result<Page, FleetError> {
    let setup = |e: std::io::Error| FleetError::Setup(format!("web listener: {e}"));
    let std_listener = listener.try_clone().map_err(setup)?;
    std_listener.set_nonblocking(true).map_err(setup)?;
    let listener = tokio::net::TcpListener::from_std(std_listener).map_err(setup)?;
    let run = LiveRun {
        title: scenario.name.clone(),
        duration: scenario.duration.0,
        recorder,
        board,
        thresholds: scenario.thresholds.clone(),
        verdict: Default::default(),
    };
    let verdict = run.verdict.clone();
    let stop = CancellationToken::new();
    let stopped = stop.clone().cancelled_owned();
    let task = tokio::spawn(async move {
        if let Err(e) = crate::web::serve(listener, WebView::live(run, start), stopped).await {
            tracing::warn!(error = %e, "web view stopped");
        }
    });
    Ok(Page {
        stop: stop.drop_guard(),
        task,
        verdict,
    })
}
