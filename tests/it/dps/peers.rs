//! DPS as other programs meet it: `fleetsim emulate` serving it, and Microsoft's unmodified
//! Python device SDK (`azure-iot-device` 2.14) provisioning through it and then sending to the
//! hub it assigned.

use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::emulator::dps::DpsLimits;
use fleetsim::emulator::{DpsAddresses, DpsConfig, Emulators, HubConfig};
use fleetsim::iothub::dps::{DpsClient, DpsEndpoint};
use serde_json::Value;

use super::support::{dps_config, fast_polling, group, pem, register};
use crate::common;

/// The value after `key` on the banner line that starts with `line`.
fn banner_field<'a>(banner: &'a str, line: &str, key: &str) -> &'a str {
    let l = banner
        .lines()
        .find(|l| l.starts_with(line))
        .unwrap_or_else(|| panic!("no '{line}' in {banner}"));
    let rest = &l[l.find(key).unwrap_or_else(|| panic!("no '{key}' in {l}")) + key.len()..];
    rest.trim_start().split([' ', ')', ',']).next().unwrap()
}

/// Interrupts the child (Ctrl-C) when dropped, even when the test panics.
struct Interrupt(std::process::Child);

impl Drop for Interrupt {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .args(["-INT", &self.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn fleetsim_emulate_serves_dps_with_a_group_for_ezca_devices() {
    use std::io::BufRead;
    let dir = std::env::temp_dir().join(format!("fleetsim-emulate-dps-{}", std::process::id()));
    let mut emulate = common::emulate_on_free_ports(&dir)
        .args(["--dps-ip", "127.0.0.1"])
        .spawn()
        .expect("fleetsim emulate starts");
    let stdout = emulate.stdout.take().unwrap();
    let emulate = Interrupt(emulate);
    let banner = tokio::task::spawn_blocking(move || {
        let mut banner = String::new();
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            banner.push_str(&line);
            banner.push('\n');
            if line.starts_with("ready") {
                break;
            }
        }
        banner
    });
    let banner = tokio::time::timeout(Duration::from_secs(30), banner)
        .await
        .expect("emulate gets ready within 30 s")
        .unwrap();
    assert!(banner.contains("ready"), "{banner}");
    let dps_addr: std::net::SocketAddr = banner_field(&banner, "DPS MQTT:", "mqtts://")
        .parse()
        .unwrap();
    let scope = banner_field(&banner, "DPS MQTT:", "id scope ").to_string();
    let hub_host = banner_field(&banner, "IoT Hub MQTT:", "host name ").to_string();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(dir.join("dps-connection-string")).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    }
    let target = std::fs::read_to_string(dir.join("target-dps.yaml")).unwrap();
    assert!(
        target.contains("    dps:\n") && target.contains(&format!("id_scope: {scope}\n")),
        "{target}"
    );

    // A device with an EZCA certificate from the emulator registers through the default group.
    let trust = std::fs::read_to_string(dir.join("trust.pem")).unwrap();
    let trust = fleetsim::crypto::certs_from_pem(&trust).unwrap();
    let token = std::fs::read_to_string(dir.join("ezca-token")).unwrap();
    let ezca = fleetsim::ezca::Client::new(
        banner_field(&banner, "EZCA:", "EZCA:"),
        std::sync::Arc::new(fleetsim::ezca::StaticToken::new(token.trim())),
        &trust,
        true,
    )
    .unwrap();
    let ca_id = banner_field(&banner, "  ECDSA issuing CA:", "CA: ");
    let ca = fleetsim::device::adapters::EzcaCa::discover(ezca, Some(ca_id))
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, "emulated-dps-1").await;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(trust[0].clone()).unwrap();
    let endpoint = DpsEndpoint {
        host: dps_addr.ip().to_string(),
        port: dps_addr.port(),
        id_scope: scope,
        websocket: false,
        keep_alive: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(10),
        timeout: Duration::from_secs(20),
        polling: fast_polling(),
    };
    let outcome = register(
        &DpsClient::new(endpoint, roots),
        "emulated-dps-1",
        &key,
        &issued,
    )
    .await
    .outcome;
    drop(emulate);
    let _ = std::fs::remove_dir_all(&dir);
    let assigned = outcome.expect("assigned");
    assert_eq!(assigned.assigned_hub, hub_host);
    assert_eq!(
        assigned.enrollment_group_id.as_deref(),
        Some("fleetsim-ezca")
    );
}

/// DPS and the hub on 8883 at two host names, as Microsoft's SDKs insist (port fixed, host names
/// checked): addresses of their own, out of other tests' way.
const SDK_DPS: (&str, [u8; 4]) = ("dps.fleetsim-sdk.test", [127, 0, 14, 1]);
const SDK_HUB: (&str, [u8; 4]) = ("hub.fleetsim-sdk.test", [127, 0, 14, 2]);

/// Maps the SDK test's host names in /etc/hosts, appending only the lines that are missing.
fn map_host_names() {
    for (name, ip) in [SDK_DPS, SDK_HUB] {
        common::map_host(name, ip);
    }
}

#[tokio::test]
async fn microsofts_python_sdk_provisions_through_dps_and_sends_to_the_assigned_hub() {
    let python = common::python();
    map_host_names();
    let ip = |a: [u8; 4]| std::net::SocketAddr::from((a, 8883));
    let any = "127.0.0.1:0".parse().unwrap();
    let ca = fleetsim::emulator::CaConfig {
        clock: Clock::real(),
        max_cert_life_days: 30,
        capacity: Default::default(),
        allowed_domains: Vec::new(),
        disable_devices_on_revoke: false,
    };
    let hub = HubConfig {
        host_name: SDK_HUB.0.into(),
        ..HubConfig::default()
    };
    let addrs = fleetsim::emulator::Addresses {
        ca: any,
        hub_mqtt: ip(SDK_HUB.1),
        hub_registry: any,
        hub_websocket: None,
        amqp: any,
    };
    let mut e = Emulators::start_on(addrs, &ca, &hub)
        .await
        .expect("emulators on 127.0.14.2:8883");
    let dps_addrs = DpsAddresses {
        mqtt: ip(SDK_DPS.1),
        websocket: None,
        service: any,
    };
    let config = DpsConfig {
        host_name: SDK_DPS.0.into(),
        ..dps_config(DpsLimits::published())
    };
    let dps = e
        .start_dps(dps_addrs, &config)
        .await
        .expect("DPS on 127.0.14.1:8883");
    let dps = dps.emulator.clone();
    let group: fleetsim::emulator::dps::EnrollmentGroup = serde_json::from_value(group(
        "sdk",
        fleetsim::emulator::EZCA_ROOT_CERTIFICATE,
        "enabled",
    ))
    .unwrap();
    dps.put_enrollment_group(group).expect("group");

    let id = "sdk-dps-001";
    let (key, issued) = common::enrol(&common::ezca(&e).await, id).await;
    let dir = std::env::temp_dir().join(format!("fleetsim-dps-sdk-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chain: String = issued.chain.iter().map(|c| pem(c)).collect();
    std::fs::write(dir.join("device.pem"), chain).unwrap();
    fleetsim::crypto::write_private_key(&dir.join("device.key"), &key).unwrap();
    std::fs::write(dir.join("trust.pem"), pem(&e.tls_root)).unwrap();

    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/dps_register.py");
    let run = tokio::process::Command::new(python)
        .arg(script)
        .args([SDK_DPS.0, dps.id_scope(), id])
        .args([
            dir.join("device.pem"),
            dir.join("device.key"),
            dir.join("trust.pem"),
        ])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("the SDK finished within 90 s")
        .expect("python runs");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "SDK failed: {stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(result["status"], "assigned");
    assert_eq!(result["assigned_hub"], SDK_HUB.0);
    assert_eq!(result["device_id"], id);
    assert_eq!(result["substatus"], "initialAssignment");
    assert_eq!(result["sent"], 1);
    assert_eq!(dps.stats().assigned, 1);
    assert_eq!(
        e.hub.device_stats(id).messages,
        1,
        "the hub got the SDK's message"
    );
    e.shutdown().await;
}
