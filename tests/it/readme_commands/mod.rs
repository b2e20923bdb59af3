//! The README's commands are tested: every `fleetsim …` command in a shell block of README.md
//! (```sh blocks, and `$ ` lines of plain blocks; `cargo run --release --` and
//! `target/release/fleetsim` count as `fleetsim`) is either run here against the emulators, with
//! its documented effect checked ([`runs`]), or listed in [`COMMANDS`] as exempt with the reason.
//! A README command in neither fails the test with its line, so a new example cannot go
//! untested; a listed command the README no longer shows fails it too.

mod runs;

use std::path::Path;

/// How a README command is checked.
#[derive(Debug, Clone, Copy)]
enum How {
    /// Run by the named group in [`runs::run_group`] (commands that depend on each other, e.g.
    /// `emulate` then a run against it, share a group).
    Run(&'static str),
    /// Not run in CI, and why.
    Exempt(&'static str),
}

/// Why the README's "first run against Azure" commands are exempt.
const AZURE: &str = "a real EZCA and IoT Hub (tests talk only to loopback); tests/it/plan_cleanup.rs runs plan --check, a run, cleanup --dry-run, a killed and resumed cleanup, and upload-ca; tests/it/cleanup_revoke.rs cleanup --state --revoke, dry and killed and resumed; tests/it/upload_ca_ezca.rs upload-ca --ezca; all against fleetsim emulate as a remote target, the same code path";

/// Every command the README shows, as extracted (see [`normalise`]), and how it is checked.
const COMMANDS: &[(&str, How)] = &[
    (
        "fleetsim run scenarios/quickstart.yaml",
        How::Run("quickstart"),
    ),
    (
        "fleetsim keys generate --kind rsa-2048 --count 10000",
        How::Run("keys"),
    ),
    ("fleetsim keys list", How::Run("keys")),
    (
        "fleetsim emulate --dir fleetsim-emulator",
        How::Run("emulate-fleet-10k"),
    ),
    (
        "fleetsim run scenarios/fleet-10k.yaml",
        How::Run("emulate-fleet-10k"),
    ),
    (
        "fleetsim plan-shards deploy/kubernetes/base/scenario.yaml --devices-per-pod 5000",
        How::Run("plan-shards"),
    ),
    (
        "fleetsim plan-shards deploy/kubernetes/overlays/aks/scenario.yaml --devices-per-pod 5000",
        How::Run("plan-shards"),
    ),
    (
        "fleetsim collect --expect 4 --out results --thresholds scenarios/fleet-10k.yaml --start-at $START",
        How::Exempt(
            "4 shards of fleet-10k (10,000 devices): a long run; collect, the start barrier and \
             --report-to run at small size in tests/it/shard.rs and the distributed tests",
        ),
    ),
    (
        "fleetsim run --quiet --shard $i/4 --start-at $START --report shard-$i.json --report-to http://127.0.0.1:8080/reports scenarios/fleet-10k.yaml",
        How::Exempt("the shards of the collect example above: same reason"),
    ),
    ("fleetsim init my-run.yaml", How::Run("init")),
    (
        "fleetsim hub upload-ca --scenario my-run.yaml --name devices-ca --cert ca.pem --key ca-key.pem",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim hub upload-ca --scenario my-run.yaml --name ezca-devices --cert ezca-issuing.pem --ezca",
        How::Exempt(AZURE),
    ),
    ("fleetsim plan my-run.yaml", How::Exempt(AZURE)),
    ("fleetsim plan --check my-run.yaml", How::Exempt(AZURE)),
    (
        "fleetsim run my-run.yaml --report run.json --state run.state",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim cleanup --scenario my-run.yaml --report run.json --dry-run",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim cleanup --scenario my-run.yaml --report run.json",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim cleanup --scenario my-run.yaml --state run.state --revoke --dry-run",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim cleanup --scenario my-run.yaml --state run.state --revoke",
        How::Exempt(AZURE),
    ),
    (
        "fleetsim run --web 127.0.0.1:8080 scenarios/demo.yaml",
        How::Exempt(
            "a 3-minute demo served on a fixed port; tests/it/web_view drives the same page in \
             chromium during a short run, and scenario_smoke runs demo.yaml in smoke form",
        ),
    ),
    (
        "fleetsim report --web 127.0.0.1:8080 fleetsim-report.json",
        How::Exempt("serves until Ctrl-C on a fixed port; tests/it/web_view replays a report"),
    ),
    (
        "fleetsim emulate --ip $GATEWAY --dir fleetsim-emulator",
        How::Exempt("listens on a kind cluster's gateway address, which CI does not have"),
    ),
    (
        "fleetsim emulate --time-scale 3s",
        How::Run("emulate-time-scale"),
    ),
    (
        "fleetsim emulate --azure-ports --ip 127.0.15.9 --hub-host my-hub.azure-devices.net --no-dps --ca-port 0",
        How::Run("emulate-sdk-ports"),
    ),
    (
        "fleetsim run scenarios/quickstart.yaml --metrics-addr 127.0.0.1:9464",
        How::Run("metrics"),
    ),
    (
        "fleetsim run scenarios/renewal-certificate.yaml --state soak.db",
        How::Run("soak-state"),
    ),
    (
        "fleetsim report shard-0.json shard-1.json shard-2.json --out merged.json",
        How::Run("report-merge"),
    ),
];

/// A command found in README.md, with its 1-based line.
#[derive(Debug, Clone)]
struct Found {
    line: usize,
    command: String,
}

/// `fleetsim …` for a shell line that runs fleetsim, else `None`: a leading `$ `, a trailing
/// comment and a trailing `&` dropped, whitespace collapsed.
fn normalise(line: &str) -> Option<String> {
    let line = line.trim();
    let line = line.strip_prefix("$ ").unwrap_or(line);
    let line = match line.find(" #") {
        Some(i) => &line[..i],
        None => line,
    };
    let line = line.trim().trim_end_matches('&').trim();
    let words: Vec<&str> = line.split_whitespace().collect();
    let rest = match words.as_slice() {
        [
            "fleetsim" | "target/release/fleetsim" | "target/debug/fleetsim",
            rest @ ..,
        ] => rest,
        ["cargo", "run", "--release", "--", rest @ ..] => rest,
        _ => return None,
    };
    Some(
        std::iter::once("fleetsim")
            .chain(rest.iter().copied())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Every fleetsim command in the shell blocks of `readme` (continuation lines joined).
fn extract(readme: &str) -> Vec<Found> {
    let mut found = Vec::new();
    let mut block: Option<String> = None;
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in readme.lines().enumerate() {
        if let Some(lang) = raw.trim_start().strip_prefix("```") {
            block = match block {
                Some(_) => None,
                None => Some(lang.trim().to_string()),
            };
            continue;
        }
        let Some(lang) = &block else { continue };
        let shell = lang == "sh" || lang == "bash" || lang == "console";
        if !shell && lang.is_empty() && !raw.trim_start().starts_with("$ ") {
            continue;
        }
        if !shell && !lang.is_empty() {
            continue;
        }
        let (start, mut text) = pending.take().unwrap_or((i + 1, String::new()));
        let piece = raw.trim_end();
        if let Some(cont) = piece.strip_suffix('\\') {
            text.push_str(cont);
            text.push(' ');
            pending = Some((start, text));
            continue;
        }
        text.push_str(piece);
        if let Some(command) = normalise(&text) {
            found.push(Found {
                line: start,
                command,
            });
        }
    }
    found
}

fn readme() -> String {
    std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap()
}

#[test]
fn extraction_reads_blocks_prompts_and_continuations() {
    let text = "```sh\ncargo run --release -- run a.yaml   # note\nfleetsim emulate \\\n  --ip 1.2.3.4 &\n\
        echo fleetsim x\n```\n```\n$ fleetsim plan-shards s.yaml\nfleetsim output line\n```\n\
        ```yaml\nfleetsim: not a command\n```\n`fleetsim inline` is prose\n";
    let got: Vec<String> = extract(text).into_iter().map(|f| f.command).collect();
    assert_eq!(
        got,
        [
            "fleetsim run a.yaml",
            "fleetsim emulate --ip 1.2.3.4",
            "fleetsim plan-shards s.yaml"
        ]
    );
}

/// Every README command is known here, and every one listed here is still in the README.
#[test]
fn every_readme_command_is_run_or_exempted() {
    let found = extract(&readme());
    let unknown: Vec<String> = found
        .iter()
        .filter(|f| !COMMANDS.iter().any(|(c, _)| *c == f.command))
        .map(|f| {
            format!(
                "README.md:{}: `{}` is neither run by tests/it/readme_commands nor exempted: \
                 add it to COMMANDS with a run group (and its check in runs.rs) or a reason",
                f.line, f.command
            )
        })
        .collect();
    let stale: Vec<String> = COMMANDS
        .iter()
        .filter(|(c, _)| !found.iter().any(|f| f.command == *c))
        .map(|(c, _)| format!("`{c}` is listed in COMMANDS but README.md no longer shows it"))
        .collect();
    assert!(
        unknown.is_empty() && stale.is_empty(),
        "{}",
        [unknown, stale].concat().join("\n")
    );
    for (command, how) in COMMANDS {
        if let How::Run(group) = how {
            assert!(runs::GROUPS.contains(group), "{command}: no group {group}");
        }
    }
}

/// Runs every group the README's commands need, in parallel, and reports every failure.
#[test]
fn the_readme_commands_do_what_it_says() {
    let found = extract(&readme());
    let mut groups: Vec<&'static str> = COMMANDS
        .iter()
        .filter(|(c, _)| found.iter().any(|f| f.command == *c))
        .filter_map(|(_, how)| match how {
            How::Run(group) => Some(*group),
            How::Exempt(_) => None,
        })
        .collect();
    groups.sort();
    groups.dedup();
    for (command, how) in COMMANDS {
        if let How::Exempt(why) = how {
            eprintln!("not run: `{command}`: {why}");
        }
    }
    let dir = crate::common::scratch_dir("readme-commands");
    let handles: Vec<_> = groups
        .into_iter()
        .map(|group| {
            let dir = dir.join(group);
            std::fs::create_dir_all(&dir).unwrap();
            (
                group,
                std::thread::spawn(move || runs::run_group(group, &dir)),
            )
        })
        .collect();
    let mut failures = Vec::new();
    for (group, handle) in handles {
        match handle.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(format!("[{group}] {e}")),
            Err(panic) => failures.push(format!(
                "[{group}] panicked: {}",
                panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default()
            )),
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
