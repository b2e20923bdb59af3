//! The commands of a distributed run ([`crate::distributed`]): `fleetsim collect`,
//! `fleetsim plan-shards`, `fleetsim report --expect/--thresholds/--wait`, and what
//! `fleetsim run --start-at/--report-to` add to a run.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::Context;
use tokio::time::Instant;

use crate::distributed::{Collector, Shards, Verdict, delivery, sizing};
use crate::{report, scenario};

/// `fleetsim run`'s part in a distributed run.
#[derive(Debug, Clone, Default)]
pub struct DistributedRun {
    /// Start the arrival clock at this wall-clock time (the start barrier).
    pub start_at: Option<SystemTime>,
    /// POST the report (or the failure) to this collector URL.
    pub report_to: Option<String>,
    /// Run the scenario's smoke form (`--smoke`, `--max-devices`, `--max-duration`): CI runs
    /// shards of smoke forms too.
    pub smoke: super::smoke::SmokeArgs,
}

/// Parses `--start-at` (RFC 3339, e.g. 2026-12-01T10:00:00Z).
pub fn parse_start_at(text: &str) -> Result<SystemTime, String> {
    time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
        .map(SystemTime::from)
        .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2026-12-01T10:00:00Z: {e}"))
}

/// Completes on Ctrl-C or, on Unix, SIGTERM (what Kubernetes sends a pod it stops).
pub async fn stop_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    if tokio::signal::ctrl_c().await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// After a run: delivers its report to the collector. The exit status then says whether the
/// report arrived; the thresholds are judged once, by the collector, on the merged report.
pub async fn deliver(url: &str, report: &report::Report) -> anyhow::Result<ExitCode> {
    delivery::deliver_report(url, report).await?;
    eprintln!("fleetsim: report delivered to {url}; the collector judges the thresholds");
    Ok(ExitCode::SUCCESS)
}

/// After a failed run: tells the collector, so its verdict names this shard at once.
pub async fn tell_failure(url: &str, shard: crate::fleet::Shard, error: &str) {
    if let Err(e) = delivery::notify_failure(url, &shard.to_string(), error).await {
        eprintln!("fleetsim: could not tell the collector: {e}");
    }
}

#[derive(Debug, clap::Args)]
pub struct CollectArgs {
    /// Address to listen on (loopback by default; 0.0.0.0:8080 in a pod).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// How many shards the run has (the n of --shard i/n).
    #[arg(long)]
    pub expect: u32,
    /// Where to keep the shards' reports (`shards/`) and the merged report (`merged.json`,
    /// `merged.html`); an earlier collector's arrivals there are taken over.
    #[arg(long)]
    pub out: PathBuf,
    /// The scenario file: its thresholds decide on the merged report, its name must match the
    /// reports', its duration (with --start-at) sets the deadline.
    #[arg(long, value_name = "SCENARIO")]
    pub thresholds: Option<PathBuf>,
    /// The run's start barrier: shards that have not arrived by it plus the duration plus
    /// --grace never will.
    #[arg(long, value_parser = parse_start_at, value_name = "RFC3339")]
    pub start_at: Option<SystemTime>,
    /// Slack after the start barrier plus the duration for the shards to drain and report.
    #[arg(long, value_parser = super::spans::parse_span, default_value = "2m")]
    pub grace: Duration,
    /// Give up waiting this long after the collector starts (instead of the barrier's deadline).
    #[arg(long, value_parser = super::spans::parse_span)]
    pub timeout: Option<Duration>,
}

/// `fleetsim collect`: receives the shards' reports until all have arrived or the deadline has
/// passed, then merges them, checks the thresholds and exits 0 (pass) or 1 (fail).
pub async fn collect(args: CollectArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(args.expect > 0, "--expect: a run has at least one shard");
    let loaded = match &args.thresholds {
        Some(path) => Some((scenario::load(path)?, path.clone())),
        None => None,
    };
    let shards = Shards::new(args.expect, loaded.as_ref().map(|(s, _)| s.name.clone()));
    let token = std::env::var(delivery::TOKEN_ENV).ok();
    let collector = Collector::load(shards, &args.out, token)?;
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("--listen {}", args.listen))?;
    let addr = listener.local_addr()?;
    if !addr.ip().is_loopback() {
        eprintln!(
            "fleetsim collect: listening on {addr} (not loopback): set {} to require a token",
            delivery::TOKEN_ENV
        );
    }
    let deadline = deadline(&args, loaded.as_ref().map(|(s, _)| s.duration.0));
    println!(
        "fleetsim collect: listening on http://{addr}/reports for {} shards{}",
        args.expect,
        deadline
            .as_ref()
            .map_or(String::new(), |(_, text)| format!(", until {text}"))
    );
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(
        collector
            .clone()
            .serve(listener, stop.clone().cancelled_owned()),
    );
    let deadline_reached = async {
        match &deadline {
            Some((at, _)) => tokio::time::sleep_until(*at).await,
            None => std::future::pending().await,
        }
    };
    let stopped = tokio::select! {
        _ = collector.all_arrived() => false,
        _ = deadline_reached => false,
        _ = stop_signal() => true,
    };
    stop.cancel();
    server.await??;
    if stopped {
        eprintln!(
            "fleetsim collect: stopped before the shards had all arrived: no verdict ({} kept in {})",
            collector.shards().arrived.len(),
            args.out.join("shards").display()
        );
        return Ok(ExitCode::FAILURE);
    }
    let thresholds = loaded.as_ref().map(|(s, _)| s.thresholds.as_slice());
    let verdict = Verdict::judge(&collector.shards(), thresholds)?;
    let scenario_text = match &loaded {
        Some((_, path)) => std::fs::read_to_string(path).unwrap_or_default(),
        None => String::new(),
    };
    finish(&verdict, Some(&args.out), &scenario_text)
}

/// When the collector stops waiting: the barrier plus the duration plus the grace, or the
/// timeout; none without either.
fn deadline(args: &CollectArgs, duration: Option<Duration>) -> Option<(Instant, String)> {
    if let Some(timeout) = args.timeout {
        return Some((
            Instant::now() + timeout,
            format!("{} s from now", timeout.as_secs()),
        ));
    }
    let at = args.start_at? + duration? + args.grace;
    let left = at.duration_since(SystemTime::now()).unwrap_or_default();
    let text = time::OffsetDateTime::from(at)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    Some((Instant::now() + left, text))
}

/// Prints the merged report and the verdict, writes `merged.json` and `merged.html` into `out`
/// (when given), and gives the verdict's exit status.
fn finish(verdict: &Verdict, out: Option<&Path>, scenario_text: &str) -> anyhow::Result<ExitCode> {
    if let Some(merged) = &verdict.merged {
        println!("{}", merged.to_text());
        if let Some(out) = out {
            let json = out.join("merged.json");
            merged.write_json(&json)?;
            report::html::write_html(merged, scenario_text, &out.join("merged.html"))?;
            eprintln!("fleetsim: merged report written to {}", json.display());
        }
    }
    print!("{}", verdict.to_text());
    Ok(match verdict.passed() {
        true => ExitCode::SUCCESS,
        false => ExitCode::FAILURE,
    })
}

/// `fleetsim report` with `--expect`, `--thresholds` or `--wait`: the shards' reports in
/// `inputs` (waited for up to `wait` when fewer than `expect` are there) judged as one run.
pub async fn judge_reports(
    inputs: &[PathBuf],
    out: Option<&Path>,
    expect: Option<u32>,
    thresholds: Option<&Path>,
    wait: Option<Duration>,
) -> anyhow::Result<ExitCode> {
    let scenario = thresholds.map(scenario::load).transpose()?;
    let files = wait_for_files(inputs, expect, wait).await?;
    let reports = files
        .iter()
        .map(|f| report::read_json(f))
        .collect::<Result<Vec<_>, _>>()?;
    let expected = expect.unwrap_or(reports.len() as u32);
    let mut shards = Shards::new(expected, scenario.as_ref().map(|s| s.name.clone()));
    let mut refused = Vec::new();
    for (file, r) in files.iter().zip(reports) {
        let source = file.display().to_string();
        let admitted = match expect {
            Some(_) => shards.admit_report(source.clone(), r),
            // Without --expect every report counts, sharded or not, numbered as read.
            None => {
                let index = shards.arrived.len() as u32;
                let arrival = crate::distributed::Arrival::Report {
                    source: source.clone(),
                    report: Box::new(r),
                };
                shards.arrived.insert(index, arrival);
                continue;
            }
        };
        if let Err(refusal) = admitted {
            refused.push(format!("{source}: {refusal}"));
        }
    }
    let mut verdict = Verdict::judge(&shards, scenario.as_ref().map(|s| s.thresholds.as_slice()))?;
    verdict.problems.extend(refused);
    if let Some(out) = out
        && let Some(merged) = &verdict.merged
    {
        merged.write_json(out)?;
        eprintln!(
            "fleetsim: merged {} reports into {}",
            merged.merged_from.len(),
            out.display()
        );
    }
    finish(&verdict, None, "")
}

/// The report files of `inputs`; with `wait`, polls until `expect` of them are there or the
/// wait is over (then takes what there is).
async fn wait_for_files(
    inputs: &[PathBuf],
    expect: Option<u32>,
    wait: Option<Duration>,
) -> anyhow::Result<Vec<PathBuf>> {
    let (Some(expect), Some(wait)) = (expect, wait) else {
        return Ok(report::merge::report_files(inputs)?);
    };
    let give_up = Instant::now() + wait;
    loop {
        let found = report::merge::report_files(inputs).unwrap_or_default();
        if found.len() >= expect as usize || Instant::now() >= give_up {
            if found.is_empty() {
                return Ok(report::merge::report_files(inputs)?);
            }
            return Ok(found);
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[derive(Debug, clap::Args)]
pub struct PlanShardsArgs {
    /// The scenario file.
    pub scenario: PathBuf,
    /// The most devices one pod runs.
    #[arg(long, default_value_t = 5000)]
    pub devices_per_pod: u64,
}

/// `fleetsim plan-shards`.
pub fn plan_shards(args: &PlanShardsArgs) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.devices_per_pod > 0,
        "--devices-per-pod must be at least 1"
    );
    let scenario = scenario::load(&args.scenario)?;
    let plan = sizing::plan(&scenario, args.devices_per_pod);
    print!("{}", plan.to_text(&scenario.name));
    Ok(ExitCode::SUCCESS)
}
