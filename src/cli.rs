//! The command line: `fleetsim run`, `fleetsim validate`, `fleetsim report`. Each command is a library function so
//! tests can call it; `main.rs` only parses arguments and sets up the runtime.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod distributed;
mod keys;

pub use distributed::DistributedRun;

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
        #[arg(long, value_parser = distributed::parse_span)]
        wait: Option<std::time::Duration>,
    },
}

#[derive(Debug, clap::Args)]
pub struct EmulateArgs {
    /// Address to listen on. Loopback by default: the emulators accept test credentials.
    #[arg(long, default_value = "127.0.0.1")]
    pub ip: std::net::IpAddr,
    /// EZCA HTTPS port.
    #[arg(long, default_value_t = 8443)]
    pub ca_port: u16,
    /// IoT Hub MQTT/TLS port.
    #[arg(long, default_value_t = 8883)]
    pub mqtt_port: u16,
    /// IoT Hub MQTT-over-WebSocket port.
    #[arg(long, default_value_t = 8444)]
    pub websocket_port: u16,
    /// IoT Hub AMQP/TLS port (C2D sends and the Event Hub-compatible endpoint).
    #[arg(long, default_value_t = 5671)]
    pub amqp_port: u16,
    /// IoT Hub service REST port: the registry, twins, direct methods, statistics and queries
    /// (443 in Azure, fixed in Microsoft's service SDKs).
    #[arg(long, default_value_t = 8445)]
    pub registry_port: u16,
    /// The hub's host name (in device usernames and SAS tokens).
    #[arg(long, default_value = "fleetsim-hub.azure-devices.net")]
    pub hub_host: String,
    /// Where to write trust.pem, ezca-token, hub-connection-string and target.yaml.
    #[arg(long, default_value = "fleetsim-emulator")]
    pub dir: PathBuf,
    /// Real time per scenario day for issued certificates (e.g. 3s); real days when absent.
    #[arg(long)]
    pub time_scale: Option<String>,
    /// The CA's MaxCertLifeDays.
    #[arg(long, default_value_t = 397)]
    pub max_cert_life_days: u32,
    /// Throttle the hub like this tier (F1, B1, B2, B3, S1, S2, S3).
    #[arg(long)]
    pub sku: Option<crate::iothub::quotas::Sku>,
    /// Hub units of the --sku tier (at most what the tier allows: 1 on F1, 10 on B3/S3, else 200).
    #[arg(long, default_value_t = 1)]
    pub units: u32,
    /// EZCA's "disable device on revoke": a revoked certificate's device is disabled in the hub,
    /// which drops it and refuses its reconnects (off: it stays connected, as IoT Hub alone does).
    #[arg(long)]
    pub disable_device_on_revoke: bool,
    /// Address of DPS's endpoints: an address of its own, because Microsoft's SDKs use port 8883
    /// for DPS as for the hub (map --dps-host to it in /etc/hosts for them).
    #[arg(long, default_value = "127.0.0.2")]
    pub dps_ip: std::net::IpAddr,
    /// DPS MQTT/TLS port.
    #[arg(long, default_value_t = 8883)]
    pub dps_port: u16,
    /// DPS MQTT-over-WebSocket port.
    #[arg(long, default_value_t = 8444)]
    pub dps_websocket_port: u16,
    /// DPS service REST API port (enrolment groups, registration records).
    #[arg(long, default_value_t = 8446)]
    pub dps_service_port: u16,
    /// DPS's host name (its server certificate's name, and the name in service SAS tokens).
    #[arg(long, default_value = "fleetsim-dps.azure-devices-provisioning.net")]
    pub dps_host: String,
    /// DPS's id scope (a random 0ne… one when absent).
    #[arg(long)]
    pub dps_id_scope: Option<String>,
    /// Do not start DPS.
    #[arg(long)]
    pub no_dps: bool,
    /// Keep the CA's and the hub's keys, the TLS trust root, the issued certificates, domains,
    /// revocations and the hub's registry in FILE (0600: it holds private keys), so a
    /// restarted `fleetsim emulate` is the same CA and hub to its clients. Created when absent.
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

pub async fn main(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Emulate(args) => match emulate(args).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        },
        Command::Validate { scenarios } => validate(&scenarios),
        Command::Keys { command } => match keys::main(command) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("error: {}", describe(&e));
                ExitCode::FAILURE
            }
        },
        Command::Report {
            inputs,
            out,
            expect,
            thresholds,
            wait,
        } => {
            let judged = expect.is_some() || thresholds.is_some() || wait.is_some();
            let result = match judged {
                true => {
                    let thresholds = thresholds.as_deref();
                    distributed::judge_reports(&inputs, out.as_deref(), expect, thresholds, wait)
                        .await
                }
                false => merge_reports(&inputs, out.as_deref()),
            };
            exit_code(result)
        }
        Command::Collect(args) => exit_code(distributed::collect(args).await),
        Command::PlanShards(args) => exit_code(distributed::plan_shards(&args)),
        Command::Run {
            scenario,
            report,
            quiet,
            no_tui,
            metrics_addr,
            shard,
            state,
            start_at,
            report_to,
        } => {
            let shard = shard.unwrap_or_default();
            let distributed = DistributedRun {
                start_at,
                report_to,
            };
            let progress = crate::ui::Progress::choose(quiet, no_tui);
            let result = run(
                &scenario,
                &report,
                progress,
                metrics_addr,
                shard,
                state.as_deref(),
                &distributed,
            )
            .await;
            if let (Err(e), Some(url)) = (&result, &distributed.report_to) {
                distributed::tell_failure(url, shard, &describe(e)).await;
            }
            exit_code(result)
        }
    }
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

/// Runs a scenario until it ends or Ctrl-C, then prints the report and writes it as JSON. The
/// report is written on Ctrl-C too.
pub async fn run(
    scenario_path: &Path,
    report_path: &Path,
    progress: crate::ui::Progress,
    metrics_addr: Option<std::net::SocketAddr>,
    shard: fleet::Shard,
    state_path: Option<&Path>,
    distributed: &DistributedRun,
) -> anyhow::Result<ExitCode> {
    let scenario = scenario::load(scenario_path)?;
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
    let metrics_listener = match metrics_addr {
        Some(addr) => Some(std::sync::Arc::new(bind_metrics(addr)?)),
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
        web_listener: None,
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

/// `fleetsim emulate`.
pub async fn emulate(args: EmulateArgs) -> anyhow::Result<()> {
    use crate::emulator::{Addresses, HubConfig};

    if let Err(e) = crate::rlimit::raise_nofile() {
        eprintln!("fleetsim: warning: cannot raise the open-file limit: {e}");
    }
    if !args.ip.is_loopback() {
        eprintln!(
            "fleetsim: warning: listening on {} (not loopback); anyone who can reach it can get certificates",
            args.ip
        );
    }
    let at = |port| std::net::SocketAddr::new(args.ip, port);
    let addrs = Addresses {
        ca: at(args.ca_port),
        hub_mqtt: at(args.mqtt_port),
        hub_registry: at(args.registry_port),
        hub_websocket: at(args.websocket_port),
        amqp: at(args.amqp_port),
    };
    let ca = emulated_ca(&args)?;
    let hub = HubConfig {
        host_name: args.hub_host.clone(),
        limits: emulated_hub_limits(&args)?,
        ..HubConfig::default()
    };
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    let options = crate::emulator::standalone::Options {
        addrs,
        ca: &ca,
        hub: &hub,
        dps: dps_setup(&args),
        dir: &args.dir,
        token_lifetime_secs: 30 * 86_400,
        state: args.state.as_deref(),
    };
    crate::emulator::standalone::run(options, print_ready, ctrl_c).await?;
    Ok(())
}

fn emulated_ca(args: &EmulateArgs) -> anyhow::Result<crate::emulator::CaConfig> {
    use crate::clock::Clock;
    use anyhow::Context;

    let clock = match &args.time_scale {
        Some(t) => Clock::compressed(
            t.parse::<scenario::Span>()
                .map_err(anyhow::Error::msg)
                .context("--time-scale")?
                .0,
        ),
        None => Clock::real(),
    };
    Ok(crate::emulator::CaConfig {
        clock,
        max_cert_life_days: args.max_cert_life_days,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: args.disable_device_on_revoke,
    })
}

/// `--sku` and `--units` (unlimited without a tier).
fn emulated_hub_limits(
    args: &EmulateArgs,
) -> anyhow::Result<crate::emulator::hub::throttle::HubLimits> {
    use crate::emulator::hub::throttle::HubLimits;

    let Some(sku) = args.sku else {
        return Ok(HubLimits::unlimited());
    };
    let max = sku.limits().max_units;
    if !(1..=max).contains(&args.units) {
        anyhow::bail!("--units {}: {sku} allows 1 to {max}", args.units);
    }
    Ok(HubLimits::for_sku(
        sku,
        args.units,
        std::time::Duration::from_millis(500),
    ))
}

/// DPS's addresses and settings for `fleetsim emulate`, unless --no-dps.
fn dps_setup(
    args: &EmulateArgs,
) -> Option<(crate::emulator::DpsAddresses, crate::emulator::DpsConfig)> {
    if args.no_dps {
        return None;
    }
    let at = |port| std::net::SocketAddr::new(args.dps_ip, port);
    let addrs = crate::emulator::DpsAddresses {
        mqtt: at(args.dps_port),
        websocket: at(args.dps_websocket_port),
        service: at(args.dps_service_port),
    };
    let config = crate::emulator::DpsConfig {
        host_name: args.dps_host.clone(),
        id_scope: args.dps_id_scope.clone(),
        ..Default::default()
    };
    Some((addrs, config))
}

/// What `fleetsim emulate` prints once it serves.
fn print_ready(w: &crate::emulator::standalone::Written) {
    println!("EZCA:              {}", w.ca_url);
    for (label, id) in &w.ca_ids {
        println!("  {label:<5} issuing CA: {id}");
    }
    println!(
        "IoT Hub MQTT:      mqtts://{}  (host name {})",
        w.hub_mqtt, w.hub_host
    );
    println!(
        "IoT Hub WebSocket: wss://{}/$iothub/websocket",
        w.hub_websocket
    );
    println!(
        "IoT Hub registry:  {}  (devices, twins, methods, statistics, query)",
        w.hub_registry_url
    );
    if let Some(d) = &w.dps {
        println!(
            "DPS MQTT:          mqtts://{}  (host name {}, id scope {})",
            d.mqtt, d.host, d.id_scope
        );
        println!("DPS WebSocket:     wss://{}/$iothub/websocket", d.websocket);
        println!("DPS service API:   {}", d.service_url);
        println!(
            "DPS credentials:   {} (0600)",
            d.connection_string_file.display()
        );
    }
    println!(
        "IoT Hub AMQP:      amqps://{}  (C2D, Event Hub-compatible endpoint)",
        w.hub_amqp
    );
    println!(
        "Event Hub endpoint: {} (0600: its connection string)",
        w.event_hub_connection_string_file.display()
    );
    println!("trust bundle:      {}", w.trust_pem.display());
    println!("EZCA token:        {} (0600)", w.token_file.display());
    println!(
        "hub credentials:   {} (0600)",
        w.connection_string_file.display()
    );
    println!("scenario target:   {}", w.target_yaml.display());
    if let Some(d) = &w.dps {
        println!(
            "  with DPS:        {} (fleet.provisioning: dps)",
            d.target_yaml.display()
        );
    }
    println!("ready; Ctrl-C stops");
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
