//! The renewal scheduler: jitter spreads a cohort's renewals; failed renewals are retried until
//! the deadline, and a device whose renewals keep failing until its certificate expires is
//! counted as expired before renewal.

use crate::common;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind};
use fleetsim::device::adapters::{EzcaCa, HubRegistry};
use fleetsim::device::backoff::Backoff;
use fleetsim::device::{
    Backends, CertificateAuthority, DeviceSpec, FailureClass, Issued, RenewalPolicy, ServiceError,
    Services, run_device,
};
use fleetsim::fleet;
use fleetsim::metrics::Recorder;
use tokio_util::sync::CancellationToken;

/// A cohort of 30 devices named `{prefix}-NNN`, with 10 s certificates renewed at half their life
/// and `jitter` (a `certificate:` line or nothing).
fn cohort(prefix: &str, jitter: &str) -> String {
    format!(
        r#"
name: jitter-test
seed: 9
duration: 8s
time_scale: 1s
target:
  embedded: {{}}
fleet:
  devices: 30
  id_pattern: "{prefix}-{{index:03}}"
  arrival_rate: 1000/s
certificate:
  key: p256
  validity_days: 10
  renew_at: 50%
  {jitter}
telemetry:
  interval: 1s
"#
    )
}

/// EZCA, noting when each device first asked to renew, as a share of its certificate's life.
struct TimedRenewals {
    ca: EzcaCa,
    asked: Mutex<HashMap<String, f64>>,
}

impl CertificateAuthority for TimedRenewals {
    async fn register_domain(&self, id: &str) -> Result<(), ServiceError> {
        self.ca.register_domain(id).await
    }
    async fn issue(&self, id: &str, csr: String, days: u32) -> Result<Issued, ServiceError> {
        self.ca.issue(id, csr, days).await
    }
    async fn renew(
        &self,
        id: &str,
        current: &Issued,
        key: &DeviceKey,
        csr: String,
        days: u32,
        path: fleetsim::scenario::Renewal,
    ) -> Result<Issued, ServiceError> {
        let info = &current.info;
        let share = (time::OffsetDateTime::now_utc() - info.not_before).as_seconds_f64()
            / (info.not_after - info.not_before).as_seconds_f64();
        self.asked
            .lock()
            .unwrap()
            .entry(id.to_string())
            .or_insert(share);
        self.ca.renew(id, current, key, csr, days, path).await
    }
}

enum TimedBackends {}

impl Backends for TimedBackends {
    type Ca = TimedRenewals;
    type Registry = HubRegistry;
    type Transport = fleetsim::iothub::mqtt::MqttTransport;
    type Provisioning = fleetsim::device::NoProvisioning;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jitter_spreads_a_cohorts_renewals() {
    // Where in its certificate's life each device asks to renew, measured at the CA: without
    // jitter every device at 50%, with ±20% spread over 30-70%. This once compared the peak of
    // renewals per second of two fleet runs (at least 15 vs under 15), which assumed that 30
    // devices were issued within the same second: on a loaded machine issuance spreads, and so
    // would renewals without jitter. The scheduler plans from the certificate's own dates, so
    // the share is exact but for the device's lateness in asking.
    let e = common::start_emulators(Clock::compressed(Duration::from_secs(1))).await;
    let services = Arc::new(Services::<TimedBackends> {
        ca: TimedRenewals {
            ca: common::ezca(&e).await,
            asked: Mutex::new(HashMap::new()),
        },
        registry: Some(HubRegistry(common::registry(&e))),
        provisioning: None,
        transport: common::transport(&e),
        recorder: Arc::new(Recorder::new()),
        backoff: Backoff::default(),
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    });
    // The devices of both scenarios, as a run plans them (the jitter comes from the YAML).
    let mut specs = Vec::new();
    for (prefix, jitter) in [("together", ""), ("spread", "renew_jitter: 20%")] {
        let text = cohort(prefix, jitter);
        let scenario = fleetsim::scenario::parse(&text, Path::new("jitter.yaml")).expect("parses");
        specs.extend(fleet::device_specs(&scenario));
    }
    let stop = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let devices: Vec<_> = specs
        .into_iter()
        .map(|spec| {
            tokio::spawn(run_device(
                spec,
                services.clone(),
                start,
                stop.child_token(),
            ))
        })
        .collect();
    // Until all 60 have asked (by ~7 s: 70% of a 10 s life), at most 30 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while services.ca.asked.lock().unwrap().len() < 60 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} devices asked to renew",
            services.ca.asked.lock().unwrap().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    for device in devices {
        device.await.unwrap();
    }
    e.shutdown().await;

    let asked = services.ca.asked.lock().unwrap().clone();
    let shares = |prefix: &str| -> (f64, f64) {
        let mine = asked.iter().filter(|(id, _)| id.starts_with(prefix));
        mine.fold((f64::MAX, 0.0), |(lo, hi), (_, s)| (lo.min(*s), hi.max(*s)))
    };
    // Late by at most 0.8 s of the 10 s life, however loaded the machine.
    let (lo, hi) = shares("together-");
    assert!(
        lo >= 0.5 && hi < 0.58,
        "without jitter, all at 50%: {lo:.3}..{hi:.3}"
    );
    let (lo, hi) = shares("spread-");
    assert!(
        lo >= 0.3 && hi < 0.78 && hi - lo >= 0.2,
        "with ±20% jitter, over 30-70%: {lo:.3}..{hi:.3}"
    );
}

/// EZCA, except that renewals fail: always for devices named `never-*`, the first two tries for
/// the others.
struct FailingRenewals {
    ca: EzcaCa,
    tries: Mutex<HashMap<String, u32>>,
}

impl CertificateAuthority for FailingRenewals {
    async fn register_domain(&self, id: &str) -> Result<(), ServiceError> {
        self.ca.register_domain(id).await
    }
    async fn issue(&self, id: &str, csr: String, days: u32) -> Result<Issued, ServiceError> {
        self.ca.issue(id, csr, days).await
    }
    async fn renew(
        &self,
        id: &str,
        current: &Issued,
        key: &DeviceKey,
        csr: String,
        days: u32,
        path: fleetsim::scenario::Renewal,
    ) -> Result<Issued, ServiceError> {
        let tries = {
            let mut t = self.tries.lock().unwrap();
            let n = t.entry(id.to_string()).or_default();
            *n += 1;
            *n
        };
        if id.starts_with("never-") || tries <= 2 {
            return Err(ServiceError {
                kind: "http_503".into(),
                class: FailureClass::Transient,
                message: "unavailable".into(),
                retry_after: None,
            });
        }
        self.ca.renew(id, current, key, csr, days, path).await
    }
}

/// The embedded hub, with a CA whose renewals fail.
enum FailingBackends {}

impl Backends for FailingBackends {
    type Ca = FailingRenewals;
    type Registry = HubRegistry;
    type Transport = fleetsim::iothub::mqtt::MqttTransport;
    type Provisioning = fleetsim::device::NoProvisioning;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewals_retry_until_the_deadline_and_expiry_is_counted() {
    // A scenario day is a second: a 4-day certificate renews at 2 s, retries until 3.4 s and
    // expires at 4 s.
    let e = common::start_emulators(Clock::compressed(Duration::from_secs(1))).await;
    let recorder = Arc::new(Recorder::new());
    let services = Arc::new(Services::<FailingBackends> {
        ca: FailingRenewals {
            ca: common::ezca(&e).await,
            tries: Mutex::new(HashMap::new()),
        },
        registry: Some(HubRegistry(common::registry(&e))),
        provisioning: None,
        transport: common::transport(&e),
        recorder: recorder.clone(),
        backoff: Backoff {
            base: Duration::from_millis(100),
            cap: Duration::from_millis(300),
            max_attempts: 3,
        },
        gate: Default::default(),
        keys: fleetsim::device::keys::KeySource::fresh(),
        state: None,
    });
    let spec = |index: u64, id: &str| DeviceSpec {
        index,
        id: id.into(),
        key_kind: KeyKind::P256,
        validity_days: 4,
        renew_fraction: 0.5,
        telemetry: fleetsim::device::messages::TelemetryPlan::every(Duration::from_millis(200)),
        at_least_once: true,
        register: true,
        seed: index,
        renewal: RenewalPolicy {
            deadline: 0.85,
            ..RenewalPolicy::default()
        },
        control: Default::default(),
        cloud: None,
        resume: None,
    };
    let stop = CancellationToken::new();
    let start = tokio::time::Instant::now();
    let never = tokio::spawn(run_device(
        spec(0, "never-1"),
        services.clone(),
        start,
        stop.child_token(),
    ));
    let flaky = tokio::spawn(run_device(
        spec(1, "flaky-1"),
        services.clone(),
        start,
        stop.child_token(),
    ));
    let never = tokio::time::timeout(Duration::from_secs(15), never)
        .await
        .expect("the device whose certificate expired stops by itself")
        .unwrap();
    stop.cancel();
    let flaky = flaky.await.unwrap();

    assert!(never.expired_before_renewal, "{never:?}");
    assert_eq!(never.renewals_given_up, 1);
    assert_eq!(never.renewals, 0);
    assert!(
        never
            .failure
            .as_deref()
            .is_some_and(|f| f.contains("expired")),
        "{:?}",
        never.failure
    );
    // It kept sending telemetry while its renewal was failing.
    assert!(never.messages_acked >= 10, "{} acked", never.messages_acked);

    assert!(
        !flaky.expired_before_renewal && flaky.failure.is_none(),
        "{flaky:?}"
    );
    assert!(
        flaky.renewals >= 1,
        "the flaky device renewed after retrying"
    );

    let health = recorder.snapshot().certs;
    assert_eq!(health.expired_before_renewal, 1);
    assert_eq!(health.renewals_given_up, 1);
    assert!(health.renewal_tries_failed >= 4, "{health:?}");
    e.shutdown().await;
}
