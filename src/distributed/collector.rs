//! The collector of a distributed run (`fleetsim collect`): a small HTTP server the shards POST
//! their reports (or failures) to. Each arrival is checked (one of our `n` shards, our
//! scenario, not seen before), written to `<out>/shards/` before it is acknowledged, so a
//! collector that restarts picks up where it was ([`Collector::load`]), and counted until all
//! `n` shards have arrived.
//!
//! Routes: `POST /reports` (a report or a failure notice, see [`super::delivery`]),
//! `GET /status` (JSON: expected, arrived, missing), `GET /healthz`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::{get, post};
use tokio::sync::Notify;

use super::delivery::{FAILURE_SCHEMA, FailureNotice};
use super::error::DistributedError;
use super::verdict::{Arrival, Refusal, Shards};
use crate::fleet::Shard;
use crate::report::{Report, SCHEMA};
use crate::sync::lock;

/// Reports carry every histogram and a timeline of up to 720 points: far above axum's 2 MB.
const BODY_LIMIT: usize = 256 * 1024 * 1024;

/// What the collector has, shared by its handlers and its owner.
pub struct Collector {
    shards: Mutex<Shards>,
    dir: PathBuf,
    /// The shared bearer token, when the run has one.
    token: Option<String>,
    arrived: Notify,
}

impl Collector {
    /// A collector for `shards` that keeps what arrives in `<out>/shards/`, first taking what an
    /// earlier collector of the same run left there.
    pub fn load(
        mut shards: Shards,
        out: &Path,
        token: Option<String>,
    ) -> Result<Arc<Self>, DistributedError> {
        let dir = out.join("shards");
        std::fs::create_dir_all(&dir)
            .map_err(|e| DistributedError::io(format!("{}", dir.display()), e))?;
        load_arrivals(&mut shards, &dir)?;
        Ok(Arc::new(Self {
            shards: Mutex::new(shards),
            dir,
            token: token.filter(|t| !t.is_empty()),
            arrived: Notify::new(),
        }))
    }

    /// The shards as they stand.
    pub fn shards(&self) -> Shards {
        lock(&self.shards).clone()
    }

    /// Completes once every shard has arrived.
    pub async fn all_arrived(&self) {
        loop {
            let notified = self.arrived.notified();
            if lock(&self.shards).complete() {
                return;
            }
            notified.await;
        }
    }

    /// Serves the routes on `listener` until `shutdown`.
    pub async fn serve(
        self: Arc<Self>,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), DistributedError> {
        let router = Router::new()
            .route("/reports", post(receive))
            .route("/status", get(status))
            .route("/healthz", get(|| async { "ok\n" }))
            .layer(DefaultBodyLimit::max(BODY_LIMIT))
            .with_state(self);
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
            .map_err(|e| DistributedError::Collector(format!("serving: {e}")))
    }

    /// Whether `headers` carry the run's token (always, when it has none).
    fn authorised(&self, headers: &HeaderMap) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        // Compared in full whatever the first difference, so timing does not tell the token.
        given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }

    /// Checks, writes and admits one arrival; the answer's status and text.
    fn take(&self, body: &[u8]) -> (StatusCode, String) {
        let parsed = match parse(body) {
            Ok(parsed) => parsed,
            Err(reason) => return (StatusCode::BAD_REQUEST, reason),
        };
        let (shard_text, file_body) = match &parsed {
            Parsed::Report(r) => (r.shard.clone(), body.to_vec()),
            Parsed::Failure(n) => (Some(n.shard.clone()), body.to_vec()),
        };
        let shard = match lock(&self.shards).shard_of(shard_text.as_deref()) {
            Ok(shard) => shard,
            Err(refusal) => return refused(refusal),
        };
        let path = self
            .dir
            .join(file_name(shard, matches!(parsed, Parsed::Failure(_))));
        // A name of its own, so two deliveries of one shard at once never share a file.
        let tmp = path.with_extension(format!("{}.partial", uuid::Uuid::new_v4().simple()));
        if let Err(e) = std::fs::write(&tmp, &file_body) {
            let text = format!("cannot keep the report: {}: {e}", tmp.display());
            return (StatusCode::INTERNAL_SERVER_ERROR, text);
        }
        let source = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let admitted = {
            let mut shards = lock(&self.shards);
            match parsed {
                Parsed::Report(report) => shards.admit_report(source, *report),
                Parsed::Failure(notice) => shards.admit_failure(&notice.shard, notice.error),
            }
        };
        match admitted.map(|s| (s, std::fs::rename(&tmp, &path))) {
            Ok((shard, Ok(()))) => {
                self.arrived.notify_waiters();
                let n = lock(&self.shards).arrived.len();
                eprintln!(
                    "fleetsim collect: shard {shard} arrived ({n} of {})",
                    shard.count
                );
                (StatusCode::CREATED, format!("shard {shard} received\n"))
            }
            Ok((shard, Err(e))) => {
                lock(&self.shards).arrived.remove(&shard.index);
                let text = format!("cannot keep the report: {}: {e}", path.display());
                (StatusCode::INTERNAL_SERVER_ERROR, text)
            }
            Err(refusal) => {
                let _ = std::fs::remove_file(&tmp);
                refused(refusal)
            }
        }
    }
}

/// A body as the collector understands it.
enum Parsed {
    Report(Box<Report>),
    Failure(FailureNotice),
}

fn parse(body: &[u8]) -> Result<Parsed, String> {
    let value: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
    match value.get("schema").and_then(|s| s.as_str()) {
        Some(SCHEMA) => serde_json::from_value(value)
            .map(|r| Parsed::Report(Box::new(r)))
            .map_err(|e| format!("not a fleetsim report: {e}")),
        Some(FAILURE_SCHEMA) => serde_json::from_value(value)
            .map(Parsed::Failure)
            .map_err(|e| format!("not a failure notice: {e}")),
        other => Err(format!(
            "schema {other:?}: expected {SCHEMA:?} or {FAILURE_SCHEMA:?}"
        )),
    }
}

fn refused(refusal: Refusal) -> (StatusCode, String) {
    let status = match refusal {
        Refusal::Duplicate(_) => StatusCode::CONFLICT,
        Refusal::NotOurs(_) => StatusCode::UNPROCESSABLE_ENTITY,
    };
    eprintln!("fleetsim collect: refused an arrival: {refusal}");
    (status, format!("{refusal}\n"))
}

/// `shard-2-of-4.json`, or `shard-2-of-4.failed` for a failure notice (not `*.json`, so
/// `fleetsim report <dir>` reads only the reports).
fn file_name(shard: Shard, failure: bool) -> String {
    let ext = if failure { "failed" } else { "json" };
    format!("shard-{}-of-{}.{ext}", shard.index, shard.count)
}

async fn receive(
    State(collector): State<Arc<Collector>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    if !collector.authorised(&headers) {
        return (
            StatusCode::UNAUTHORIZED,
            "a bearer token is required\n".into(),
        );
    }
    let c = collector.clone();
    // Parsing and writing a report of megabytes is blocking work.
    tokio::task::spawn_blocking(move || c.take(&body))
        .await
        .unwrap_or_else(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn status(State(collector): State<Arc<Collector>>) -> axum::Json<serde_json::Value> {
    let shards = collector.shards();
    let name = |index: &u32| format!("{index}/{}", shards.expected);
    let failed: Vec<String> = shards
        .arrived
        .iter()
        .filter(|(_, a)| matches!(a, Arrival::Failed(_)))
        .map(|(i, _)| name(i))
        .collect();
    axum::Json(serde_json::json!({
        "expected": shards.expected,
        "arrived": shards.arrived.keys().map(name).collect::<Vec<_>>(),
        "failed": failed,
        "missing": shards.missing().iter().map(|s| s.to_string()).collect::<Vec<_>>(),
    }))
}

/// Admits what an earlier collector of this run kept in `dir`.
fn load_arrivals(shards: &mut Shards, dir: &Path) -> Result<(), DistributedError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| DistributedError::io(format!("{}", dir.display()), e))?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let shown = path.display().to_string();
        let name = path
            .file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned());
        let admitted = match path.extension().and_then(|e| e.to_str()) {
            Some("json") => shards.admit_report(name, crate::report::read_json(&path)?),
            Some("failed") => {
                let bytes =
                    std::fs::read(&path).map_err(|e| DistributedError::io(shown.clone(), e))?;
                let notice: FailureNotice = serde_json::from_slice(&bytes)
                    .map_err(|e| DistributedError::Collector(format!("{shown}: {e}")))?;
                shards.admit_failure(&notice.shard, notice.error)
            }
            _ => continue,
        };
        match admitted {
            Ok(shard) => eprintln!("fleetsim collect: shard {shard} had arrived ({shown})"),
            Err(refusal) => {
                return Err(DistributedError::Collector(format!(
                    "{shown} is not of this run: {refusal} (use an empty --out per run)"
                )));
            }
        }
    }
    Ok(())
}
