//! The README's commands as run here: each group runs its commands as the README writes them,
//! with only what CI needs changed (`--smoke` for long runs, free ports for listeners, a scratch
//! directory, a small `--count`), and checks the effect the README describes.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::common::{self, Watched};

pub const GROUPS: &[&str] = &[
    "quickstart",
    "keys",
    "emulate-fleet-10k",
    "plan-shards",
    "emulate-time-scale",
    "emulate-sdk-ports",
    "metrics",
    "soak-state",
    "report-merge",
    "init",
];

/// A smoke run lasts 10 s plus setup; a loaded 2-core machine gets ample slack.
const RUN_LIMIT: Duration = Duration::from_secs(150);
const EMULATE_LIMIT: Duration = Duration::from_secs(60);

pub fn run_group(group: &str, dir: &Path) -> Result<(), String> {
    match group {
        "quickstart" => quickstart(dir),
        "keys" => keys(dir),
        "emulate-fleet-10k" => emulate_fleet_10k(dir),
        "plan-shards" => plan_shards(),
        "emulate-time-scale" => emulate_time_scale(dir),
        "emulate-sdk-ports" => emulate_sdk_ports(dir),
        "metrics" => metrics(dir),
        "soak-state" => soak_state(dir),
        "report-merge" => report_merge(dir),
        "init" => init(dir),
        other => Err(format!("no run group {other}")),
    }
}

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn fleetsim(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    c.current_dir(repo()).args(args);
    c
}

fn text(out: &Output) -> String {
    format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeeded(what: &str, out: Output) -> Result<Output, String> {
    match out.status.success() {
        true => Ok(out),
        false => Err(format!("`{what}`: {}\n{}", out.status, text(&out))),
    }
}

fn report_json(path: &Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// A passed run's report: every device connected and every threshold of `scenario` (a path
/// from the repository's root, or absolute) passed, where a latency one may miss (see
/// [`crate::scenario_smoke::judge`]).
fn passed(report: &Path, devices: u64, scenario: &str) -> Result<serde_json::Value, String> {
    let json = report_json(report)?;
    let connected = json["devices"]["connected"].as_u64().unwrap_or(0);
    if connected != devices {
        return Err(format!("{connected} of {devices} devices connected"));
    }
    let written = fleetsim::scenario::load(&repo().join(scenario)).map_err(|e| e.to_string())?;
    crate::scenario_smoke::judge(&json, &written)?;
    Ok(json)
}

/// A run's exit status 0, or 1 for a failed threshold (which [`passed`] then judges).
fn ran(what: &str, out: Output) -> Result<Output, String> {
    match out.status.code() {
        Some(0 | 1) => Ok(out),
        _ => Err(format!("`{what}`: {}\n{}", out.status, text(&out))),
    }
}

/// `cargo run --release -- run scenarios/quickstart.yaml`: the quickstart passes (smoke form).
fn quickstart(dir: &Path) -> Result<(), String> {
    let report = dir.join("quickstart.json");
    let what = "fleetsim run scenarios/quickstart.yaml --smoke";
    let mut c = fleetsim(&["run", "scenarios/quickstart.yaml", "--smoke", "--quiet"]);
    c.arg("--report").arg(&report);
    let out = ran(what, common::output_within(&mut c, RUN_LIMIT))?;
    if !String::from_utf8_lossy(&out.stdout).contains("quickstart") {
        return Err(format!("`{what}` printed no report:\n{}", text(&out)));
    }
    passed(&report, 10, "scenarios/quickstart.yaml").map(drop)
}

/// `fleetsim keys generate --kind rsa-2048 --count N` fills the pool; `keys list` counts it.
fn keys(dir: &Path) -> Result<(), String> {
    let pool = dir.join("pool");
    let generate = "fleetsim keys generate --kind rsa-2048 --count 3";
    let mut c = fleetsim(&["keys", "generate", "--kind", "rsa-2048", "--count", "3"]);
    c.env("FLEETSIM_KEY_DIR", &pool);
    succeeded(generate, common::output_within(&mut c, RUN_LIMIT))?;
    let mut c = fleetsim(&["keys", "list"]);
    c.env("FLEETSIM_KEY_DIR", &pool);
    let out = succeeded(
        "fleetsim keys list",
        common::output_within(&mut c, RUN_LIMIT),
    )?;
    let listed = String::from_utf8_lossy(&out.stdout).into_owned();
    let rsa = listed
        .lines()
        .find(|l| l.trim_start().starts_with("rsa-2048"));
    match rsa.map(|l| l.split_whitespace().last() == Some("3")) {
        Some(true) => Ok(()),
        _ => Err(format!(
            "`keys list` after generating 3 rsa-2048 keys:\n{listed}"
        )),
    }
}

/// `fleetsim emulate` on free ports, ready, its files written.
fn emulate(dir: &Path, extra: &[&str]) -> Result<(Watched, String), String> {
    let mut child = Watched::spawn(
        common::emulate_on_free_ports(dir).args(extra),
        "fleetsim emulate",
    );
    let banner = child.read_until("ready", EMULATE_LIMIT);
    for file in [
        "trust.pem",
        "ezca-token",
        "hub-connection-string",
        "target.yaml",
    ] {
        if !dir.join(file).is_file() {
            return Err(format!("fleetsim emulate wrote no {file} into --dir"));
        }
    }
    Ok((child, banner))
}

/// Stops `fleetsim emulate` as the README does (Ctrl-C) and checks it exits cleanly.
fn stop(mut child: Watched) -> Result<(), String> {
    let id = child.id().to_string();
    let sent = Command::new("kill").args(["-INT", &id]).status();
    if !sent.is_ok_and(|s| s.success()) {
        return Err("could not send SIGINT to fleetsim emulate".into());
    }
    match child.wait_within(EMULATE_LIMIT).success() {
        true => Ok(()),
        false => Err("fleetsim emulate did not exit cleanly on Ctrl-C".into()),
    }
}

/// The scenario `file` with its `target:` block replaced by `target` (what `fleetsim emulate`
/// wrote into target.yaml, for the ports it got).
fn retarget(file: &Path, target: &str) -> String {
    let text = std::fs::read_to_string(file).unwrap();
    let mut out = String::new();
    let mut skipping = false;
    for line in text.lines() {
        if line.starts_with("target:") {
            skipping = true;
            out.push_str(target);
            if !target.ends_with('\n') {
                out.push('\n');
            }
            continue;
        }
        if skipping && (line.starts_with(' ') || line.is_empty() || line.starts_with('#')) {
            continue;
        }
        skipping = false;
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// `fleetsim emulate --dir fleetsim-emulator &`, the tokens exported, then `fleetsim run
/// scenarios/fleet-10k.yaml` against it (smoke form; its target pointed at the free ports).
fn emulate_fleet_10k(dir: &Path) -> Result<(), String> {
    let emu = dir.join("fleetsim-emulator");
    let (child, _) = emulate(&emu, &[])?;
    let target = std::fs::read_to_string(emu.join("target.yaml")).unwrap();
    let scenario = dir.join("fleet-10k.yaml");
    std::fs::write(
        &scenario,
        retarget(&repo().join("scenarios/fleet-10k.yaml"), &target),
    )
    .unwrap();
    let report = dir.join("fleet-10k.json");
    let mut c = fleetsim(&["run", "--smoke", "--quiet", "--report"]);
    c.arg(&report).arg(&scenario);
    with_tokens(&mut c, &emu);
    let out = common::output_within(&mut c, RUN_LIMIT);
    stop(child)?;
    ran("fleetsim run scenarios/fleet-10k.yaml --smoke", out)?;
    let json = passed(&report, 10, &scenario.to_string_lossy())?;
    match json["target"] == "remote" {
        true => Ok(()),
        false => Err(format!(
            "the run's target is {}, not remote",
            json["target"]
        )),
    }
}

/// `fleetsim plan-shards …`: prints what the README shows (base) and plans the AKS overlay.
fn plan_shards() -> Result<(), String> {
    let base = "deploy/kubernetes/base/scenario.yaml";
    let what = format!("fleetsim plan-shards {base} --devices-per-pod 5000");
    let out = common::output_within(
        &mut fleetsim(&["plan-shards", base, "--devices-per-pod", "5000"]),
        RUN_LIMIT,
    );
    let out = succeeded(&what, out)?;
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let shown = shown_output(&readme, &format!("$ {what}"));
    if shown.is_empty() {
        return Err(format!("README.md shows no output after `$ {what}`"));
    }
    for line in shown {
        if !printed.lines().any(|p| p.trim_end() == line.trim_end()) {
            return Err(format!(
                "README.md shows `{line}` for `{what}`, which printed:\n{printed}"
            ));
        }
    }
    let aks = "deploy/kubernetes/overlays/aks/scenario.yaml";
    let out = common::output_within(
        &mut fleetsim(&["plan-shards", aks, "--devices-per-pod", "5000"]),
        RUN_LIMIT,
    );
    succeeded(&format!("fleetsim plan-shards {aks}"), out).map(drop)
}

/// The lines a README block shows after the `prompt` line, up to the block's end.
fn shown_output(readme: &str, prompt: &str) -> Vec<String> {
    readme
        .lines()
        .skip_while(|l| l.trim_end() != prompt)
        .skip(1)
        .take_while(|l| !l.starts_with("```"))
        .map(str::to_string)
        .collect()
}

/// `cargo run --release -- emulate --time-scale 3s &`, the tokens exported, its target.yaml
/// pasted under a scenario: certificates live 3 s per day, so 2-day ones renew in a 10 s run.
fn emulate_time_scale(dir: &Path) -> Result<(), String> {
    let emu = dir.join("fleetsim-emulator");
    let (child, _) = emulate(&emu, &["--time-scale", "3s"])?;
    let target = std::fs::read_to_string(emu.join("target.yaml")).unwrap();
    let scenario = dir.join("pasted.yaml");
    let text = format!(
        "name: pasted\nduration: 10s\n{target}fleet:\n  devices: 2\n  arrival_rate: 2/s\n\
         certificate:\n  validity_days: 2\n  renew_at: 50%\ntelemetry:\n  interval: 1s\n"
    );
    std::fs::write(&scenario, text).unwrap();
    let report = dir.join("pasted.json");
    let mut c = fleetsim(&["run", "--quiet", "--report"]);
    c.arg(&report).arg(&scenario);
    with_tokens(&mut c, &emu);
    let out = common::output_within(&mut c, RUN_LIMIT);
    stop(child)?;
    ran("fleetsim run (a scenario with target.yaml pasted)", out)?;
    let json = passed(&report, 2, &scenario.to_string_lossy())?;
    match json["devices"]["renewed"].as_u64() {
        Some(2) => Ok(()),
        other => Err(format!("{other:?} of 2 devices renewed on the 3 s day")),
    }
}

/// `export EZCA_TOKEN=…; export IOTHUB_CONNECTION_STRING=…` from what emulate wrote in `emu`.
fn with_tokens(c: &mut Command, emu: &Path) {
    for (var, file) in [
        ("EZCA_TOKEN", "ezca-token"),
        ("IOTHUB_CONNECTION_STRING", "hub-connection-string"),
    ] {
        c.env(var, std::fs::read_to_string(emu.join(file)).unwrap().trim());
    }
}

/// `fleetsim emulate --ip 127.0.15.1 --hub-host my-hub.azure-devices.net --no-dps …` as
/// written (the SDKs' fixed ports on an address of its own): it serves, named as asked.
fn emulate_sdk_ports(dir: &Path) -> Result<(), String> {
    let emu = dir.join("fleetsim-emulator");
    // An address no other test uses: --azure-ports binds 443, 8883 and 5671 on it.
    let mut c = fleetsim(&["emulate", "--azure-ports", "--ip", "127.0.15.9"]);
    c.args([
        "--hub-host",
        "my-hub.azure-devices.net",
        "--no-dps",
        "--ca-port",
        "0",
    ])
    .arg("--dir")
    .arg(&emu)
    .stdout(std::process::Stdio::piped());
    let mut child = Watched::spawn(&mut c, "fleetsim emulate --azure-ports --ip 127.0.15.9");
    let banner = child.read_until("ready", EMULATE_LIMIT);
    stop(child)?;
    let hub = std::fs::read_to_string(emu.join("hub-connection-string")).unwrap();
    match banner.contains("mqtts://127.0.15.9:8883")
        && banner.contains("wss://127.0.15.9:443/$iothub/websocket")
        && banner.contains("amqps://127.0.15.9:5671")
        && banner.contains("/etc/hosts: 127.0.15.9 my-hub.azure-devices.net")
        && hub.contains("HostName=my-hub.azure-devices.net;")
    {
        true => Ok(()),
        false => Err(format!(
            "banner or connection string not as asked:\n{banner}"
        )),
    }
}

/// `fleetsim init my-run.yaml`: the scenario and the schema beside it, and the scenario valid.
fn init(dir: &Path) -> Result<(), String> {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    c.current_dir(dir).args(["init", "my-run.yaml"]);
    succeeded(
        "fleetsim init my-run.yaml",
        common::output_within(&mut c, RUN_LIMIT),
    )?;
    let schema = dir.join("fleetsim.schema.json");
    if !schema.is_file() {
        return Err(format!("init wrote no {}", schema.display()));
    }
    let mut validate = Command::new(env!("CARGO_BIN_EXE_fleetsim"));
    validate.current_dir(dir).args(["validate", "my-run.yaml"]);
    succeeded(
        "fleetsim validate my-run.yaml",
        common::output_within(&mut validate, RUN_LIMIT),
    )?;
    Ok(())
}

/// A loopback port free right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// `GET /metrics` from `addr`, or `None` while nothing answers.
fn scrape(addr: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let request = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// `fleetsim run scenarios/quickstart.yaml --metrics-addr …` then `curl …/metrics | grep
/// '^fleetsim_devices'`: the device gauges are served while the run goes on.
fn metrics(dir: &Path) -> Result<(), String> {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut c = fleetsim(&["run", "scenarios/quickstart.yaml", "--metrics-addr", &addr]);
    c.args(["--smoke", "--quiet", "--report"])
        .arg(dir.join("metrics.json"))
        .stdout(std::process::Stdio::null());
    let mut child = Watched::spawn(&mut c, "fleetsim run --metrics-addr");
    let deadline = Instant::now() + RUN_LIMIT;
    let mut seen = None;
    while Instant::now() < deadline && !child.has_exited() {
        if let Some(body) = scrape(&addr)
            && body.lines().any(|l| l.starts_with("fleetsim_devices{"))
        {
            seen = Some(body);
            break;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let status = child.wait_within(RUN_LIMIT);
    if !status.success() {
        return Err(format!("the run with --metrics-addr: {status}"));
    }
    match seen {
        Some(_) => Ok(()),
        None => Err(format!(
            "no fleetsim_devices line at http://{addr}/metrics during the run"
        )),
    }
}

fn state_ready(db: &Path) -> rusqlite::Result<bool> {
    let conn = rusqlite::Connection::open(db)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let q = |sql: &str| conn.query_row(sql, [], |r| r.get::<_, i64>(0));
    Ok(q("SELECT count(*) FROM checkpoint")? == 1
        && q("SELECT count(*) FROM devices WHERE enrolled = 1")? > 0)
}

/// `fleetsim run scenarios/renewal-certificate.yaml --state soak.db`, killed with SIGKILL once
/// it has saved a checkpoint, then the same command again: it resumes and passes.
fn soak_state(dir: &Path) -> Result<(), String> {
    let db = dir.join("soak.db");
    let command = |report: &str| {
        let mut c = fleetsim(&["run", "scenarios/renewal-certificate.yaml", "--state"]);
        c.arg(&db)
            .args(["--smoke", "--report"])
            .arg(dir.join(report))
            .env("FLEETSIM_KEY_DIR", dir.join("keys"));
        c
    };
    let log = dir.join("first.log");
    let mut first = command("first.json");
    first
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    let mut child = Watched::spawn(&mut first, "the first soak run");
    let deadline = Instant::now() + RUN_LIMIT;
    while !(db.exists() && state_ready(&db).unwrap_or(false)) {
        if child.has_exited() {
            let said = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "the first soak run ended before saving a checkpoint:\n{said}"
            ));
        }
        if Instant::now() > deadline {
            return Err("the first soak run saved no checkpoint in time".into());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    child.kill();
    let out = common::output_within(&mut command("second.json"), RUN_LIMIT);
    let out = ran(
        "fleetsim run scenarios/renewal-certificate.yaml --state soak.db (again)",
        out,
    )?;
    if !String::from_utf8_lossy(&out.stderr).contains("resuming from") {
        return Err(format!("the second run did not resume:\n{}", text(&out)));
    }
    passed(
        &dir.join("second.json"),
        10,
        "scenarios/renewal-certificate.yaml",
    )
    .map(drop)
}

/// Three shard reports, then `fleetsim report shard-0.json shard-1.json shard-2.json --out
/// merged.json`: the merged report covers the whole fleet.
fn report_merge(dir: &Path) -> Result<(), String> {
    let shards: Vec<_> = (0..3)
        .map(|i| {
            let dir: PathBuf = dir.to_path_buf();
            std::thread::spawn(move || {
                let shard = format!("{i}/3");
                let mut c = fleetsim(&["run", "--smoke", "--quiet", "--shard", &shard]);
                c.arg("--report")
                    .arg(dir.join(format!("shard-{i}.json")))
                    .arg("scenarios/quickstart.yaml");
                ran(
                    &format!("fleetsim run --shard {shard}"),
                    common::output_within(&mut c, RUN_LIMIT),
                )
                .map(drop)
            })
        })
        .collect();
    for s in shards {
        s.join().unwrap()?;
    }
    let mut c = fleetsim(&["report", "shard-0.json", "shard-1.json", "shard-2.json"]);
    c.args(["--out", "merged.json"]).current_dir(dir);
    let what = "fleetsim report shard-0.json shard-1.json shard-2.json --out merged.json";
    ran(what, common::output_within(&mut c, RUN_LIMIT))?;
    passed(&dir.join("merged.json"), 10, "scenarios/quickstart.yaml").map(drop)
}
