//! Microsoft's Python SDKs as test peers: a driver in `tests/peers/` runs against a `fleetsim
//! emulate` and prints one JSON object per line (`{"step": name, …}`); the tests read them back.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::process::{output_within, python};

/// What a driver printed.
pub struct Driver {
    pub stdout: String,
    pub stderr: String,
    steps: HashMap<String, Value>,
}

/// Runs `tests/peers/{script} {device}` against the `fleetsim emulate` that wrote `dir` (its hub
/// connection string and `trust.pem`), within two minutes. Fails the test, showing the driver's
/// output, if the driver fails.
pub fn run_driver(script: &str, device: &str, dir: &Path) -> Driver {
    let hub_cs = std::fs::read_to_string(dir.join("hub-connection-string")).unwrap();
    let driver = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(script);
    let out = output_within(
        Command::new(python())
            .arg(driver)
            .arg(device)
            .env("FLEETSIM_HUB_CS", hub_cs.trim())
            .env("FLEETSIM_CA_BUNDLE", dir.join("trust.pem")),
        Duration::from_secs(120),
    );
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{script} failed:\n{stdout}\n{stderr}");
    let steps = json_lines(&stdout)
        .into_iter()
        .filter_map(|v| Some((v["step"].as_str()?.to_string(), v)))
        .collect();
    Driver {
        stdout,
        stderr,
        steps,
    }
}

impl Driver {
    /// Every JSON line the driver printed, in order.
    pub fn lines(&self) -> Vec<Value> {
        json_lines(&self.stdout)
    }

    /// The line of step `name`; fails the test, showing the driver's output, if there is none.
    pub fn step(&self, name: &str) -> &Value {
        self.steps
            .get(name)
            .unwrap_or_else(|| panic!("no step {name} in:\n{}\n{}", self.stdout, self.stderr))
    }
}

fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}
