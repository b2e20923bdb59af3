//! The DPS emulator as devices and operators see it: X.509 registration over MQTT/TLS (and
//! WebSocket) with polling, enrolment groups over the service REST API matched by the most
//! specific issuer, individual enrolments, disabled enrolments, hashed allocation over two hubs,
//! DPS's throttles, and bad input (wrong id scope, foreign CA, unknown operation, malformed
//! bodies, garbage) answered with DPS's errors or a closed connection. Devices get real
//! certificates from the EZCA emulator. [`peers`] runs `fleetsim emulate` and Microsoft's
//! unmodified Python SDK against it; [`support`] holds the shared helpers.

mod peers;
mod support;

use crate::common;

use std::time::Duration;

use self::support::{
    POLL, REGISTER, RawDps, SCOPE, Service, client, fast_polling, foreign_certificate, group, pem,
    register, start,
};
use fleetsim::emulator::HubConfig;
use fleetsim::emulator::dps::DpsLimits;
use fleetsim::iothub::dps::{Polling, ProvisioningError};
use fleetsim::iothub::registry::AuthenticationType;
use rumqttc::mqttbytes::v4::ConnectReturnCode;
use serde_json::{Value, json};

#[tokio::test]
async fn a_device_registers_polls_is_assigned_and_connects_to_its_hub() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let (status, body) = service
        .put(
            "enrollmentGroups/ezca-root",
            json!({
                "enrollmentGroupId": "ezca-root",
                "attestation": {"type": "x509", "x509": {"signingCertificates":
                    {"primary": {"certificate": pem(&e.ca.root_der())}}}},
                "allocationPolicy": "static",
                "iotHubs": [common::HUB_HOST],
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let primary = &body["attestation"]["x509"]["signingCertificates"]["primary"];
    assert!(
        primary["certificate"].is_null(),
        "DPS never returns the certificate"
    );
    assert_eq!(
        primary["info"]["sha1Thumbprint"],
        fleetsim::crypto::sha1_thumbprint(&e.ca.root_der())
    );
    assert_eq!(body["provisioningStatus"], "enabled");
    assert!(body["etag"].as_str().is_some_and(|t| !t.is_empty()));

    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "dps-dev-1").await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let first = register(&dps, "dps-dev-1", &key, &issued).await;
    let assigned = first.outcome.clone().expect("assigned");
    assert_eq!(assigned.assigned_hub, common::HUB_HOST);
    assert_eq!(assigned.device_id, "dps-dev-1");
    assert_eq!(assigned.status, "assigned");
    assert_eq!(assigned.substatus.as_deref(), Some("initialAssignment"));
    assert_eq!(assigned.enrollment_group_id.as_deref(), Some("ezca-root"));
    assert!(
        first.polls >= 2,
        "300 ms of assigning at 100 ms polls: {first:?}"
    );

    // The identity DPS created in the hub lets the device in.
    let device = e
        .hub
        .device("dps-dev-1")
        .expect("identity created in the hub");
    assert_eq!(
        device.authentication.kind,
        AuthenticationType::CertificateAuthority
    );
    let mut session = common::transport(&e)
        .connect("dps-dev-1", issued.chain.clone(), key.private_key_der())
        .await
        .expect("connects to the assigned hub");
    session
        .publish(
            "devices/dps-dev-1/messages/events/".into(),
            b"{}".to_vec(),
            true,
        )
        .await
        .unwrap();
    session.disconnect().await;
    assert_eq!(e.hub.device_stats("dps-dev-1").messages, 1);

    let (status, record) = service.get("registrations/dps-dev-1").await;
    assert_eq!(status, 200);
    assert_eq!(record["status"], "assigned");
    assert_eq!(record["assignedHub"], common::HUB_HOST);
    assert_eq!(record["deviceId"], "dps-dev-1");

    // Registering again, over WebSocket this time, keeps the hub.
    let ws = client(&e, fast_polling(), SCOPE, true);
    let again = register(&ws, "dps-dev-1", &key, &issued).await;
    let again = again.outcome.expect("assigned again");
    assert_eq!(again.assigned_hub, common::HUB_HOST);
    assert_eq!(
        again.substatus.as_deref(),
        Some("reprovisionedToInitialAssignment")
    );
    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.assigned, 2);
    assert_eq!(stats.per_hub.get(common::HUB_HOST), Some(&2));
    e.shutdown().await;
}

#[tokio::test]
async fn the_most_specific_enrolment_admits_the_device() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    for (id, ca) in [
        ("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE),
        ("issuing", fleetsim::emulator::EZCA_ISSUING_CERTIFICATE),
    ] {
        let (status, body) = service
            .put(&format!("enrollmentGroups/{id}"), group(id, ca, "enabled"))
            .await;
        assert_eq!(status, 200, "{body}");
    }
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "specific").await;
    let dps = client(&e, fast_polling(), SCOPE, false);

    let by_issuing = register(&dps, "specific", &key, &issued).await.outcome;
    assert_eq!(
        by_issuing.unwrap().enrollment_group_id.as_deref(),
        Some("issuing"),
        "the intermediate beats the root"
    );
    assert_eq!(service.delete("enrollmentGroups/issuing").await, 204);
    let by_root = register(&dps, "specific", &key, &issued).await.outcome;
    assert_eq!(
        by_root.unwrap().enrollment_group_id.as_deref(),
        Some("root"),
        "down to the root"
    );

    // An individual enrolment for the device's own certificate beats every group.
    let (status, body) = service
        .put(
            "individualEnrollments/specific",
            json!({
                "registrationId": "specific",
                "deviceId": "specific-in-hub",
                "attestation": {"type": "x509", "x509": {"clientCertificates":
                    {"primary": {"certificate": pem(&issued.chain[0])}}}},
            }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let individual = register(&dps, "specific", &key, &issued)
        .await
        .outcome
        .unwrap();
    assert_eq!(individual.enrollment_group_id, None);
    assert_eq!(individual.device_id, "specific-in-hub");
    assert!(e.hub.device("specific-in-hub").is_some());
    e.shutdown().await;
}

#[tokio::test]
async fn a_disabled_match_refuses_even_when_a_broader_group_is_enabled() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let issuing = group(
        "issuing",
        fleetsim::emulator::EZCA_ISSUING_CERTIFICATE,
        "disabled",
    );
    let (status, stored) = service.put("enrollmentGroups/issuing", issuing).await;
    assert_eq!(status, 200);

    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "benched").await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let refused = register(&dps, "benched", &key, &issued).await.outcome;
    assert_eq!(refused, Err(ProvisioningError::Disabled));
    assert!(e.hub.device("benched").is_none(), "no identity in any hub");
    let (_, record) = service.get("registrations/benched").await;
    assert_eq!(record["status"], "disabled");

    // Enabling takes the current etag.
    let enabled = group(
        "issuing",
        fleetsim::emulator::EZCA_ISSUING_CERTIFICATE,
        "enabled",
    );
    let (status, body) = service
        .call(
            reqwest::Method::PUT,
            "enrollmentGroups/issuing",
            Some(enabled.clone()),
            Some("stale"),
        )
        .await;
    assert_eq!((status, body["errorCode"].as_u64()), (412, Some(412001)));
    let etag = stored["etag"].as_str().unwrap();
    let (status, _) = service
        .call(
            reqwest::Method::PUT,
            "enrollmentGroups/issuing",
            Some(enabled),
            Some(etag),
        )
        .await;
    assert_eq!(status, 200);
    let admitted = register(&dps, "benched", &key, &issued).await.outcome;
    assert_eq!(
        admitted.unwrap().enrollment_group_id.as_deref(),
        Some("issuing")
    );
    assert_eq!(e.dps.as_ref().unwrap().emulator.stats().disabled, 1);
    e.shutdown().await;
}

#[tokio::test]
async fn hashed_allocation_spreads_devices_over_two_hubs() {
    let mut e = start(DpsLimits::published()).await;
    let second = HubConfig {
        host_name: "second-hub.azure-devices.net".into(),
        ..HubConfig::default()
    };
    let second_mqtt = e
        .add_hub(&second, "127.0.0.1:0".parse().unwrap())
        .await
        .expect("second hub")
        .mqtt_addr;
    let service = Service::new(&e);
    let mut body = group(
        "fleet",
        fleetsim::emulator::EZCA_ROOT_CERTIFICATE,
        "enabled",
    );
    body["allocationPolicy"] = json!("hashed");
    body["iotHubs"] = json!([common::HUB_HOST, "second-hub.azure-devices.net"]);
    assert_eq!(service.put("enrollmentGroups/fleet", body).await.0, 200);

    let ca = common::ezca(&e).await;
    let dps = client(&e, fast_polling(), SCOPE, false);
    let mut on_second = None;
    for i in 0..16 {
        let id = format!("spread-{i:02}");
        let (key, issued) = common::enrol(&ca, &id).await;
        let a = register(&dps, &id, &key, &issued).await.outcome.unwrap();
        let (mine, other) = match a.assigned_hub.as_str() {
            common::HUB_HOST => (&e.hub, &e.extra_hubs[0].hub),
            _ => (&e.extra_hubs[0].hub, &e.hub),
        };
        assert!(mine.device(&id).is_some() && other.device(&id).is_none());
        if a.assigned_hub != common::HUB_HOST {
            on_second = Some((id, key, issued));
        }
    }
    let per_hub = e.dps.as_ref().unwrap().emulator.stats().per_hub;
    assert_eq!(per_hub.values().sum::<u64>(), 16);
    assert!(
        per_hub.values().all(|n| *n >= 4) && per_hub.len() == 2,
        "evenly weighted: {per_hub:?}"
    );

    // A device assigned to the second hub connects there.
    let (id, key, issued) = on_second.expect("some device went to the second hub");
    let mut roots = rustls::RootCertStore::empty();
    roots.add(e.tls_root.clone()).unwrap();
    let transport = fleetsim::iothub::mqtt::MqttTransport::new(
        fleetsim::iothub::mqtt::MqttEndpoint {
            host: second_mqtt.ip().to_string(),
            port: second_mqtt.port(),
            hub_host: "second-hub.azure-devices.net".into(),
            keep_alive: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            ack_timeout: Duration::from_secs(10),
            websocket: false,
        },
        roots,
    );
    let session = transport
        .connect(&id, issued.chain.clone(), key.private_key_der())
        .await
        .expect("connects to the second hub");
    session.disconnect().await;
    e.shutdown().await;
}

#[tokio::test]
async fn over_dps_limits_requests_get_429_with_retry_after() {
    // One registration a second (a burst of one) for the whole service.
    let limits = DpsLimits {
        registrations_per_minute: Some(60.0),
        ..DpsLimits::published()
    };
    let e = start(limits).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "eager").await;

    let give_up = Polling {
        retry_throttled: false,
        ..fast_polling()
    };
    let strict = client(&e, give_up, SCOPE, false);
    assert!(
        register(&strict, "eager", &key, &issued)
            .await
            .outcome
            .is_ok()
    );
    let throttled = register(&strict, "eager", &key, &issued).await;
    assert_eq!(
        throttled.outcome,
        Err(ProvisioningError::Throttled {
            retry_after: Duration::from_secs(1)
        })
    );
    assert_eq!(throttled.throttled, 1);
    // As the SDKs do, the default client waits retry-after and gets through.
    let patient = client(&e, Polling::default(), SCOPE, false);
    let through = register(&patient, "eager", &key, &issued).await;
    assert!(through.outcome.is_ok(), "{through:?}");

    // Polls: 5 per 10 s per device; a fresh device's sixth in a row is refused for about 2 s.
    let (key, issued) = common::enrol(&ca, "poller").await;
    let (mut raw, code) = RawDps::connect(&e, "poller", &key, &issued, SCOPE).await;
    assert_eq!(code, ConnectReturnCode::Success);
    raw.subscribe().await;
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the registration limit
    let (topic, body) = raw
        .request(REGISTER, &json!({"registrationId": "poller"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    let op = body["operationId"].as_str().unwrap().to_string();
    let poll = format!("{POLL}&operationId={op}");
    for _ in 0..5 {
        let (topic, _) = raw.request(&poll, &Value::Null).await;
        assert!(!topic.contains("/res/429/"), "{topic}");
    }
    let (topic, body) = raw.request(&poll, &Value::Null).await;
    assert!(topic.starts_with("$dps/registrations/res/429/"), "{topic}");
    assert!(topic.ends_with("&retry-after=2"), "{topic}");
    assert_eq!(body["errorCode"], 429001);
    assert!(e.dps.as_ref().unwrap().emulator.stats().throttled >= 3);
    e.shutdown().await;
}

#[tokio::test]
async fn wrong_id_scope_and_foreign_certificates_are_refused() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "scoped").await;

    let elsewhere = client(&e, fast_polling(), "0ne99999999", false);
    let refused = register(&elsewhere, "scoped", &key, &issued).await.outcome;
    assert_eq!(refused, Err(ProvisioningError::ConnectRefused(5)));

    // Right CN and a good chain, but from a CA no enrolment trusts.
    let (foreign_key, foreign) = foreign_certificate("scoped");
    let dps = client(&e, fast_polling(), SCOPE, false);
    let outcome = dps
        .register("scoped", foreign, foreign_key.private_key_der(), None)
        .await
        .outcome;
    match outcome {
        Err(ProvisioningError::Failed { status, code, .. }) => {
            assert_eq!((status, code), (401, Some(401002)));
        }
        other => panic!("expected 401, got {other:?}"),
    }
    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!((stats.refused, stats.unauthorized), (1, 1));
    assert!(e.hub.device("scoped").is_none());
    // The EZCA certificate is fine, of course.
    assert!(
        register(&dps, "scoped", &key, &issued)
            .await
            .outcome
            .is_ok()
    );
    e.shutdown().await;
}

#[tokio::test]
async fn bad_input_gets_dps_errors_or_a_closed_connection() {
    let e = start(DpsLimits::published()).await;
    let service = Service::new(&e);
    let root = group("root", fleetsim::emulator::EZCA_ROOT_CERTIFICATE, "enabled");
    assert_eq!(service.put("enrollmentGroups/root", root).await.0, 200);
    let ca = common::ezca(&e).await;
    let (key, issued) = common::enrol(&ca, "rough").await;
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.subscribe().await;

    let unknown = format!("{POLL}&operationId=4.0000000000000000.nope");
    let (topic, body) = raw.request(&unknown, &Value::Null).await;
    assert!(
        topic.starts_with("$dps/registrations/res/404/?$rid="),
        "{topic}"
    );
    for field in ["errorCode", "trackingId", "message", "timestampUtc"] {
        assert!(!body[field].is_null(), "{field} in {body}");
    }
    assert_eq!(body["errorCode"], 404201);
    let (topic, body) = raw.request_raw(REGISTER, b"{not json").await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    assert_eq!(body["errorCode"], 400004);
    let other = json!({"registrationId": "somebody-else"});
    let (topic, _) = raw.request(REGISTER, &other).await;
    assert!(topic.starts_with("$dps/registrations/res/400/"), "{topic}");
    // The connection survived all that; a foreign topic ends it.
    let (topic, _) = raw
        .request(REGISTER, &json!({"registrationId": "rough"}))
        .await;
    assert!(topic.starts_with("$dps/registrations/res/202/"), "{topic}");
    raw.publish("devices/rough/messages/events/", b"{}").await;
    assert!(raw.recv().await.is_none(), "closed after a foreign topic");

    // Garbage inside TLS, then garbage instead of TLS.
    let (mut raw, _) = RawDps::connect(&e, "rough", &key, &issued, SCOPE).await;
    raw.write(&[0xff; 64]).await;
    assert!(raw.recv().await.is_none(), "closed after garbage");
    let dps_addr = e.dps.as_ref().unwrap().mqtt_addr;
    let mut tcp = tokio::net::TcpStream::connect(dps_addr).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut tcp, b"GET / HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let read = tokio::io::AsyncReadExt::read_to_end(&mut tcp, &mut rest);
    let _ = tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("closed");

    let stats = e.dps.as_ref().unwrap().emulator.stats();
    assert_eq!(stats.malformed, 3);
    assert!(stats.protocol_errors >= 3, "{stats:?}");
    // DPS still serves.
    let dps = client(&e, fast_polling(), SCOPE, false);
    assert!(register(&dps, "rough", &key, &issued).await.outcome.is_ok());
    e.shutdown().await;
}
