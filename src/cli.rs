//! The command line: `fleetsim run`, `fleetsim validate`, `fleetsim report`. Each command is a library function so
//! tests can call it; `main.rs` only parses arguments and sets up the runtime.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::fleet::{self, RunOptions};
use crate::{report, scenario};

#[derive(Debug, Parser)]
#[command(
    name = "fleetsim",
    version,
    about = "Fleet simulator and load generator for certificate-authenticated IoT fleets"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a scenario and print its report.
    Run {
        /// The scenario file (YAML).
        scenario: PathBuf,
        /// Where to write the JSON report.
        #[arg(long, default_value = "fleetsim-report.json")]
        report: PathBuf,
        /// No progress lines while running.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Check scenario files and report every problem with file:line:column.
    Validate {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Merge JSON reports (e.g. of shards) exactly and print the merged report.
    Report {
        /// Report files, or directories whose `*.json` files are all reports.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Also write the merged report as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Validate { scenarios } => validate(&scenarios),
        Command::Report { inputs, out } => match merge_reports(&inputs, out.as_deref()) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Run {
            scenario,
            report,
            quiet,
        } => match run(&scenario, &report, !quiet).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Validates each file, printing `ok` or the error; fails if any file is invalid.
pub fn validate(paths: &[PathBuf]) -> ExitCode {
    let mut failed = false;
    for path in paths {
        match scenario::load(path) {
            Ok(s) => println!(
                "ok: {} ({}, {} devices)",
                path.display(),
                s.name,
                s.fleet.devices
            ),
            Err(e) => {
                eprintln!("error: {e}");
                failed = true;
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// Runs a scenario until it ends or Ctrl-C, then prints the report and writes it as JSON. The
/// report is written on Ctrl-C too.
pub async fn run(
    scenario_path: &Path,
    report_path: &Path,
    progress: bool,
) -> anyhow::Result<ExitCode> {
    let scenario = scenario::load(scenario_path)?;
    eprintln!(
        "fleetsim: running {} ({} devices at {:.1}/s for {:.0} s)",
        scenario.name,
        scenario.fleet.devices,
        scenario.fleet.arrival_rate.0,
        scenario.duration.as_secs_f64()
    );
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
        eprintln!("fleetsim: interrupted, stopping devices and writing the report");
    };
    let options = RunOptions {
        progress,
        interval_log: Some(report::hlog::hlog_path(report_path)),
    };
    let outcome = fleet::run(&scenario, &options, ctrl_c).await?;
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
    Ok(threshold_verdict(&outcome.report))
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

/// Status 1, naming each failed threshold, when any failed.
fn threshold_verdict(report: &report::Report) -> ExitCode {
    let failed: Vec<_> = report.failed_thresholds().collect();
    if failed.is_empty() {
        return ExitCode::SUCCESS;
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
