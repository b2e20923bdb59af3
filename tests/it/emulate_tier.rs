//! `fleetsim emulate --sku/--units`: the hub takes the tier and its units (the target it writes
//! says so, `fleetsim plan --check` reads them back from the hub's Azure resource, a basic tier
//! refuses twins as IoT Hub's does), and units the tier does not allow are refused.

use std::process::Command;
use std::time::Duration;

use fleetsim::iothub::ConnectionString;
use fleetsim::iothub::registry::RegistryAuth;
use fleetsim::iothub::service::ServiceClient;

use crate::common;

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn emulate_runs_the_hub_as_the_tier_and_units_given() {
    let dir = common::scratch_dir("emulate-tier");
    let mut emulate = common::Watched::spawn(
        common::emulate_on_free_ports(&dir).args(["--sku", "B2", "--units", "3", "--no-dps"]),
        "fleetsim emulate",
    );
    emulate.read_until("ready", Duration::from_secs(30));
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    assert!(
        target.contains("sku: B2") && target.contains("units: 3"),
        "{target}"
    );

    // What the hub says of itself, through its Azure resource.
    let scenario = dir.join("tier.yaml");
    std::fs::write(
        &scenario,
        format!("name: tier\nduration: 1m\n{target}fleet:\n  devices: 10\n  arrival_rate: 1/s\ntelemetry:\n  interval: 1m\n"),
    )
    .unwrap();
    let secret = |file: &str| std::fs::read_to_string(dir.join(file)).unwrap();
    let plan = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["plan", "--check"])
            .arg(&scenario)
            .env("EZCA_TOKEN", secret("ezca-token"))
            .env("IOTHUB_CONNECTION_STRING", secret("hub-connection-string"))
            .env_remove("AZURE_MANAGEMENT_TOKEN"),
        LIMIT,
    );
    let out =
        String::from_utf8_lossy(&plan.stdout).to_string() + &String::from_utf8_lossy(&plan.stderr);
    assert!(plan.status.success(), "{out}");
    assert!(out.contains("B2 x 3 (from the hub"), "{out}");

    // A basic tier has no twins: 400003, as IoT Hub answers.
    let url = target
        .lines()
        .find_map(|l| l.trim().strip_prefix("registry_url: "))
        .unwrap();
    let roots = fleetsim::crypto::certs_from_pem(&secret("trust.pem")).unwrap();
    let auth =
        RegistryAuth::Sas(ConnectionString::parse(&secret("hub-connection-string")).unwrap());
    let service = ServiceClient::new(url, auth, &roots, true).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let e = rt
        .block_on(service.get_twin("anyone"))
        .expect_err("a basic tier refuses twins")
        .to_string();
    assert!(e.contains("400003") || e.contains("basic tier"), "{e}");

    let stopped = Command::new("kill")
        .args(["-INT", &emulate.id().to_string()])
        .status()
        .unwrap();
    assert!(stopped.success());
    emulate.wait_within(Duration::from_secs(30));

    // F1 has one unit only.
    let refused = common::output_within(
        common::emulate_on_free_ports(&dir).args(["--sku", "F1", "--units", "2", "--no-dps"]),
        LIMIT,
    );
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success());
    assert!(err.contains("--units 2: F1 allows 1 to 1"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}
