//! `fleetsim cleanup --revoke`: revokes at EZCA every certificate a run was issued, as its
//! `--state` file lists them (the state is the only record of a certificate's thumbprint,
//! which `RevokeCertificateV2` takes; a report or a run id names none). One call per
//! certificate, paced; each revocation is committed to the state as soon as EZCA confirms it,
//! so a killed or interrupted revocation loses nothing and a rerun revokes only what is left.
//! Nothing outside the state is ever revoked.

use std::time::Duration;

use super::CleanupError;
use crate::ezca::models::AvailableCa;
use crate::ezca::{Client as EzcaClient, EzcaError};
use crate::state::{RevocationLedger, RunCertificate};

/// How to revoke.
#[derive(Debug, Clone)]
pub struct RevokeOptions {
    /// List what would be revoked, revoke nothing.
    pub dry_run: bool,
    /// Time between two revocations.
    pub pace: Duration,
    /// Give up on a certificate after this many transient failures (429, 5xx) in a row.
    pub max_retries: u32,
}

impl Default for RevokeOptions {
    fn default() -> Self {
        Self {
            dry_run: false,
            pace: Duration::from_millis(100),
            max_retries: 8,
        }
    }
}

/// What a revocation pass did. Every certificate of the state is in exactly one of
/// `revoked`, `already_revoked`, `no_thumbprint`, `refused` or `left`.
#[derive(Debug, Clone, Default)]
pub struct RevokeOutcome {
    /// Revoked by this pass (in a dry run: would be).
    pub revoked: Vec<RunCertificate>,
    /// Revoked by an earlier pass over the same state.
    pub already_revoked: Vec<RunCertificate>,
    /// Known only by serial (a state from before thumbprints were recorded): cannot be named
    /// to EZCA.
    pub no_thumbprint: Vec<RunCertificate>,
    /// EZCA answered that it would not revoke it, with its reason.
    pub refused: Vec<(RunCertificate, String)>,
    /// Not reached: the pass was interrupted.
    pub left: Vec<RunCertificate>,
    pub interrupted: bool,
}

/// Revokes the certificates `ledger` lists and has not revoked yet, telling `progress` (done,
/// to do) after each, until done or `stop` completes.
pub async fn revoke(
    client: &EzcaClient,
    ca: &AvailableCa,
    ledger: &RevocationLedger,
    options: &RevokeOptions,
    mut progress: impl FnMut(usize, usize),
    stop: impl std::future::Future<Output = ()>,
) -> Result<RevokeOutcome, CleanupError> {
    let mut outcome = RevokeOutcome::default();
    let mut todo = Vec::new();
    for cert in ledger.certificates().map_err(state_error)? {
        match (&cert.thumbprint, cert.revoked) {
            (_, true) => outcome.already_revoked.push(cert),
            (None, false) => outcome.no_thumbprint.push(cert),
            (Some(_), false) => todo.push(cert),
        }
    }
    if options.dry_run {
        outcome.revoked = todo;
        return Ok(outcome);
    }
    tokio::pin!(stop);
    let total = todo.len();
    let mut queue = todo.into_iter();
    let mut n = 0;
    while let Some(cert) = queue.next() {
        let thumbprint = cert.thumbprint.clone().unwrap_or_default();
        let pause = if n == 0 { Duration::ZERO } else { options.pace };
        let answer = tokio::select! {
            _ = &mut stop => None,
            a = async {
                tokio::time::sleep(pause).await;
                revoke_one(client, ca, &thumbprint, options).await
            } => Some(a),
        };
        let Some(answer) = answer else {
            outcome.interrupted = true;
            outcome.left.push(cert);
            outcome.left.extend(queue);
            break;
        };
        match answer {
            Ok(()) => {
                ledger.mark_revoked(&thumbprint).map_err(state_error)?;
                outcome.revoked.push(cert);
            }
            Err(EzcaError::Refused(why)) => outcome.refused.push((cert, why)),
            Err(e) => return Err(CleanupError::Revoke(e)),
        }
        n += 1;
        progress(n, total);
    }
    Ok(outcome)
}

/// One `RevokeCertificateV2`, retried while EZCA answers with a transient failure.
async fn revoke_one(
    client: &EzcaClient,
    ca: &AvailableCa,
    thumbprint: &str,
    options: &RevokeOptions,
) -> Result<(), EzcaError> {
    let mut failures = 0;
    loop {
        match client.revoke_certificate_v2(ca, thumbprint).await {
            Err(e) if e.is_transient() && failures < options.max_retries => {
                failures += 1;
                let retry_after = match &e {
                    EzcaError::Status { retry_after, .. } => *retry_after,
                    _ => None,
                };
                let backoff = options.pace.max(Duration::from_millis(200)) * (1 << failures.min(6));
                tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
            }
            other => return other,
        }
    }
}

fn state_error(e: crate::state::StateError) -> CleanupError {
    CleanupError::Input(format!("the run's state: {e}"))
}

impl RevokeOutcome {
    /// What the revocation did, in words, with exact counts and every certificate it revoked.
    pub fn to_text(&self, dry_run: bool) -> String {
        let verb = if dry_run { "would revoke" } else { "revoked" };
        let plural = |n: usize| if n == 1 { "" } else { "s" };
        let mut s = format!(
            "revocation: {verb} {} certificate{}, {} revoked before, {} refused by EZCA, {} without a thumbprint",
            self.revoked.len(),
            plural(self.revoked.len()),
            self.already_revoked.len(),
            self.refused.len(),
            self.no_thumbprint.len(),
        );
        if self.interrupted {
            s.push_str(&format!(", {} left", self.left.len()));
        }
        s.push('\n');
        let line = |c: &RunCertificate| {
            format!(
                "{} (device {}, serial {})",
                c.thumbprint.as_deref().unwrap_or("?"),
                c.device_id,
                c.serial
            )
        };
        for c in &self.revoked {
            s.push_str(&format!("  {verb}: {}\n", line(c)));
        }
        for (c, why) in &self.refused {
            s.push_str(&format!("  refused: {}: {why}\n", line(c)));
        }
        for c in &self.no_thumbprint {
            s.push_str(&format!(
                "  not revoked (the state has no thumbprint for it; revoke it in EZCA's portal): {}\n",
                line(c)
            ));
        }
        if self.interrupted {
            s.push_str(&format!(
                "interrupted: {} certificate{} left to revoke; run the same cleanup again to revoke them\n",
                self.left.len(),
                plural(self.left.len())
            ));
        }
        s
    }
}
