//! A fleet of symmetric-key devices against the embedded hub, and its migration to EZCA
//! certificates: SAS devices register (keys from the hub, or derived from a group key), connect
//! with SAS tokens, renew their tokens (`sas.renew`, swapped as certificates are), and a
//! `migrate` event moves them to certificates (`migrate.issue`, `migrate.update`,
//! `migrate.reconnect`) without losing a QoS 1 message, while an X.509 cohort runs alongside.

use std::path::Path;

use fleetsim::fleet::{self, RunOptions, RunOutcome};
use fleetsim::iothub::registry::AuthenticationType;
use fleetsim::metrics::Phase;

fn scenario(keys: &str, swap: &str, migrate: bool) -> String {
    let events = match migrate {
        true => "events:\n  - {at: 3s, migrate: {cohort: legacy, share: 100%, rate: 10/s}}\n",
        false => "",
    };
    format!(
        r#"
name: sas-fleet-test
seed: 5
duration: 7s
target:
  embedded: {{}}
fleet:
  devices: 8
  id_pattern: "sas-{{index:03}}"
  arrival_rate: 40/s
  cohorts:
    - name: legacy
      devices: 6
      auth: sas
      sas: {{token_ttl: 4s, renew_at: 25%, keys: {keys}}}
    - name: modern
      devices: 2
certificate:
  key: p256
  swap: {swap}
telemetry:
  interval: 250ms
  qos: 1
report:
  interval: 1s
{events}thresholds:
  - messages_lost == 0
  - failed_devices == 0
"#
    )
}

async fn run(text: &str) -> RunOutcome {
    let scenario = crate::common::scenario(text, "sas.yaml");
    fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes")
}

/// Every device ran to the end and the hub received every QoS 1 message each one had
/// acknowledged.
fn nothing_lost(outcome: &RunOutcome) {
    let hub = outcome.hub.as_ref().expect("embedded hub");
    for d in &outcome.devices {
        assert!(d.failure.is_none(), "{}: {:?}", d.id, d.failure);
        assert!(d.online_at_end, "{} offline at the end", d.id);
        assert_eq!(d.messages_failed, 0, "{}", d.id);
        assert!(d.messages_acked > 0, "{} sent nothing", d.id);
        assert_eq!(
            hub.device_stats(&d.id).messages,
            d.messages_acked,
            "{}: the hub's count differs",
            d.id
        );
    }
}

fn count(outcome: &RunOutcome, phase: Phase) -> u64 {
    outcome
        .report
        .phases
        .iter()
        .filter(|p| p.phase == phase.name() && p.outcome == "ok")
        .map(|p| p.latency.count)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sas_devices_renew_their_tokens_and_migrate_to_certificates() {
    let outcome = run(&scenario("registry", "break-before-make", true)).await;
    nothing_lost(&outcome);
    let hub = outcome.hub.as_ref().unwrap();
    let legacy: Vec<_> = outcome.devices.iter().filter(|d| d.migrated).collect();
    assert_eq!(legacy.len(), 6, "the whole legacy cohort migrated");
    for d in &legacy {
        let identity = hub.device(&d.id).unwrap();
        assert_eq!(
            identity.authentication.kind,
            AuthenticationType::CertificateAuthority
        );
        let stats = hub.device_stats(&d.id);
        assert_eq!(
            stats.cert_serials.len(),
            1,
            "{}: one certificate connect",
            d.id
        );
        assert!(stats.connects >= 2, "{}: SAS then certificate", d.id);
        assert_eq!(d.certificates_issued, 1);
    }
    // The X.509 cohort was not touched.
    for d in outcome.devices.iter().filter(|d| !d.migrated) {
        assert_eq!(d.certificates_issued, 1, "{}", d.id);
    }
    assert!(
        count(&outcome, Phase::SasRenew) >= 6,
        "each SAS device renewed (at 1 s) before it migrated (from 3 s)"
    );
    assert_eq!(count(&outcome, Phase::MigrateIssue), 6);
    assert_eq!(count(&outcome, Phase::MigrateUpdate), 6);
    assert_eq!(count(&outcome, Phase::MigrateReconnect), 6);
    assert!(
        outcome.report.thresholds.iter().all(|t| t.pass),
        "{:?}",
        outcome.report.thresholds
    );
    // The timeline shows the identities move from SAS to certificates.
    let points = &outcome.report.timeline.as_ref().expect("a timeline").points;
    let by_auth = |p: &fleetsim::report::timeline::TimelinePoint| {
        (
            p.identities.get("sas").copied(),
            p.identities.get("x509").copied(),
        )
    };
    assert!(
        points.iter().any(|p| by_auth(p) == (Some(6), Some(2))),
        "all 6 on SAS before the migration: {:?}",
        points.iter().map(by_auth).collect::<Vec<_>>()
    );
    assert_eq!(by_auth(points.last().unwrap()), (Some(0), Some(8)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn derived_keys_and_make_before_break_keep_sas_devices_online() {
    let outcome = run(&scenario("derived", "make-before-break", false)).await;
    nothing_lost(&outcome);
    let hub = outcome.hub.as_ref().unwrap();
    let sas: Vec<_> = outcome
        .devices
        .iter()
        .filter(|d| d.certificates_issued == 0)
        .collect();
    assert_eq!(sas.len(), 6);
    for d in &sas {
        let identity = hub.device(&d.id).unwrap();
        assert_eq!(identity.authentication.kind, AuthenticationType::Sas);
        assert!(d.swaps >= 1, "{}: no token renewal", d.id);
        // Token renewals reconnect: the first connect and at least one more.
        assert!(hub.device_stats(&d.id).connects >= 2, "{}", d.id);
    }
    // Derived keys differ per device (each key is an HMAC of the device id).
    let keys: std::collections::HashSet<_> = sas
        .iter()
        .map(|d| {
            hub.device(&d.id)
                .unwrap()
                .authentication
                .symmetric_key
                .primary_key
        })
        .collect();
    assert_eq!(keys.len(), 6);
}

#[test]
fn migrations_and_sas_cohorts_are_checked_when_the_scenario_loads() {
    let text = |registration: &str, cohort: &str| {
        format!(
            "name: x\nduration: 10s\ntarget: {{embedded: {{}}}}\nfleet:\n  devices: 2\n  \
             arrival_rate: 5/s\n  registration: {registration}\n  cohorts:\n    - {{name: a, \
             devices: 1, auth: sas}}\n    - {{name: b, devices: 1}}\nevents:\n  - {{at: 2s, \
             migrate: {{cohort: {cohort}, rate: 5/s}}}}\n"
        )
    };
    let error = |t: String| {
        fleetsim::scenario::parse(&t, Path::new("x.yaml"))
            .expect_err("refused")
            .to_string()
    };
    assert!(error(text("per-device", "zz")).contains("\"zz\" is not a cohort"));
    assert!(error(text("per-device", "b")).contains("only SAS devices migrate"));
    assert!(error(text("bulk", "a")).contains("fleet.registration must be per-device"));
    let answering = text("per-device", "a").replace(
        "auth: sas}",
        "auth: sas, behaviour: {methods: {ping: {status: 200}}}}",
    );
    assert!(error(answering).contains("telemetry only"));
    fleetsim::scenario::parse(&text("per-device", "a"), Path::new("x.yaml")).expect("valid");
}
