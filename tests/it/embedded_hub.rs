//! The embedded hub's scenario settings in a run, each by its documented effect:
//! `trusted_cas` (a partner CA's devices are accepted) and `disabled_connack` (the code a disabled
//! device gets), checked on the hub a run configured; `mqtt_addresses` (MQTT listens on each and
//! devices go round-robin), seen in the kernel's socket table while the run is on; and
//! `fleet.registration: bulk` (identities created 100 per registry call).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::emulator::hub::HubEmulator;
use fleetsim::emulator::tls::ServerPki;
use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::iothub::HubError;
use fleetsim::iothub::mqtt::{MqttEndpoint, MqttTransport};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::CertificateDer;
use tokio_util::sync::CancellationToken;

use crate::common;

/// A partner CA outside the run (its root as PEM), and a device certificate it issued for `id`.
struct Partner {
    root_pem: String,
    issuer: rcgen::Issuer<'static, KeyPair>,
}

impl Partner {
    fn new() -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "Partner Root");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let key = KeyPair::generate().unwrap();
        let root_pem = params.self_signed(&key).unwrap().pem();
        Self {
            root_pem,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    fn device(&self, id: &str) -> (DeviceKey, CertificateDer<'static>) {
        let key = DeviceKey::generate(KeyKind::P256).unwrap();
        let csr =
            rcgen::CertificateSigningRequestParams::from_pem(&key.csr_pem(id).unwrap()).unwrap();
        let mut leaf = rcgen::CertificateSigningRequestParams {
            params: CertificateParams::new(vec![id.to_string()]).unwrap(),
            public_key: csr.public_key,
        };
        leaf.params.distinguished_name.push(DnType::CommonName, id);
        leaf.params.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        let cert = leaf.signed_by(&self.issuer).unwrap();
        (key, cert.der().clone())
    }
}

async fn run(
    text: &str,
    options: &RunOptions,
    stop: impl Future<Output = ()> + Send,
) -> RunOutcome {
    let scenario = fleetsim::scenario::parse(text, Path::new("hub.yaml")).expect("parses");
    tokio::time::timeout(
        Duration::from_secs(90),
        fleet::run(&scenario, options, stop),
    )
    .await
    .expect("the run ends")
    .expect("run")
}

/// A one-device run whose embedded hub has `hub` (a flow mapping's entries).
async fn hub_after_run(hub: &str) -> HubEmulator {
    let text = format!(
        "name: hub\nduration: 1s\ntarget:\n  embedded:\n    hub: {{{hub}}}\nfleet:\n  devices: 1\n  arrival_rate: 10/s\ntelemetry:\n  interval: 1s\n"
    );
    let outcome = run(&text, &RunOptions::default(), std::future::pending()).await;
    assert_eq!(outcome.report.devices.connected, 1);
    outcome.hub.expect("an embedded hub")
}

/// The CONNACK `hub` (a run's, after it) gives `id` presenting `cert`: `Ok` for 0, else the code.
async fn connack(
    hub: &HubEmulator,
    id: &str,
    key: &DeviceKey,
    cert: &CertificateDer<'static>,
) -> Result<(), String> {
    let pki = ServerPki::new("after the run").unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let serving = hub
        .serve_mqtt(listener, &pki, stop.clone().cancelled_owned())
        .unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.root_der()).unwrap();
    let transport = MqttTransport::new(
        MqttEndpoint {
            host: addr.ip().to_string(),
            port: addr.port(),
            hub_host: hub.host_name().to_string(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    );
    let answer = match transport
        .connect(id, vec![cert.clone()], key.private_key_der())
        .await
    {
        Ok(session) => {
            session.disconnect().await;
            Ok(())
        }
        Err(HubError::ConnectRefused(code)) => Err(code),
        Err(other) => panic!("{id}: expected a CONNACK, got {other}"),
    };
    stop.cancel();
    let _ = serving.await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trusted_cas_and_disabled_connack_configure_the_runs_hub() {
    let partner = Partner::new();
    let dir = common::scratch_dir("trusted-cas");
    let pem = dir.join("partner-root.pem");
    std::fs::write(&pem, &partner.root_pem).unwrap();
    let trusted = format!("trusted_cas: ['{}']", pem.display());
    let with_code = format!("{trusted}, disabled_connack: 5");
    let (trusting, strict, untrusting) = tokio::join!(
        hub_after_run(&with_code),
        hub_after_run(&trusted),
        hub_after_run("")
    );
    let (key, cert) = partner.device("partner-1");
    let (off_key, off_cert) = partner.device("partner-off");
    for hub in [&trusting, &strict, &untrusting] {
        assert!(hub.provision_ca_device("partner-1"));
        assert!(hub.provision_ca_device("partner-off"));
        assert!(hub.disable_device("partner-off"));
    }
    // A hub that trusts the partner CA accepts its devices; one that does not answers 5.
    assert_eq!(connack(&trusting, "partner-1", &key, &cert).await, Ok(()));
    assert_eq!(connack(&strict, "partner-1", &key, &cert).await, Ok(()));
    assert_eq!(
        connack(&untrusting, "partner-1", &key, &cert).await,
        Err("5".into())
    );
    // A disabled device gets the configured code, 3 by default.
    assert_eq!(
        connack(&trusting, "partner-off", &off_key, &off_cert).await,
        Err("5".into())
    );
    assert_eq!(
        connack(&strict, "partner-off", &off_key, &off_cert).await,
        Err("3".into())
    );

    // A CA file that is not there fails the run before anything starts, naming it.
    let missing = dir.join("missing.pem");
    let text = format!(
        "name: hub\nduration: 1s\ntarget:\n  embedded:\n    hub: {{trusted_cas: ['{}']}}\nfleet:\n  devices: 1\n  arrival_rate: 10/s\n",
        missing.display()
    );
    let scenario = fleetsim::scenario::parse(&text, Path::new("hub.yaml")).unwrap();
    let e = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .err()
        .expect("a missing CA file fails the run")
        .to_string();
    assert!(e.contains("missing.pem"), "{e}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Established TCP connections whose local end is `ip` on the port `ip` listens on: the server
/// side of connections accepted there (IPv4, from /proc/net/tcp).
fn accepted_on(ip: [u8; 4]) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp");
    let hex = format!("{:02X}{:02X}{:02X}{:02X}", ip[3], ip[2], ip[1], ip[0]);
    let rows: Vec<(String, String)> = table
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            Some((f.get(1)?.to_string(), f.get(3)?.to_string()))
        })
        .collect();
    let listening: Vec<&String> = rows
        .iter()
        .filter(|(local, state)| state == "0A" && local.starts_with(&hex))
        .map(|(local, _)| local)
        .collect();
    rows.iter()
        .filter(|(local, state)| state == "01" && listening.contains(&local))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mqtt_addresses_each_take_their_share_of_the_devices() {
    // Addresses of this test's own; the second serves only MQTT.
    let text = "name: addresses\nduration: 5m\ntarget:\n  embedded:\n    hub: {mqtt_addresses: [127.0.31.1, 127.0.31.2]}\nfleet:\n  devices: 6\n  arrival_rate: 50/s\ntelemetry:\n  interval: 1s\n";
    let (listener, addr) = common::metrics_listener();
    let options = RunOptions {
        metrics_listener: Some(listener),
        ..RunOptions::default()
    };
    let seen = Arc::new(Mutex::new(None));
    let noted = seen.clone();
    let stop = async move {
        common::until_metrics(addr, Duration::from_secs(60), |value| {
            value(r#"fleetsim_devices{state="online"}"#) == 6.0
        })
        .await;
        *noted.lock().unwrap() = Some(accepted_on([127, 0, 31, 2]));
    };
    let outcome = run(text, &options, stop).await;
    assert_eq!(outcome.report.devices.connected, 6);
    // Round-robin over two addresses: every other device on the second.
    assert_eq!(
        *seen.lock().unwrap(),
        Some(3),
        "MQTT connections on 127.0.31.2"
    );

    // Only loopback addresses: the embedded emulators accept test credentials.
    let text = text.replace("127.0.31.2", "10.0.0.1");
    let scenario = fleetsim::scenario::parse(&text, Path::new("hub.yaml")).unwrap();
    let e = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .err()
        .expect("a non-loopback address is refused")
        .to_string();
    assert!(e.contains("10.0.0.1 is not a loopback address"), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_registration_creates_identities_100_per_call() {
    let text = "name: bulk\nduration: 5m\ntarget:\n  embedded: {}\nfleet:\n  devices: 120\n  arrival_rate: 200/s\n  registration: bulk\ntelemetry:\n  interval: 5s\n";
    let (listener, addr) = common::metrics_listener();
    let options = RunOptions {
        metrics_listener: Some(listener),
        ..RunOptions::default()
    };
    let online = common::until_metrics(addr, Duration::from_secs(60), |value| {
        value(r#"fleetsim_devices{state="online"}"#) == 120.0
    });
    let outcome = run(text, &options, online).await;
    let r = &outcome.report;
    assert_eq!(r.devices.connected, 120);
    // Two registry calls (100 + 20) instead of one per device.
    let register: Vec<_> = r
        .phases
        .iter()
        .filter(|p| p.phase == "hub.register")
        .map(|p| (p.outcome.as_str(), p.latency.count))
        .collect();
    assert_eq!(register, [("ok", 2)], "hub.register calls");
    let hub = outcome.hub.as_ref().unwrap().stats();
    assert_eq!(hub.devices_registered, 120);
}
