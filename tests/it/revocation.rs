//! Revocation events: a share of the fleet is revoked mid-run. With the embedded CA's "disable
//! device on revoke" the hub drops each revoked device (the cut-off is measured) and refuses its
//! reconnect; without it the revoked device stays connected and keeps sending, as with the real
//! IoT Hub, which does not check revocation.

use fleetsim::crypto::sha1_thumbprint;
use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::iothub::identity::DeviceStatus;
use fleetsim::metrics::Phase;

fn scenario(disable: bool, method: &str, key: &str) -> String {
    format!(
        r#"
name: revocation-test
seed: 11
duration: 6s
target:
  embedded:
    ca:
      disable_device_on_revoke: {disable}
fleet:
  devices: 12
  id_pattern: "rev-{{index:03}}"
  arrival_rate: 40/s
certificate:
  key: {key}
telemetry:
  interval: 300ms
  qos: 1
events:
  - at: 2s
    revoke: 25%
    method: {method}
thresholds:
  - revoked_online == 0
"#
    )
}

async fn run(text: &str) -> RunOutcome {
    let scenario = crate::common::scenario(text, "revocation.yaml");
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_device_is_dropped_and_refused_when_the_ca_disables_it() {
    let outcome = run(&scenario(true, "admin", "p256")).await;
    let ca = outcome.ca.as_ref().expect("embedded CA");
    let hub = outcome.hub.as_ref().expect("embedded hub");
    let revoked: Vec<_> = outcome
        .devices
        .iter()
        .filter(|d| d.revocation.is_some())
        .collect();
    assert_eq!(revoked.len(), 3, "25% of 12 devices");
    for d in &revoked {
        let r = d.revocation.as_ref().unwrap();
        assert!(r.error.is_none(), "{}: {:?}", d.id, r.error);
        assert_eq!(ca.is_revoked(&sha1_thumbprint(&d.chain[0])), Some(true));
        let cutoff = r
            .cutoff
            .unwrap_or_else(|| panic!("{} was not cut off", d.id));
        assert!(cutoff.as_secs() < 3, "{}: cut off after {cutoff:?}", d.id);
        assert!(r.reconnect_refused, "{}: the hub let it back in", d.id);
        assert!(!d.online_at_end, "{} is online at the end", d.id);
        assert_eq!(hub.device(&d.id).unwrap().status, DeviceStatus::Disabled);
        assert!(hub.device_stats(&d.id).refused >= 1, "{}: no refusal", d.id);
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
    }
    for d in outcome.devices.iter().filter(|d| d.revocation.is_none()) {
        assert!(
            d.online_at_end && d.failure.is_none(),
            "{} unaffected",
            d.id
        );
        assert_eq!(hub.device(&d.id).unwrap().status, DeviceStatus::Enabled);
    }
    let report = &outcome.report;
    let section = report.certificates.as_ref().unwrap();
    let r = section.revocation.as_ref().expect("revocation summary");
    assert_eq!((r.revoked, r.by_admin, r.cut_off), (3, 3, 3));
    assert_eq!((r.still_online, r.reconnects_refused), (0, 3));
    let cutoff = report
        .phases
        .iter()
        .find(|p| p.phase == Phase::RevokeCutoff.name() && p.outcome == "ok")
        .expect("revoke.cutoff in the phase table");
    assert_eq!(cutoff.latency.count, 3);
    assert_eq!(report.devices.failed, 0);
    assert!(
        report.thresholds.iter().all(|t| t.pass),
        "{:?}",
        report.thresholds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_integration_a_revoked_device_stays_connected() {
    let outcome = run(&scenario(false, "admin", "p256")).await;
    let ca = outcome.ca.as_ref().unwrap();
    let hub = outcome.hub.as_ref().unwrap();
    let revoked: Vec<_> = outcome
        .devices
        .iter()
        .filter(|d| d.revocation.is_some())
        .collect();
    assert_eq!(revoked.len(), 3);
    for d in &revoked {
        let r = d.revocation.as_ref().unwrap();
        assert_eq!(ca.is_revoked(&sha1_thumbprint(&d.chain[0])), Some(true));
        assert_eq!(r.cutoff, None, "{} was cut off", d.id);
        assert!(d.online_at_end, "{} is not online", d.id);
        assert_eq!(hub.device(&d.id).unwrap().status, DeviceStatus::Enabled);
        // It kept publishing after the revocation at 2 s, until the end at 6 s: the hub got
        // everything it sent, on one connection.
        let stats = hub.device_stats(&d.id);
        assert_eq!(stats.messages, d.messages_sent);
        assert!(
            d.messages_sent >= 15,
            "{} sent only {}",
            d.id,
            d.messages_sent
        );
        assert_eq!(stats.connects, 1);
    }
    let report = &outcome.report;
    let r = report
        .certificates
        .as_ref()
        .unwrap()
        .revocation
        .as_ref()
        .unwrap();
    assert_eq!((r.revoked, r.cut_off, r.still_online), (3, 0, 3));
    let threshold = &report.thresholds[0];
    assert!(!threshold.pass, "revoked_online == 0 fails: {threshold:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_revokes_itself_with_its_certificate() {
    let outcome = run(&scenario(true, "self", "rsa-2048")).await;
    let ca = outcome.ca.as_ref().unwrap();
    let revoked: Vec<_> = outcome
        .devices
        .iter()
        .filter(|d| d.revocation.is_some())
        .collect();
    assert_eq!(revoked.len(), 3);
    for d in &revoked {
        let r = d.revocation.as_ref().unwrap();
        assert!(r.error.is_none(), "{}: {:?}", d.id, r.error);
        assert_eq!(ca.is_revoked(&sha1_thumbprint(&d.chain[0])), Some(true));
        assert!(r.cutoff.is_some() && r.reconnect_refused, "{}", d.id);
    }
    let r = outcome.report.certificates.unwrap().revocation.unwrap();
    assert_eq!((r.by_self, r.cut_off), (3, 3));
}
