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
    let options = crate::cleanup::Options {
        dry_run: args.dry_run,
        pace: args.pace,
        ..Default::default()
    };
    // On stdout with the result: the progress is the command's account of what it did.
    let progress = |done: usize, total: usize| println!("cleanup: {done}/{total} done");
    let stop = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let outcome = crate::cleanup::cleanup(
        &admin.registry,
        &admin.service,
        &run_id,
        &options,
        progress,
        stop,
    )
    .await?;
    print!("{}", outcome.to_text(args.dry_run));
    Ok(match outcome.interrupted {
        true => ExitCode::from(super::run::EXIT_INTERRUPTED),
        false => ExitCode::SUCCESS,
    })
}
