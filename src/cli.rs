//! The command line: the argument types and the dispatch to each command, one file per command
//! under `cli/`. Each command is a library function so tests can call it; `main.rs` only parses
//! arguments and sets up the runtime.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod cleanup;
mod distributed;
mod emulate;
mod hub;
mod init;
mod keys;
mod plan;
mod run;
mod schema;
mod smoke;
mod spans;
mod web;

pub use cleanup::{CleanupArgs, cleanup_command};
pub use distributed::DistributedRun;
pub use emulate::{EmulateArgs, emulate};
pub use plan::{PlanArgs, plan_command};
pub use run::{EXIT_INTERRUPTED, merge_reports, run};

use crate::{fleet, scenario};

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
        /// No live view and no progress lines while running.
        #[arg(long, short)]
        quiet: bool,
        /// Plain progress lines on stderr instead of the live terminal view (the default when
        /// stdout is not a terminal).
        #[arg(long)]
        no_tui: bool,
        /// Serve Prometheus metrics at http://ADDR/metrics while running (e.g. 127.0.0.1:9464).
        #[arg(long, value_name = "ADDR")]
        metrics_addr: Option<std::net::SocketAddr>,
        /// Serve the live web page of the run at http://ADDR/ (a port alone is on loopback,
        /// e.g. 8080 or 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR", value_parser = web::parse_web_addr)]
        web: Option<std::net::SocketAddr>,
        /// Run only slice INDEX of COUNT of the fleet (0-based, e.g. 0/2 and 1/2); the shards'
        /// JSON reports merge with `fleetsim report`.
        #[arg(long, value_name = "INDEX/COUNT")]
        shard: Option<fleet::Shard>,
        /// Keep the soak's state (identities, keys, certificates, counters) in this SQLite file
        /// and resume from it if it exists: a killed soak carries on where it stopped.
        #[arg(long, value_name = "FILE")]
        state: Option<PathBuf>,
        /// Start the arrival clock at this time (RFC 3339, e.g. 2026-12-01T10:00:00Z), so the
        /// shards of a distributed run start together; a shard ready only later starts from it
        /// anyway and reports how late it was.
        #[arg(long, value_name = "RFC3339", value_parser = distributed::parse_start_at)]
        start_at: Option<std::time::SystemTime>,
        /// POST the JSON report (or, if the run fails, the failure) to this `fleetsim collect`
        /// URL (e.g. http://fleetsim-collector:8080/reports); the exit status then says whether
        /// it arrived, and the collector judges the thresholds on the merged report.
        #[arg(long, value_name = "URL")]
        report_to: Option<String>,
        #[command(flatten)]
        smoke: smoke::SmokeArgs,
        /// Run a remote scenario even though its plan exceeds the hub's daily quota or a cap
        /// (`fleetsim plan` shows it); embedded targets never need it.
        #[arg(long)]
        accept_plan: bool,
        /// Tag the identities the run creates with this id (default: the --state file's, else
        /// a new one); shards of one distributed run should share it.
        #[arg(long, value_name = "ID")]
        run_id: Option<String>,
    },
    /// What a run will ask of the CA and the hub, per second, per minute and in total, against
    /// the hub tier's throttles and daily quota: each line fits, is throttled or exceeds.
    ///
    /// Exits 1 when a line exceeds a quota or cap.
    Plan(PlanArgs),
    /// Delete a remote run's identities from the hub: only those tagged with its run id, in
    /// bulk calls of 100, paced; run it again after an interruption to remove what is left.
    Cleanup(CleanupArgs),
    /// Operations on a remote hub (CA upload with proof of possession).
    Hub {
        #[command(subcommand)]
        command: hub::HubCommand,
    },
    /// Receive the shards' reports of a distributed run, merge them and give one verdict.
    ///
    /// Exits 0 when every shard reported, none failed and the thresholds pass on the merged
    /// report; 1 otherwise, naming every shard that never reported or failed.
    Collect(distributed::CollectArgs),
    /// How many pods (shards) a scenario needs and what each needs: memory, CPU, open files,
    /// source ports; with a patch for the Kubernetes overlay.
    PlanShards(distributed::PlanShardsArgs),
    /// Run the EZCA and IoT Hub emulators standalone.
    ///
    /// For `fleetsim run` processes with a remote target and for other tools: writes the trust
    /// bundle, test tokens, the hub's connection string and a ready `target:` block into --dir,
    /// then serves until Ctrl-C.
    Emulate(EmulateArgs),
    /// Check scenario files and report every problem with file:line:column.
    Validate {
        #[arg(required = true)]
        scenarios: Vec<PathBuf>,
    },
    /// Write a commented starting scenario (and the JSON Schema beside it, for editors).
    Init(init::InitArgs),
    /// Print the JSON Schema of scenario files, for editors (scenarios/fleetsim.schema.json).
    Schema(schema::SchemaArgs),
    /// Fill or list the on-disk key pool (for `certificate.key_source: pool`).
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Merge JSON reports (e.g. of shards) exactly and print the merged report.
    Report {
        /// Report files, or directories whose `*.json` files are all reports.
        #[arg(required = true)]
        inputs: Vec<PathBuf>,
        /// Also write the merged report as JSON.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The run had this many shards: each must be there once (missing ones fail the verdict).
        #[arg(long, value_name = "N")]
        expect: Option<u32>,
        /// Check this scenario file's thresholds on the merged report (instead of the inputs').
        #[arg(long, value_name = "SCENARIO")]
        thresholds: Option<PathBuf>,
        /// Wait up to this long (e.g. 10m) for --expect reports to appear in the inputs.
        #[arg(long, value_parser = spans::parse_span)]
        wait: Option<std::time::Duration>,
        /// Serve the web page of the run in the one report given, as it ended, at http://ADDR/
        /// (a port alone is on loopback), until Ctrl-C.
        #[arg(long, value_name = "ADDR", value_parser = web::parse_web_addr)]
        web: Option<std::net::SocketAddr>,
    },
}

pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Emulate(args) => exit_code(emulate(args).await.map(|()| ExitCode::SUCCESS)),
        Command::Validate { scenarios } => validate(&scenarios),
        Command::Init(args) => exit_code(init::main(&args).map(|()| ExitCode::SUCCESS)),
        Command::Schema(args) => exit_code(schema::main(&args).map(|()| ExitCode::SUCCESS)),
        Command::Keys { command } => exit_code(keys::main(command)),
        report @ Command::Report { .. } => report_command(report).await,
        Command::Collect(args) => exit_code(distributed::collect(args).await),
        Command::Plan(args) => exit_code(plan_command(&args).await),
        Command::Cleanup(args) => exit_code(cleanup_command(&args).await),
        Command::Hub { command } => exit_code(hub::main(&command).await),
        Command::PlanShards(args) => exit_code(distributed::plan_shards(&args)),
        run @ Command::Run { .. } => run_command(run).await,
    }
}

/// `fleetsim report`: replay one report on the web, judge a distributed run's reports, or merge.
async fn report_command(command: Command) -> ExitCode {
    let Command::Report {
        inputs,
        out,
        expect,
        thresholds,
        wait,
        web,
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let judged = expect.is_some() || thresholds.is_some() || wait.is_some();
    if let Some(addr) = web {
        if judged || out.is_some() {
            eprintln!("error: --web replays one report and takes no other option");
            return ExitCode::FAILURE;
        }
        return exit_code(web::replay(&inputs, addr).await);
    }
    let result = match judged {
        true => {
            let thresholds = thresholds.as_deref();
            distributed::judge_reports(&inputs, out.as_deref(), expect, thresholds, wait).await
        }
        false => merge_reports(&inputs, out.as_deref()),
    };
    exit_code(result)
}

/// `fleetsim run`: its options gathered for [`run`], and a shard's failure told to the collector.
async fn run_command(command: Command) -> ExitCode {
    let Command::Run {
        scenario,
        report,
        quiet,
        no_tui,
        metrics_addr,
        web,
        shard,
        state,
        start_at,
        report_to,
        smoke,
        accept_plan,
        run_id,
    } = command
    else {
        return ExitCode::FAILURE;
    };
    let shard = shard.unwrap_or_default();
    let distributed = DistributedRun {
        start_at,
        report_to,
        smoke,
    };
    let progress = crate::ui::Progress::choose(quiet, no_tui);
    let endpoints = web::Endpoints {
        metrics: metrics_addr,
        web,
    };
    let safety = run::RunSafety {
        state: state.as_deref(),
        run_id,
        accept_plan,
    };
    let result = run(
        &scenario,
        &report,
        progress,
        endpoints,
        shard,
        &safety,
        &distributed,
    )
    .await;
    if let (Err(e), Some(url)) = (&result, &distributed.report_to) {
        distributed::tell_failure(url, shard, &describe(e)).await;
    }
    exit_code(result)
}

/// The command's own status, or 1 after printing its error.
fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", describe(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes on one line. Our errors already include their source's text in
/// their own message (`EZCA: no usable CA: …`), so a cause whose text is already there is not
/// repeated; context added with `anyhow` (whose message does not) still shows its cause.
fn describe(e: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if line.is_empty() {
            line = text;
        } else if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
    }
    line
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

#[cfg(test)]
mod tests {
    use super::describe;
    use anyhow::Context;

    #[test]
    fn errors_print_each_cause_once() {
        let inner = crate::ezca::EzcaError::NoCa("2 SSL CAs are available".into());
        let e: anyhow::Error = crate::fleet::FleetError::from(inner).into();
        assert_eq!(describe(&e), "EZCA: no usable CA: 2 SSL CAs are available");
        let e = Err::<(), _>(e).context("run.yaml").unwrap_err();
        assert_eq!(
            describe(&e),
            "run.yaml: EZCA: no usable CA: 2 SSL CAs are available"
        );
    }
}
