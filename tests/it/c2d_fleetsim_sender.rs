//! The other direction of C2D interop: a device running Microsoft's azure-iot-device 2.14,
//! unmodified (`tests/peers/c2d_receive.py`), receives the messages fleetsim's own AMQP
//! [`C2dSender`] sends through `fleetsim emulate`, properties intact and stamped with
//! `fleetsim-sent-at`. The SDK fixes ports 8883 and 443 and checks host names, so the hub runs
//! on a loopback address of its own under a host name of its own, mapped in /etc/hosts.

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fleetsim::iothub::amqp::{C2dOutcome, C2dSend, C2dSender, Endpoint};
use fleetsim::iothub::{ConnectionString, SENT_AT_PROPERTY};
use rustls_pki_types::pem::PemObject;
use serde_json::Value;

use crate::common::{self, Watched};

const HOST: &str = "fleetsim-c2d-sender.azure-devices.net";
const IP: [u8; 4] = [127, 0, 16, 3];

fn endpoint(dir: &std::path::Path) -> Endpoint {
    let pem = std::fs::read(dir.join("trust.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    Endpoint {
        host: HOST.into(),
        address: format!("{}.{}.{}.{}:5671", IP[0], IP[1], IP[2], IP[3]),
        roots: Arc::new(roots),
        timeout: Duration::from_secs(10),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sdk_device_receives_what_fleetsims_sender_sent() {
    let python = common::python();
    common::map_host(HOST, IP);
    let dir = common::scratch_dir("c2d-fleetsim-sender");
    let _emulate = common::emulate_for_sdks(&dir, IP, HOST, true);
    let hub_cs = std::fs::read_to_string(dir.join("hub-connection-string")).unwrap();
    let driver =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/c2d_receive.py");
    let mut command = Command::new(python);
    command
        .arg(driver)
        .args(["sdk-receiver", "1"])
        .env("FLEETSIM_HUB_CS", hub_cs.trim())
        .env("FLEETSIM_CA_BUNDLE", dir.join("trust.pem"))
        .stdout(Stdio::piped());
    let mut device = Watched::spawn(&mut command, "c2d_receive.py");
    tokio::task::block_in_place(|| device.read_until("ready", Duration::from_secs(60)));

    let credentials = ConnectionString::parse(hub_cs.trim()).unwrap();
    let mut sender = C2dSender::connect(&endpoint(&dir), &credentials)
        .await
        .unwrap();
    let before = fleetsim::iothub::amqp::now_ms();
    let sent = sender
        .send(&C2dSend {
            device_id: "sdk-receiver".into(),
            message_id: Some("fleetsim-1".into()),
            correlation_id: Some("fleetsim-corr-1".into()),
            content_type: Some("application/json".into()),
            content_encoding: Some("utf-8".into()),
            expiry_ms: Some(before + 600_000),
            ack: None,
            properties: vec![
                ("colour".into(), "blue & green".into()),
                ("path".into(), "/a/b?c=d".into()),
            ],
            body: br#"{"command":"blink"}"#.to_vec(),
        })
        .await
        .unwrap();
    assert_eq!(sent, C2dOutcome::Accepted);
    sender.close().await;

    let line = tokio::task::block_in_place(|| device.read_until("{", Duration::from_secs(60)));
    let m: Value = serde_json::from_str(line.lines().last().unwrap()).unwrap();
    assert_eq!(m["message_id"], "fleetsim-1");
    assert_eq!(m["correlation_id"], "fleetsim-corr-1");
    assert_eq!(m["content_type"], "application/json");
    assert_eq!(m["content_encoding"], "utf-8");
    assert_eq!(m["data"], r#"{"command":"blink"}"#);
    let custom = &m["custom_properties"];
    assert_eq!(custom["colour"], "blue & green");
    assert_eq!(custom["path"], "/a/b?c=d");
    let sent_at: i64 = custom[SENT_AT_PROPERTY].as_str().unwrap().parse().unwrap();
    assert!(sent_at >= before, "{m}");
    assert_eq!(custom.as_object().unwrap().len(), 3, "{custom}");
    assert!(
        m["expiry_time_utc"]
            .as_str()
            .is_some_and(|e| e.ends_with('Z')),
        "{m}"
    );
}
