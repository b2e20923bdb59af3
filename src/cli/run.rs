//! `fleetsim run` and `fleetsim report` (merging): a scenario run to its report, and the exit
//! status its thresholds give.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use super::distributed::{self, DistributedRun};
use crate::fleet::{self, RunOptions};
use crate::{report, scenario};

/// What keeps a run against real services accountable: its soak state, its run id and whether
/// a plan over the hub's limits was accepted.
#[derive(Debug, Default)]
pub struct RunSafety<'a> {
    /// `--state FILE`.
    pub state: Option<&'a Path>,
    /// `--run-id`: the id to tag identities with (else the state's, else a new one).
    pub run_id: Option<String>,
    /// `--accept-plan`.
    pub accept_plan: bool,
}

/// Tags a remote scenario's identities with the run id (the state's when it resumes one) and
/// remembers it in the state; `None` for a run that creates no tagged identities.
fn tag_run(
    scenario: &mut scenario::Scenario,
    safety: &RunSafety<'_>,
) -> anyhow::Result<Option<String>> {
    let stored = match safety.state {
        Some(path) => crate::state::stored_run_id(path)?,
        None => None,
    };
    let run_id = match (&safety.run_id, stored) {
        (Some(asked), Some(stored)) if *asked != stored => anyhow::bail!(
            "--run-id {asked}: the state belongs to run {stored}; resume it with its own id"
        ),
        (_, Some(stored)) => stored,
        (Some(asked), None) => asked.clone(),
        (None, None) => crate::cleanup::tag::new_run_id(),
    };
    if !crate::cleanup::tag::tag_scenario(scenario, &run_id).map_err(anyhow::Error::msg)? {
        return Ok(None);
    }
    if let Some(path) = safety.state {
        crate::state::remember_run_id(path, &run_id)?;
    }
    eprintln!(
        "fleetsim: run id {run_id}: identities are tagged fleetsim.run={run_id}; remove them with `fleetsim cleanup --run {run_id}`"
    );
    Ok(Some(run_id))
}

/// Runs a scenario until it ends or Ctrl-C, then prints the report and writes it as JSON. The
/// report is written on Ctrl-C too.
pub async fn run(
    scenario_path: &Path,
    report_path: &Path,
    progress: crate::ui::Progress,
    endpoints: super::web::Endpoints,
    shard: fleet::Shard,
    safety: &RunSafety<'_>,
    distributed: &DistributedRun,
) -> anyhow::Result<ExitCode> {
    let state_path = safety.state;
    let mut scenario = super::smoke::apply(scenario::load(scenario_path)?, &distributed.smoke)?;
    super::plan::gate(&scenario, scenario_path, safety.accept_plan)?;
    let run_id = tag_run(&mut scenario, safety)?;
    check_open_files(&scenario);
    let state = match state_path {
        Some(path) => Some(crate::state::StateFile {
            path: path.to_path_buf(),
            scenario_name: scenario.name.clone(),
            scenario_hash: crate::state::scenario_hash(&std::fs::read(scenario_path)?),
        }),
        None => None,
    };
    // The report's directory is created up front, so a typo'd path fails before the run, not after.
    if let Some(dir) = report_path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| anyhow::anyhow!("report directory {}: {e}", dir.display()))?;
    }
    let metrics_listener = match endpoints.metrics {
        Some(addr) => Some(std::sync::Arc::new(bind_metrics(addr)?)),
        None => None,
    };
    let web_listener = match endpoints.web {
        Some(addr) => Some(std::sync::Arc::new(super::web::bind(addr)?)),
        None => None,
    };
    eprintln!(
        "fleetsim: running {}{} ({} devices, arrivals {}, for {:.0} s)",
        scenario.name,
        match shard.is_whole() {
            true => String::new(),
            false => format!(" shard {shard}"),
        },
        scenario.fleet.devices,
        scenario
            .fleet
            .arrival()
            .map_or("per cohort".into(), |a| fleet::arrivals::describe(&a)),
        scenario.duration.as_secs_f64()
    );
    let ctrl_c = async {
        distributed::stop_signal().await;
        eprintln!("fleetsim: interrupted, stopping devices and writing the report");
    };
    let options = RunOptions {
        progress,
        interval_log: Some(report::hlog::hlog_path(report_path)),
        metrics_listener,
        shard,
        state,
        start_at: distributed.start_at,
        web_listener,
    };
    let mut outcome = fleet::run(&scenario, &options, ctrl_c).await?;
    outcome.report.run_id = run_id;
    println!("{}", outcome.report.to_text());
    outcome.report.write_json(report_path)?;
    let html_path = report_path.with_extension("html");
    // The scenario parsed a moment ago; should it have gone since, the page just shows no text.
    let scenario_text = std::fs::read_to_string(scenario_path).unwrap_or_default();
    report::html::write_html(&outcome.report, &scenario_text, &html_path)?;
    eprintln!(
        "fleetsim: report written to {} (and {})",
        report_path.display(),
        html_path.display()
    );
    if let Some(url) = &distributed.report_to {
        let delivered = distributed::deliver(url, &outcome.report).await?;
        return Ok(interrupted_or(&outcome.report, delivered));
    }
    let verdict = threshold_verdict(&outcome.report);
    Ok(interrupted_or(&outcome.report, verdict))
}

/// The exit status of a run stopped by Ctrl-C or SIGTERM before its duration (128 + SIGINT, as
/// shells report an interrupted command): it did not run its scenario, so it neither passes nor
/// fails its thresholds.
pub const EXIT_INTERRUPTED: u8 = 130;

/// [`EXIT_INTERRUPTED`] for an interrupted run, else `status`.
fn interrupted_or(report: &report::Report, status: ExitCode) -> ExitCode {
    if report.interrupted {
        eprintln!("fleetsim: the run was interrupted: exit status {EXIT_INTERRUPTED}");
        return ExitCode::from(EXIT_INTERRUPTED);
    }
    status
}

/// Raises the open-file limit and warns, with the numbers, when the fleet needs more.
fn check_open_files(scenario: &scenario::Scenario) {
    let devices = u64::from(scenario.fleet.devices.get());
    let embedded = matches!(scenario.target.value, scenario::Target::Embedded(_));
    match crate::rlimit::raise_nofile() {
        Ok(limit) => {
            let needed = crate::rlimit::descriptors_needed(devices, embedded);
            if let Some(w) = crate::rlimit::shortfall_warning(needed, limit, devices, embedded) {
                eprintln!("fleetsim: warning: {w}");
            }
        }
        Err(e) => eprintln!("fleetsim: warning: cannot read or raise the open-file limit: {e}"),
    }
}

/// Binds the `/metrics` listener before the run starts, so a taken port fails fast.
fn bind_metrics(addr: std::net::SocketAddr) -> anyhow::Result<std::net::TcpListener> {
    use anyhow::Context;
    if !addr.ip().is_loopback() {
        eprintln!(
            "fleetsim: warning: serving metrics on {addr} (not loopback); anyone who can reach it can read them"
        );
    }
    let listener =
        std::net::TcpListener::bind(addr).with_context(|| format!("--metrics-addr {addr}"))?;
    eprintln!(
        "fleetsim: Prometheus metrics at http://{}/metrics",
        listener.local_addr()?
    );
    Ok(listener)
}

/// Merges the reports named by `inputs`, prints the result and writes it to `out` if given.
pub fn merge_reports(inputs: &[PathBuf], out: Option<&Path>) -> anyhow::Result<ExitCode> {
    let merged = report::merge_files(inputs)?;
    println!("{}", merged.to_text());
    if let Some(out) = out {
        merged.write_json(out)?;
        eprintln!(
            "fleetsim: merged {} reports into {}",
            merged.merged_from.len(),
            out.display()
        );
    }
    Ok(threshold_verdict(&merged))
}

/// Status 1, naming each failed threshold, when any failed or any task panicked.
fn threshold_verdict(report: &report::Report) -> ExitCode {
    let failed: Vec<_> = report.failed_thresholds().collect();
    for (at, n) in &report.panics {
        eprintln!("fleetsim: {n} panic(s) caught in {at}: the run fails");
    }
    if failed.is_empty() {
        return match report.panics.is_empty() {
            true => ExitCode::SUCCESS,
            false => ExitCode::FAILURE,
        };
    }
    for t in &failed {
        eprintln!(
            "fleetsim: threshold failed: {} (actual {})",
            t.threshold, t.actual
        );
    }
    eprintln!(
        "fleetsim: {} of {} thresholds failed",
        failed.len(),
        report.thresholds.len()
    );
    ExitCode::FAILURE
}
