//! `fleetsim init` as a user runs it: it writes the template's scenario and the schema beside it,
//! refuses to overwrite a file without `--force`, and each template validates and (but the remote
//! one) runs as it is against the embedded emulators.
//!
//! `remote-azure` is only validated: running it needs the real EZCA and IoT Hub and their
//! secrets (its point), which tests never reach (they talk to loopback only).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use fleetsim::scenario::{self, schema, templates::Template};

use crate::common::{output_within, scratch_dir};

fn init(args: &[&str], file: &Path) -> std::process::Output {
    output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("init")
            .args(args)
            .arg(file),
        Duration::from_secs(30),
    )
}

#[test]
fn init_writes_the_scenario_and_the_schema_and_keeps_existing_files() {
    let dir = scratch_dir("init-files");
    let file = dir.join("scenario.yaml");
    let first = init(&[], &file);
    assert!(first.status.success(), "{first:?}");
    let written = std::fs::read_to_string(&file).unwrap();
    assert_eq!(
        written,
        Template::named("quickstart").unwrap().scenario_text()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("fleetsim.schema.json")).unwrap(),
        schema::to_pretty_json()
    );

    std::fs::write(&file, "mine\n").unwrap();
    let again = init(&["--template", "dps"], &file);
    assert_eq!(again.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("exists") && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "mine\n");

    let forced = init(&["--template", "dps", "--force"], &file);
    assert!(forced.status.success(), "{forced:?}");
    assert_eq!(scenario::load(&file).unwrap().name, "dps");

    let unknown = init(&["--template", "nope"], &dir.join("other.yaml"));
    assert_eq!(
        unknown.status.code(),
        Some(2),
        "clap refuses it: {unknown:?}"
    );
    assert!(!dir.join("other.yaml").exists());
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_remote_template_validates_and_walks_through_its_secrets() {
    let t = Template::named("remote-azure").unwrap();
    assert!(!t.embedded);
    let s = scenario::parse(&t.scenario_text(), Path::new("remote-azure.yaml")).unwrap();
    assert!(matches!(s.target.value, scenario::Target::Remote(_)));
    let text = t.scenario_text();
    for secret in [
        "EZCA_TOKEN",
        "IOTHUB_CONNECTION_STRING",
        "EVENTHUB_CONNECTION_STRING",
    ] {
        assert!(text.contains(&format!("export {secret}=")), "{secret}");
    }
}

/// `fleetsim init --template NAME`, then `fleetsim run` on what it wrote: the run finishes, every
/// device connected and none failed. The thresholds are the template's advice for a quiet
/// machine, so a loaded test machine may miss a latency one (exit 1): performance is measured,
/// not asserted here.
fn smoke(name: &str) {
    let template = Template::named(name).unwrap();
    assert!(
        template.embedded,
        "{name} runs against the embedded emulators"
    );
    let dir = scratch_dir(&format!("init-{name}"));
    let file = dir.join(format!("{name}.yaml"));
    assert!(init(&["--template", name], &file).status.success());
    let scenario = scenario::load(&file).unwrap();
    let report = dir.join("report.json");
    let run = output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "--quiet", "--report"])
            .arg(&report)
            .arg(&file),
        scenario.duration.0 + Duration::from_secs(90),
    );
    assert!(
        matches!(run.status.code(), Some(0 | 1)),
        "{name}: {}",
        String::from_utf8_lossy(&run.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&report).expect("report written")).unwrap();
    std::fs::remove_dir_all(&dir).ok();
    let devices = &json["devices"];
    assert_eq!(devices["failed"], 0, "{name}: {devices}");
    assert_eq!(
        devices["connected"],
        scenario.fleet.devices.get(),
        "{name}: {devices}"
    );
}

#[test]
fn template_quickstart_runs() {
    smoke("quickstart");
}

#[test]
fn template_ca_load_runs() {
    smoke("ca-load");
}

#[test]
fn template_renewal_soak_runs() {
    smoke("renewal-soak");
}

#[test]
fn template_fleet_commands_runs() {
    smoke("fleet-commands");
}

#[test]
fn template_dps_runs() {
    smoke("dps");
}
