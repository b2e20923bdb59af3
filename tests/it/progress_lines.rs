//! `fleetsim run` without a terminal prints plain progress lines to stderr (what CI logs show),
//! and `--quiet` silences them.

use std::process::Command;

fn run(dir: &std::path::Path, extra: &[&str]) -> (String, String) {
    let scenario = dir.join("tiny.yaml");
    std::fs::write(
        &scenario,
        "name: tiny\nduration: 6s\ntarget:\n  embedded: {}\nfleet:\n  devices: 5\n  arrival_rate: 10/s\n\
         telemetry:\n  interval: 500ms\n",
    )
    .unwrap();
    // stdout and stderr are pipes here, not a terminal: the live view must not start.
    let output = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("run")
        .args(extra)
        .arg("--report")
        .arg(dir.join("tiny.json"))
        .arg(&scenario)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("fleetsim runs");
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "{stderr}");
    (String::from_utf8_lossy(&output.stdout).into_owned(), stderr)
}

#[test]
fn without_a_terminal_the_run_prints_progress_lines() {
    let dir = std::env::temp_dir().join(format!("fleetsim-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (stdout, stderr) = run(&dir, &[]);
    let quiet = run(&dir, &["--quiet"]).1;
    std::fs::remove_dir_all(&dir).ok();

    let line = stderr
        .lines()
        .find(|l| l.starts_with("[   5.") && l.contains("s] devices "))
        .unwrap_or_else(|| panic!("no progress line at 5 s in:\n{stderr}"));
    assert!(line.contains("devices 5/5 started"), "{line}");
    assert!(line.contains("5 online"), "{line}");
    assert!(line.ends_with("| errors 0"), "{line}");
    // No escape sequences of a terminal UI anywhere.
    assert!(!stdout.contains('\u{1b}') && !stderr.contains('\u{1b}'));
    assert!(stdout.contains("devices: 5 planned"), "{stdout}");
    assert!(
        !quiet.contains("] devices "),
        "--quiet still printed: {quiet}"
    );
}
