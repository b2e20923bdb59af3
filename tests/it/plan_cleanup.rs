//! Safe against a real hub (issue #17): `fleetsim plan` with known answers, `fleetsim run`
//! refusing a remote plan that exceeds the daily quota, and plan → run → cleanup against
//! `fleetsim emulate` as a remote target leaving the registry as it was.

use std::process::Command;
use std::time::Duration;

use crate::common;

const LIMIT: Duration = Duration::from_secs(60);

fn fleetsim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn an_s1_unit_with_500_devices_at_one_message_a_second_exceeds_the_quota_and_run_refuses() {
    let dir = common::scratch_dir("plan-quota");
    let scenario = dir.join("quota.yaml");
    std::fs::write(
        &scenario,
        "name: quota\nduration: 1h\ntarget:\n  remote:\n    ezca: {url: 'https://127.0.0.1:9/'}\n    iothub: {sku: S1, units: 1}\nfleet:\n  devices: 500\n  arrival_rate: 50/s\n  registration: bulk\ntelemetry:\n  interval: 1s\n",
    )
    .unwrap();
    let plan = common::output_within(fleetsim().arg("plan").arg(&scenario), LIMIT);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(out.contains("EXCEEDS"), "{out}");
    assert!(out.contains("13.3 min"), "{out}");
    assert!(out.contains("400,000"), "{out}");

    // `run` refuses before it touches the network (nothing listens on port 9 anyway).
    let run = common::output_within(
        fleetsim()
            .args(["run", "--quiet", "--report"])
            .arg(dir.join("r.json"))
            .arg(&scenario),
        LIMIT,
    );
    let out = text(&run);
    assert_eq!(run.status.code(), Some(1), "{out}");
    assert!(out.contains("the plan exceeds the hub's limits"), "{out}");
    assert!(out.contains("--accept-plan"), "{out}");

    let json = common::output_within(fleetsim().args(["plan", "--json"]).arg(&scenario), LIMIT);
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(plan["tier"], "S1 x 1");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn an_unknown_sku_is_a_clear_error() {
    let dir = common::scratch_dir("plan-sku");
    let scenario = dir.join("s4.yaml");
    std::fs::write(
        &scenario,
        "name: s4\nduration: 1m\ntarget:\n  remote:\n    ezca: {url: 'https://127.0.0.1:9/'}\n    iothub: {sku: S4}\nfleet:\n  devices: 5\n  arrival_rate: 5/s\n",
    )
    .unwrap();
    let plan = common::output_within(fleetsim().arg("plan").arg(&scenario), LIMIT);
    let out = text(&plan);
    assert_eq!(plan.status.code(), Some(1), "{out}");
    assert!(out.contains("s4.yaml:6:"), "{out}");
    assert!(out.contains("S4"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}
