//! `fleetsim cleanup`: removes what a run left in the hub. The run's identities are the ones
//! whose twin carries its tag (`tags.fleetsim.run = '<id>'`, see [`tag`]); the run id comes from
//! the command line, the run's report or its `--state` file. Only identities the registry query
//! returns with that tag are deleted (each item's tag is checked again), so an identity without
//! it is never touched, whatever its name. Deletes go in bulk calls of 100, paced below the
//! registry throttle. Each pass starts from what the hub still holds, so a killed or interrupted
//! cleanup loses nothing: run it again and it carries on with what is left. With `--revoke` it
//! first revokes the run's certificates at EZCA ([`revoke`]).

pub mod revoke;
pub mod tag;

use std::time::Duration;

use crate::iothub::HubError;
use crate::iothub::identity::{BULK_MAX, run_of};
use crate::iothub::registry::RegistryClient;
use crate::iothub::service::{CallError, ServiceClient};

/// Why a cleanup stopped.
#[derive(Debug, thiserror::Error)]
pub enum CleanupError {
    #[error("listing the run's identities: {0}")]
    Query(#[from] CallError),
    #[error("deleting identities: {0}")]
    Delete(#[from] HubError),
    #[error("revoking certificates at EZCA: {0}")]
    Revoke(crate::ezca::EzcaError),
    #[error("{0}")]
    Input(String),
}

/// How to clean up.
#[derive(Debug, Clone)]
pub struct Options {
    /// List what would be deleted, delete nothing.
    pub dry_run: bool,
    /// Time between bulk calls (the registry's budget: 100 operations a minute per unit on
    /// S1/S2, so one call a second stays well below it).
    pub pace: Duration,
    /// Give up on a call after this many throttled answers in a row.
    pub max_throttled: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            dry_run: false,
            pace: Duration::from_secs(1),
            max_throttled: 10,
        }
    }
}

/// What a cleanup did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    pub run_id: String,
    /// Identities deleted (in a dry run: that would be).
    pub removed: Vec<String>,
    /// Listed with the tag but already gone when deleted (another cleanup got there first).
    pub already_gone: Vec<String>,
    /// Still in the hub with the run's tag (an interrupted cleanup; empty when complete).
    pub left: Vec<String>,
    pub interrupted: bool,
}

/// The query for run `run_id`'s identities.
pub fn run_query(run_id: &str) -> String {
    format!("SELECT * FROM devices WHERE tags.fleetsim.run = '{run_id}'")
}

/// The identities the hub holds with run `run_id`'s tag.
pub async fn tagged_identities(
    service: &ServiceClient,
    run_id: &str,
) -> Result<Vec<String>, CleanupError> {
    if !tag::valid_run_id(run_id) {
        return Err(CleanupError::Input(format!(
            "run id {run_id:?}: expected letters, digits and '-' (e.g. fs1a2b3c4d)"
        )));
    }
    let mut throttled = 0;
    let items = loop {
        match service.query_all(&run_query(run_id), Some(1000)).await {
            // Queries have a throttle of their own (S1: 20 a minute per unit): wait it out.
            Err(CallError::Throttled { retry_after, .. }) if throttled < 10 => {
                throttled += 1;
                let wait = retry_after.unwrap_or(Duration::from_secs(2 * throttled));
                tokio::time::sleep(wait).await;
            }
            other => break other?.items,
        }
    };
    let mut ids: Vec<String> = items
        .iter()
        .filter(|item| {
            item.get("tags")
                .and_then(|t| t.as_object())
                .and_then(run_of)
                == Some(run_id)
        })
        .filter_map(|item| item.get("deviceId")?.as_str().map(str::to_string))
        .collect();
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// Deletes run `run_id`'s identities, `progress` told after each call (done, total), until
/// done or `stop` completes (then `left` says what remains).
pub async fn cleanup(
    registry: &RegistryClient,
    service: &ServiceClient,
    run_id: &str,
    options: &Options,
    mut progress: impl FnMut(usize, usize),
    stop: impl std::future::Future<Output = ()>,
) -> Result<Outcome, CleanupError> {
    let ids = tagged_identities(service, run_id).await?;
    let mut outcome = Outcome {
        run_id: run_id.to_string(),
        ..Outcome::default()
    };
    if options.dry_run {
        outcome.removed = ids;
        return Ok(outcome);
    }
    tokio::pin!(stop);
    let chunks: Vec<&[String]> = ids.chunks(BULK_MAX).collect();
    for (n, chunk) in chunks.iter().enumerate() {
        if n > 0 {
            tokio::select! {
                _ = &mut stop => {
                    outcome.interrupted = true;
                    break;
                }
                _ = tokio::time::sleep(options.pace) => {}
            }
        }
        let gone = tokio::select! {
            _ = &mut stop => {
                outcome.interrupted = true;
                break;
            }
            r = delete_chunk(registry, chunk, options) => r?,
        };
        for id in chunk.iter() {
            match gone.contains(id) {
                true => outcome.already_gone.push(id.clone()),
                false => outcome.removed.push(id.clone()),
            }
        }
        progress(
            outcome.removed.len() + outcome.already_gone.len(),
            ids.len(),
        );
    }
    if outcome.interrupted {
        outcome.left = tagged_identities(service, run_id)
            .await
            .unwrap_or_else(|_| {
                let done: std::collections::HashSet<&String> = outcome
                    .removed
                    .iter()
                    .chain(&outcome.already_gone)
                    .collect();
                ids.iter()
                    .filter(|id| !done.contains(id))
                    .cloned()
                    .collect()
            });
    }
    Ok(outcome)
}

/// One bulk delete, retried after throttling; answers the ids that were already gone.
async fn delete_chunk(
    registry: &RegistryClient,
    chunk: &[String],
    options: &Options,
) -> Result<Vec<String>, CleanupError> {
    let mut throttled = 0;
    loop {
        match registry.bulk_delete(chunk).await {
            Ok(result) => {
                let mut gone = Vec::new();
                for e in result.errors {
                    match e.error_code.as_str() {
                        "DeviceNotFound" => gone.push(e.device_id),
                        _ => {
                            return Err(CleanupError::Input(format!(
                                "the hub refused to delete {}: {} ({})",
                                e.device_id, e.error_code, e.error_status
                            )));
                        }
                    }
                }
                return Ok(gone);
            }
            Err(HubError::Status {
                status: 429,
                retry_after,
                ..
            }) if throttled < options.max_throttled => {
                throttled += 1;
                let wait = retry_after.unwrap_or(options.pace * 2u32.pow(throttled.min(6)));
                tokio::time::sleep(wait).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

impl Outcome {
    /// What the cleanup did, in words, naming every identity it removed.
    pub fn to_text(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would remove" } else { "removed" };
        let mut s = format!(
            "cleanup of run {}: {verb} {} identit{}",
            self.run_id,
            self.removed.len(),
            if self.removed.len() == 1 { "y" } else { "ies" }
        );
        if !self.already_gone.is_empty() {
            s.push_str(&format!(", {} already gone", self.already_gone.len()));
        }
        s.push('\n');
        for id in &self.removed {
            s.push_str(&format!("  {verb}: {id}\n"));
        }
        if self.interrupted {
            s.push_str(&format!(
                "interrupted: {} identit{} of run {} left; run the same cleanup again to remove them\n",
                self.left.len(),
                if self.left.len() == 1 { "y" } else { "ies" },
                self.run_id
            ));
            for id in &self.left {
                s.push_str(&format!("  left: {id}\n"));
            }
        }
        s
    }
}
