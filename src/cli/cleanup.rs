//! `fleetsim cleanup`: deletes a remote run's identities from the hub ([`crate::cleanup`]),
//! finding the run by id, by its report or by its `--state` file, and the hub by the scenario.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use crate::scenario::{self, Target};

#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("which").required(true).args(["run", "report", "state"])))]
pub struct CleanupArgs {
    /// The scenario the run used: it names the hub and where its credentials come from.
    #[arg(long)]
    pub scenario: PathBuf,
    /// The run id (`fleetsim run` prints it; identities carry it as tag `fleetsim.run`).
    #[arg(long, value_name = "ID")]
    pub run: Option<String>,
    /// The run's JSON report (its `run_id`).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// The run's `--state` file.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
    /// List what would be deleted; delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Time between bulk calls of 100 deletes (keep it below the registry throttle: 100
    /// operations a minute per unit on S1/S2).
    #[arg(long, default_value = "1s", value_parser = super::spans::parse_span)]
    pub pace: std::time::Duration,
    /// Also revoke the run's certificates at EZCA (`RevokeCertificateV2`), before deleting its
    /// identities. Needs `--state`: the state file is the only record of each certificate's
    /// thumbprint. Resumable: a rerun revokes only what is left.
    #[arg(long)]
    pub revoke: bool,
    /// Time between two revocations at EZCA.
    #[arg(long, default_value = "100ms", value_parser = super::spans::parse_span)]
    pub revoke_pace: std::time::Duration,
}

/// The run id the arguments name.
fn run_id(args: &CleanupArgs) -> anyhow::Result<String> {
    if let Some(id) = &args.run {
        return Ok(id.clone());
    }
    if let Some(path) = &args.report {
        let report = crate::report::merge::read_json(path)
            .with_context(|| format!("--report {}", path.display()))?;
        return report.run_id.with_context(|| {
            format!(
                "--report {}: the report names no run id (an embedded run, or one from before run tagging)",
                path.display()
            )
        });
    }
    let path = args
        .state
        .as_ref()
        .context("name --run, --report or --state")?;
    crate::state::stored_run_id(path)?
        .with_context(|| format!("--state {}: the state names no run id", path.display()))
}

pub async fn cleanup_command(args: &CleanupArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        !args.revoke || args.state.is_some(),
        "--revoke needs the run's --state FILE: only the state records the run's certificates \
         (their thumbprints, which EZCA revokes by); a report or run id names none"
    );
    let scenario = scenario::load(&args.scenario)?;
    let Target::Remote(remote) = &scenario.target.value else {
        anyhow::bail!(
            "{}: an embedded target keeps nothing after the run; cleanup is for remote hubs",
            args.scenario.display()
        );
    };
    let run_id = run_id(args)?;
    let admin = crate::fleet::target::hub_admin(&remote.iothub)?;
    eprintln!(
        "fleetsim: cleanup of run {run_id} on {}{}",
        admin.host_name,
        if args.dry_run { " (dry run)" } else { "" }
    );
    let mut stop = Box::pin(async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    });
    if args.revoke
        && let Some(code) = revoke_certificates(args, remote, &mut stop).await?
    {
        return Ok(code);
    }
    let options = crate::cleanup::Options {
        dry_run: args.dry_run,
        pace: args.pace,
        ..Default::default()
    };
    // On stdout with the result: the progress is the command's account of what it did.
    let progress = |done: usize, total: usize| println!("cleanup: {done}/{total} done");
    let outcome = crate::cleanup::cleanup(
        &admin.registry,
        &admin.service,
        &run_id,
        &options,
        progress,
        &mut stop,
    )
    .await?;
    print!("{}", outcome.to_text(args.dry_run));
    Ok(match outcome.interrupted {
        true => ExitCode::from(super::run::EXIT_INTERRUPTED),
        false => ExitCode::SUCCESS,
    })
}

/// `--revoke`: revokes the certificates of the run's `--state` at the scenario's EZCA; answers
/// the exit code when the cleanup must stop there (interrupted).
async fn revoke_certificates(
    args: &CleanupArgs,
    remote: &crate::scenario::RemoteTarget,
    stop: &mut std::pin::Pin<Box<impl std::future::Future<Output = ()>>>,
) -> anyhow::Result<Option<ExitCode>> {
    let path = args
        .state
        .as_ref()
        .context("--revoke needs --state FILE: only the run's state records its certificates")?;
    let ledger = crate::state::RevocationLedger::open(path)
        .with_context(|| format!("--state {}", path.display()))?;
    let client = crate::fleet::target::ezca_client(remote)?;
    let ca = crate::device::adapters::EzcaCa::discover_by(
        client,
        remote.ezca.ca_id.as_deref(),
        remote.ezca.ca_key_type.as_deref(),
    )
    .await
    .context("finding the run's CA at EZCA")?;
    eprintln!(
        "fleetsim: revoking the certificates of {} at {}{}",
        path.display(),
        remote.ezca.url,
        if args.dry_run { " (dry run)" } else { "" }
    );
    let options = crate::cleanup::revoke::RevokeOptions {
        dry_run: args.dry_run,
        pace: args.revoke_pace,
        ..Default::default()
    };
    let progress = |done: usize, total: usize| println!("revoke: {done}/{total} done");
    let outcome =
        crate::cleanup::revoke::revoke(&ca.client, &ca.ca, &ledger, &options, progress, stop)
            .await?;
    print!("{}", outcome.to_text(args.dry_run));
    Ok(outcome
        .interrupted
        .then(|| ExitCode::from(super::run::EXIT_INTERRUPTED)))
}
