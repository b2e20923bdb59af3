//! `fleetsim emulate --state FILE`: killed (SIGKILL) and restarted, it is the same CA and hub to
//! its clients: the TLS root they trust, the EZCA token and hub connection string they hold, the
//! registry and the certificates issued before all still work, so a device reconnects with the
//! certificate it had.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::CertificateAuthority;
use fleetsim::device::adapters::EzcaCa;
use fleetsim::ezca::{Client as EzcaClient, StaticToken};
use fleetsim::iothub::ConnectionString;
use fleetsim::iothub::registry::{Device, RegistryClient};
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rustls_pki_types::CertificateDer;

use crate::common::{self, Watched};

const LIMIT: Duration = Duration::from_secs(60);
const HUB: &str = "fleetsim-hub.azure-devices.net";

/// One `fleetsim emulate` on ephemeral ports, and where it listens (from its banner).
struct Emulate {
    child: Watched,
    ca_url: String,
    ca_id: String,
    mqtt: std::net::SocketAddr,
    registry: String,
}

fn start(dir: &std::path::Path, state: &std::path::Path) -> Emulate {
    let mut child = Watched::spawn(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["emulate", "--no-dps", "--state"])
            .arg(state)
            .args([
                "--ca-port",
                "0",
                "--mqtt-port",
                "0",
                "--websocket-port",
                "0",
            ])
            .args(["--registry-port", "0", "--amqp-port", "0", "--dir"])
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit()),
        "fleetsim emulate --state",
    );
    let banner = child.read_until("ready", LIMIT);
    let field = |prefix: &str| {
        banner
            .lines()
            .find_map(|l| l.trim().strip_prefix(prefix))
            .map(|rest| rest.split_whitespace().next().unwrap_or("").to_string())
            .unwrap_or_else(|| panic!("no {prefix} in {banner}"))
    };
    let mqtt = field("IoT Hub MQTT:");
    Emulate {
        ca_url: field("EZCA:"),
        ca_id: field("ECDSA issuing CA:"),
        mqtt: mqtt.trim_start_matches("mqtts://").parse().unwrap(),
        registry: field("IoT Hub registry:"),
        child,
    }
}

fn trust(dir: &std::path::Path) -> CertificateDer<'static> {
    let pem = std::fs::read_to_string(dir.join("trust.pem")).unwrap();
    fleetsim::crypto::certs_from_pem(&pem).unwrap().remove(0)
}

fn read(dir: &std::path::Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// CONNECT over TLS with `chain`/`key`, trusting `root`; the CONNACK's code.
async fn connect(
    e: &Emulate,
    root: &CertificateDer<'static>,
    id: &str,
    chain: Vec<CertificateDer<'static>>,
    key: &DeviceKey,
) -> ConnectReturnCode {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.clone()).unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_client_auth_cert(chain, key.private_key_der())
    .unwrap();
    let tcp = tokio::net::TcpStream::connect(e.mqtt).await.unwrap();
    let name = rustls_pki_types::ServerName::try_from(e.mqtt.ip().to_string()).unwrap();
    let mut tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the restarted hub's certificate chains to the trust bundle kept");
    let mut connect = rumqttc::mqttbytes::v4::Connect::new(id);
    connect.keep_alive = 30;
    connect.set_login(fleetsim::iothub::mqtt::MqttTransport::username(HUB, id), "");
    let mut out = bytes::BytesMut::new();
    Packet::Connect(connect).write(&mut out, 1 << 20).unwrap();
    tls.write_all(&out).await.unwrap();
    tls.flush().await.unwrap();
    let mut buf = bytes::BytesMut::new();
    loop {
        match Packet::read(&mut buf, 1 << 20) {
            Ok(Packet::ConnAck(ack)) => return ack.code,
            Ok(other) => panic!("expected CONNACK, got {other:?}"),
            Err(_) => {}
        }
        let read = tokio::time::timeout(Duration::from_secs(10), tls.read_buf(&mut buf));
        let n = read.await.expect("CONNACK within 10 s").unwrap();
        assert!(n > 0, "closed before CONNACK");
    }
}

fn registry(e: &Emulate, dir: &std::path::Path, root: &CertificateDer<'static>) -> RegistryClient {
    let conn = ConnectionString::parse(read(dir, "hub-connection-string").trim()).unwrap();
    RegistryClient::new(&e.registry, conn, std::slice::from_ref(root), true).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_emulator_restarts_with_its_keys_trust_and_registry() {
    fleetsim::crypto::install_crypto_provider();
    let dir = common::scratch_dir("emulate-state");
    let state = dir.join("emulator.state");
    let mut first = start(&dir, &state);
    let root = trust(&dir);
    let (token, conn) = (
        read(&dir, "ezca-token"),
        read(&dir, "hub-connection-string"),
    );

    // Enrol and register a device, and connect it.
    let client = EzcaClient::new(
        &first.ca_url,
        Arc::new(StaticToken::new(token.trim())),
        std::slice::from_ref(&root),
        true,
    )
    .unwrap();
    let ca = EzcaCa::discover(client, Some(&first.ca_id)).await.unwrap();
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    ca.register_domain("kept-1").await.unwrap();
    let issued = ca
        .issue("kept-1", key.csr_pem("kept-1").unwrap(), 10)
        .await
        .unwrap();
    registry(&first, &dir, &root)
        .create(&Device::certificate_authority("kept-1"))
        .await
        .unwrap();
    let code = connect(&first, &root, "kept-1", issued.chain.clone(), &key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&state).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the state file holds private keys");
    }

    first.child.kill();
    first.child.wait_within(LIMIT);
    let mut second = start(&dir, &state);
    assert_eq!(trust(&dir), root, "the same TLS root");
    assert_eq!(
        read(&dir, "hub-connection-string"),
        conn,
        "the same hub key"
    );

    // The device reconnects with the certificate it had: its chain still verifies (same
    // issuing CA), and the registry still has it.
    let code = connect(&second, &root, "kept-1", issued.chain.clone(), &key).await;
    assert_eq!(code, ConnectReturnCode::Success);
    let device = registry(&second, &dir, &root).get("kept-1").await.unwrap();
    assert_eq!(device.device_id, "kept-1");
    // The EZCA token from before the restart is still accepted, the same issuing CA is there,
    // and the domain is still ours: a renewal-style issue for the same name succeeds.
    let client = EzcaClient::new(
        &second.ca_url,
        Arc::new(StaticToken::new(token.trim())),
        std::slice::from_ref(&root),
        true,
    )
    .unwrap();
    let ca = EzcaCa::discover(client, Some(&first.ca_id)).await.unwrap();
    let again = ca
        .issue("kept-1", key.csr_pem("kept-1").unwrap(), 10)
        .await
        .expect("the old token, CA id and domain still work");
    assert!(issued.chain.len() > 1, "the chain has its issuing CA");
    assert_eq!(
        again.chain.get(1..),
        issued.chain.get(1..),
        "the same CA chain"
    );
    second.child.kill();
    second.child.wait_within(LIMIT);
    std::fs::remove_dir_all(&dir).ok();
}
