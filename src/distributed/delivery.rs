//! The shard's side of collection (`fleetsim run --report-to URL`): POST the JSON report, or
//! the shard's failure, to the collector, retrying while the collector is unreachable or
//! restarting, so the result outlives the pod that produced it.
//!
//! Wire format: `POST URL` with `Content-Type: application/json` and, when
//! [`TOKEN_ENV`] is set, `Authorization: Bearer <token>`. The body is a report
//! (`fleetsim.report/v1`) or a [`FailureNotice`] (`fleetsim.shard-failure/v1`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::error::DistributedError;
use crate::report::Report;

/// The environment variable holding the shared token of a run's shards and collector.
pub const TOKEN_ENV: &str = "FLEETSIM_COLLECT_TOKEN";

/// The schema of a shard's failure notice.
pub const FAILURE_SCHEMA: &str = "fleetsim.shard-failure/v1";

/// A shard's word that it failed and will send no report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct FailureNotice {
    pub schema: String,
    /// `i/n`.
    pub shard: String,
    pub error: String,
}

/// How long a shard keeps trying to reach its collector (a collector pod that was evicted and
/// rescheduled comes back within this), and the longest pause between tries.
const DELIVERY_DEADLINE: Duration = Duration::from_secs(300);
const MAX_PAUSE: Duration = Duration::from_secs(20);
/// Reports with histograms and a long timeline are megabytes: time enough to send one.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Sends `report` to the collector at `url`.
pub async fn deliver_report(url: &str, report: &Report) -> Result<(), DistributedError> {
    let body = serde_json::to_vec(report).map_err(crate::report::ReportError::from)?;
    post(url, body, DELIVERY_DEADLINE).await
}

/// Tells the collector at `url` that `shard` failed with `error` (tried for a shorter while:
/// the shard is failing anyway, and the collector names it as missing if this is lost).
pub async fn notify_failure(url: &str, shard: &str, error: &str) -> Result<(), DistributedError> {
    let notice = FailureNotice {
        schema: FAILURE_SCHEMA.into(),
        shard: shard.into(),
        error: error.into(),
    };
    let body = serde_json::to_vec(&notice).map_err(crate::report::ReportError::from)?;
    post(url, body, Duration::from_secs(30)).await
}

/// POSTs `body` until the collector accepts it or answers that it never will (4xx), with
/// pauses doubling from 1 s up to [`MAX_PAUSE`], for at most `deadline`.
async fn post(url: &str, body: Vec<u8>, deadline: Duration) -> Result<(), DistributedError> {
    let failed = |reason: String| DistributedError::Delivery {
        url: url.to_string(),
        reason,
    };
    crate::crypto::install_crypto_provider();
    let http = reqwest::Client::builder()
        .timeout(REQUEST_TIMEOUT)
        .build()
        .map_err(|e| failed(e.to_string()))?;
    let token = std::env::var(TOKEN_ENV).ok().filter(|t| !t.is_empty());
    let give_up = Instant::now() + deadline;
    let mut pause = Duration::from_secs(1);
    loop {
        let mut request = http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone());
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        let last = match request.send().await {
            Ok(answer) if answer.status().is_success() => return Ok(()),
            Ok(answer) if answer.status().is_client_error() => {
                let status = answer.status();
                let text = answer.text().await.unwrap_or_default();
                return Err(failed(format!("refused: {status} {}", text.trim())));
            }
            Ok(answer) => format!("{}", answer.status()),
            Err(e) => e.to_string(),
        };
        if Instant::now() + pause > give_up {
            return Err(failed(format!(
                "gave up after {} s: {last}",
                deadline.as_secs()
            )));
        }
        eprintln!(
            "fleetsim: report not delivered yet ({last}); trying again in {} s",
            pause.as_secs()
        );
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}
