//! An independent MQTT client against the hub emulator: Eclipse mosquitto's `mosquitto_pub`
//! (OpenSSL, libmosquitto) publishes telemetry with a device certificate issued by fleetsim's
//! EZCA emulator, and the emulator counts it. `./scripts/test` installs mosquitto-clients.

use crate::common;

use std::process::Command;

use fleetsim::clock::Clock;
use fleetsim::crypto::{cert_to_pem, write_private_key};
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use fleetsim::iothub::mqtt::MqttTransport;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mosquitto_pub_with_a_fleetsim_certificate_is_counted() {
    let e = common::start_emulators(Clock::real()).await;
    let ca = common::ezca(&e).await;
    HubRegistry(common::registry(&e))
        .register("mosq-1")
        .await
        .unwrap();
    let (key, issued) = common::enrol(&ca, "mosq-1").await;

    let dir = std::env::temp_dir().join(format!("fleetsim-mosquitto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let chain: String = issued.chain.iter().map(|c| cert_to_pem(c)).collect();
    std::fs::write(dir.join("device.pem"), chain).unwrap();
    write_private_key(&dir.join("device.key"), &key).unwrap();
    std::fs::write(dir.join("hub-ca.pem"), cert_to_pem(&e.tls_root)).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.join("device.key"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "private keys are written 0600");
    }

    let publish = |id: &str, topic: &str, qos: &str| {
        let out = Command::new("mosquitto_pub")
            .current_dir(&dir)
            .args([
                "-h",
                &e.hub_mqtt_addr.ip().to_string(),
                "-p",
                &e.hub_mqtt_addr.port().to_string(),
            ])
            .args([
                "-V",
                "mqttv311",
                "--cafile",
                "hub-ca.pem",
                "--cert",
                "device.pem",
                "--key",
                "device.key",
            ])
            .args([
                "-i",
                id,
                "-u",
                &MqttTransport::username(common::HUB_HOST, id),
            ])
            .args([
                "-t",
                topic,
                "-q",
                qos,
                "-m",
                r#"{"deviceId":"mosq-1","messageId":1,"temperature":21.5,"humidity":64.0}"#,
            ])
            .output()
            .expect("mosquitto_pub is installed (apt-get install mosquitto-clients)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, err) = publish(
        "mosq-1",
        "devices/mosq-1/messages/events/temperatureAlert=false",
        "1",
    );
    assert!(ok, "mosquitto_pub failed: {err}");
    let (ok, err) = publish("mosq-1", "devices/mosq-1/messages/events/", "0");
    assert!(ok, "mosquitto_pub failed: {err}");
    // QoS 0 has no acknowledgement: mosquitto_pub may exit before the hub has counted it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while e.hub.device_stats("mosq-1").messages < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(e.hub.device_stats("mosq-1").messages, 2);

    // The same certificate claiming another device id is refused (CONNACK 5).
    HubRegistry(common::registry(&e))
        .register("mosq-2")
        .await
        .unwrap();
    let (ok, err) = publish("mosq-2", "devices/mosq-2/messages/events/", "1");
    assert!(!ok, "a certificate for mosq-1 cannot connect as mosq-2");
    assert!(err.to_lowercase().contains("not authori"), "{err}");
    assert_eq!(e.hub.device_stats("mosq-2").messages, 0);
    std::fs::remove_dir_all(&dir).ok();
    e.shutdown().await;
}
