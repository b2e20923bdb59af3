//! The live web view of a run (`fleetsim run --web ADDR`) and the replay of a finished run
//! (`fleetsim report --web ADDR FILE`): one self-contained page (HTML and our own canvas
//! drawing code, embedded in the binary; nothing is fetched from elsewhere) that draws the
//! fleet map, rates, latency per phase over time, errors by kind, certificate time to expiry,
//! thresholds and the run's events.
//!
//! Updates are pushed by Server-Sent Events. One task builds a [`Frame`] per tick and every
//! open page is sent that same text, so the cost of an update does not grow with the watchers,
//! and only by one byte per device with the fleet (see [`frame`]). Hovering a device asks
//! `/device/{slot}` for its id, certificate expiry and last error.
//!
//! Routes: `/` the page, `/app.js` its script, `/meta`, `/history` and `/frame` (JSON), `/events`
//! (the SSE stream), `/device/{slot}`.

pub mod frame;
pub mod live;
pub mod replay;
mod types;

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures_util::stream::{self, Stream};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

pub use frame::{Frame, Meta};
pub use live::{LiveRun, Ticker};
pub use replay::Replay;
pub use types::{DeviceInfo, WebError};

use crate::report::timeline::TimelinePoint;
use crate::sync::lock;

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// How often the live page is updated.
pub const TICK: Duration = Duration::from_secs(1);

/// What a page shows: a run as it happens, or a finished run's report.
pub enum WebView {
    Live {
        ticker: Ticker,
        board: Arc<crate::metrics::board::DeviceBoard>,
    },
    Replay(Replay),
}

impl WebView {
    /// The live page of `run`, which began at `start`.
    pub fn live(run: LiveRun, start: Instant) -> Self {
        let board = run.board.clone();
        WebView::Live {
            ticker: Ticker::new(run, start, TICK),
            board,
        }
    }
}

/// What the handlers share.
struct Shared {
    meta: Meta,
    history: Mutex<Vec<TimelinePoint>>,
    /// The latest frame as sent (JSON), for every watcher.
    frames: watch::Receiver<Arc<String>>,
    view: Mutex<WebView>,
    closing: CancellationToken,
    /// The final frame (the run's duration has passed) has been handed to the watchers.
    final_sent: AtomicBool,
}

impl Shared {
    /// Whether the live run's board has been frozen: its final frame is due.
    fn final_due(&self) -> bool {
        match &*lock(&self.view) {
            WebView::Live { board, .. } => board.is_frozen(),
            WebView::Replay(_) => true,
        }
    }
}

/// How long a stopping server waits for the final frame to be built and sent.
const FINAL_WAIT: Duration = Duration::from_secs(3);

/// Serves the page of `view` on `listener` until `shutdown` completes; a live view is ticked
/// every [`TICK`] meanwhile.
pub async fn serve(
    listener: TcpListener,
    view: WebView,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), WebError> {
    let (meta, history, first) = match &view {
        WebView::Live { ticker, .. } => (ticker.meta(), Vec::new(), None),
        WebView::Replay(r) => (r.meta.clone(), r.history.clone(), Some(r.frame.clone())),
    };
    let replay = first.is_some();
    let first = first.map_or_else(String::new, |f| to_json(&f));
    let (send, frames) = watch::channel(Arc::new(first));
    let closing = CancellationToken::new();
    let shared = Arc::new(Shared {
        meta,
        history: Mutex::new(history),
        frames,
        view: Mutex::new(view),
        closing: closing.clone(),
        final_sent: AtomicBool::new(replay),
    });
    let ticking = tokio::spawn(tick_loop(shared.clone(), send));
    let router = axum::Router::new()
        .route("/", get(page))
        .route("/app.js", get(script))
        .route("/meta", get(meta_json))
        .route("/history", get(history_json))
        .route("/frame", get(frame_json))
        .route("/events", get(events))
        .route("/device/{slot}", get(device))
        .with_state(shared.clone());
    let stop = closing.clone();
    let result = axum::serve(listener, router)
        .with_graceful_shutdown(async move {
            shutdown.await;
            // The run's last picture reaches the open pages before their streams end.
            let waited = Instant::now();
            while !shared.final_sent.load(Ordering::Relaxed) && waited.elapsed() < FINAL_WAIT {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            // Event streams never end by themselves: end them so the server can stop.
            stop.cancel();
        })
        .await;
    closing.cancel();
    ticking.abort();
    result.map_err(WebError::from)
}

/// Builds a frame per tick (on a blocking thread: a snapshot merges histograms) and hands it to
/// every watcher, and the final one as soon as the run's duration has passed; a replay has its
/// one frame already.
async fn tick_loop(shared: Arc<Shared>, send: watch::Sender<Arc<String>>) {
    if matches!(*lock(&shared.view), WebView::Replay(_)) {
        return;
    }
    let mut every = tokio::time::interval(Duration::from_millis(100));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut built: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shared.closing.cancelled() => return,
            _ = every.tick() => {}
        }
        let final_due = shared.final_due();
        if built.is_some_and(|b| b.elapsed() < TICK) && !final_due {
            continue;
        }
        built = Some(Instant::now());
        let s = shared.clone();
        let made = tokio::task::spawn_blocking(move || {
            let mut view = lock(&s.view);
            let WebView::Live { ticker, .. } = &mut *view else {
                return None;
            };
            let frame = ticker.tick();
            *lock(&s.history) = ticker.history();
            Some((to_json(&frame), frame.verdict))
        })
        .await;
        match made {
            Ok(Some((json, verdict))) => {
                // The final frame is sent again only when the report's verdict comes.
                if **send.borrow() != json {
                    let _ = send.send(Arc::new(json));
                }
                if verdict {
                    shared.final_sent.store(true, Ordering::Relaxed);
                    return;
                }
            }
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "web view: building a frame failed");
                return;
            }
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "null".into())
}

fn json_response(body: String) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn meta_json(State(s): State<Arc<Shared>>) -> Response {
    json_response(to_json(&s.meta))
}

async fn history_json(State(s): State<Arc<Shared>>) -> Response {
    json_response(to_json(&*lock(&s.history)))
}

async fn frame_json(State(s): State<Arc<Shared>>) -> Response {
    let frame = s.frames.borrow().clone();
    match frame.is_empty() {
        true => StatusCode::NO_CONTENT.into_response(),
        false => json_response(frame.to_string()),
    }
}

async fn device(State(s): State<Arc<Shared>>, Path(slot): Path<usize>) -> Response {
    let info = match &*lock(&s.view) {
        WebView::Live { board, .. } => board.device(slot).map(|(id, state, exp, err)| {
            DeviceInfo::new(slot, id, state, exp, frame::unix_now(), err)
        }),
        WebView::Replay(r) => r.device(slot),
    };
    match info {
        Some(info) => json_response(to_json(&info)),
        None => (StatusCode::NOT_FOUND, "no such device").into_response(),
    }
}

/// The frames as they come: the current one first, then each new one, until the server stops.
async fn events(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let mut frames = s.frames.clone();
    frames.mark_changed();
    let closing = s.closing.clone();
    let stream = stream::unfold((frames, closing), |(mut frames, closing)| async move {
        loop {
            tokio::select! {
                _ = closing.cancelled() => return None,
                changed = frames.changed() => changed.ok()?,
            }
            let json = frames.borrow_and_update().clone();
            if !json.is_empty() {
                let event = Event::default().event("frame").data(json.as_str());
                return Some((Ok(event), (frames, closing)));
            }
        }
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}
