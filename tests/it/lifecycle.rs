//! The whole device lifecycle against the embedded emulators with a compressed clock: every
//! device enrols, connects, sends telemetry, renews and reconnects with its new certificate, and
//! what the devices saw agrees with what the hub and the CA saw, with the JSON report and with the
//! interval log.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use fleetsim::crypto::CertInfo;
use fleetsim::fleet::{self, RunOptions};
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use rustls_pki_types::UnixTime;

const SCENARIO: &str = r#"
name: lifecycle-test
seed: 7
duration: 14s
time_scale: 1s          # a 10-day certificate lives 10 s and renews at 5 s
target:
  embedded:
    hub:
      host: lifecycle-hub.azure-devices.net
fleet:
  devices: 200
  id_pattern: "dev-{index:04}"
  arrival_rate: 100/s
certificate:
  key: p256
  validity_days: 10
  renew_at: 50%
telemetry:
  interval: 1s
  qos: 1
report:
  interval: 2s
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_device_enrols_connects_renews_and_is_counted_by_the_hub() {
    let scenario = crate::common::scenario(SCENARIO, "lifecycle.yaml");
    let dir = std::env::temp_dir().join(format!("fleetsim-lifecycle-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let hlog = dir.join("report.hlog");
    let options = RunOptions {
        interval_log: Some(hlog.clone()),
        ..RunOptions::default()
    };
    let outcome = fleet::run(&scenario, &options, std::future::pending())
        .await
        .expect("run completes");
    let hub = outcome.hub.as_ref().expect("embedded hub");
    let ca = outcome.ca.as_ref().expect("embedded CA");

    assert_eq!(outcome.devices.len(), 200);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.root_der()).unwrap();
    let verifier =
        rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .build()
            .unwrap();

    let mut ids = HashSet::new();
    for d in &outcome.devices {
        assert!(ids.insert(d.id.clone()), "ids are unique");
        assert!(d.failure.is_none(), "{} failed: {:?}", d.id, d.failure);
        assert!(d.enrolled && d.connected, "{} enrolled and connected", d.id);

        // The certificate names the device and chains to the CA's root.
        let leaf = CertInfo::parse(&d.chain[0]).unwrap();
        assert_eq!(leaf.subject_cn.as_deref(), Some(d.id.as_str()));
        assert_eq!(leaf.dns_sans, vec![d.id.clone()]);
        let within_validity = UnixTime::since_unix_epoch(std::time::Duration::from_secs(
            leaf.not_before.unix_timestamp() as u64 + 1,
        ));
        verifier
            .verify_client_cert(&d.chain[0], &d.chain[1..], within_validity)
            .unwrap_or_else(|e| panic!("{}: chain does not verify: {e}", d.id));

        // Renewed at least once, and the hub saw it reconnect with the new certificate.
        assert!(d.renewals >= 1, "{} renewed {} times", d.id, d.renewals);
        assert_eq!(d.certificates_issued, d.renewals + 1);
        assert_eq!(d.certificate_serials.len() as u64, d.renewals + 1);
        let seen = hub.device_stats(&d.id);
        let distinct: HashSet<_> = seen.cert_serials.iter().collect();
        assert!(
            distinct.len() >= 2,
            "{}: hub saw certificates {:?}",
            d.id,
            seen.cert_serials
        );
        // The newest certificate, or, when the end of the run came around the swap to it (its
        // reconnect and the swap's count are not one step), possibly the one before.
        let serials = &d.certificate_serials;
        let newest = serials.last();
        let before = (d.swaps < d.renewals)
            .then(|| serials.iter().rev().nth(1))
            .flatten();
        let last_seen = seen.cert_serials.last();
        assert!(
            last_seen == newest || (before.is_some() && last_seen == before),
            "{} reconnected with its newest certificate: hub {last_seen:?}, device {serials:?}",
            d.id
        );

        // QoS 1: what the device had acknowledged is exactly what the hub counted.
        assert!(d.messages_acked >= 5, "{} sent telemetry", d.id);
        assert_eq!(d.messages_failed, 0);
        assert_eq!(
            seen.messages, d.messages_acked,
            "{}: hub count vs device acks",
            d.id
        );
        assert_eq!(seen.refused, 0);
    }
    assert_eq!(
        ca.issued().len() as u64,
        outcome.devices.iter().map(|d| d.renewals + 1).sum::<u64>()
    );

    // The JSON report says the same.
    let path = dir.join("report.json");
    outcome.report.write_json(&path).unwrap();
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let hlog = std::fs::read(&hlog).expect("interval log written");
    std::fs::remove_dir_all(&dir).ok();
    assert_eq!(json["schema"], "fleetsim.report/v1");
    let acked: u64 = outcome.devices.iter().map(|d| d.messages_acked).sum();
    let renewals: u64 = outcome.devices.iter().map(|d| d.renewals).sum();
    // A renewal counts once its certificate is issued; the run may end before its swap.
    let swaps: u64 = outcome.devices.iter().map(|d| d.swaps).sum();
    for d in &outcome.devices {
        assert!(d.swaps == d.renewals || d.swaps + 1 == d.renewals, "{d:?}");
    }
    assert_eq!(json["devices"]["planned"], 200);
    assert_eq!(json["devices"]["connected"], 200);
    assert_eq!(json["devices"]["renewed"], 200);
    assert_eq!(json["devices"]["renewals"], renewals);
    assert_eq!(json["devices"]["failed"], 0);
    assert_eq!(json["messages"]["sent"], acked);
    assert_eq!(json["messages"]["acked"], acked);
    assert_eq!(json["hub"]["messages"], acked);
    assert_eq!(json["errors"], serde_json::json!({}));
    let phase_count = |phase: &str| {
        json["phases"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["phase"] == phase && p["outcome"] == "ok")
            .map_or(0, |p| p["count"].as_u64().unwrap())
    };
    assert_eq!(phase_count("ca.issue"), 200);
    assert_eq!(phase_count("mqtt.connect"), 200);
    assert_eq!(phase_count("ca.renew"), renewals);
    assert_eq!(phase_count("mqtt.reconnect"), swaps);
    assert_eq!(phase_count("mqtt.publish"), acked);

    // The interval log: a run of ~14 s at 2 s intervals, whose intervals add up to the totals.
    let (intervals, ticks) = interval_counts(&hlog);
    assert!(ticks >= 6, "{ticks} intervals");
    for p in json["phases"].as_array().unwrap() {
        let tag = format!(
            "{}/{}",
            p["phase"].as_str().unwrap(),
            p["outcome"].as_str().unwrap()
        );
        assert_eq!(intervals.get(&tag).copied(), p["count"].as_u64(), "{tag}");
    }
    assert_eq!(intervals["mqtt.publish/ok/uncorrected"], acked);
}

/// Interval histogram counts per tag (`phase/outcome[/uncorrected]`), and how many intervals.
fn interval_counts(log: &[u8]) -> (BTreeMap<String, u64>, usize) {
    let mut counts = BTreeMap::new();
    let mut starts = HashSet::new();
    for entry in IntervalLogIterator::new(log) {
        if let LogEntry::Interval(i) = entry.expect("interval log parses") {
            let h = fleetsim::report::stats::decode(i.encoded_histogram()).unwrap();
            let tag = i.tag().expect("tagged").as_str().to_string();
            *counts.entry(tag).or_insert(0) += h.len();
            starts.insert(i.start_timestamp());
        }
    }
    (counts, starts.len())
}
