//! The lifecycle of one device:
//! keygen → csr → ca.register_domain → ca.issue → hub.register → mqtt.connect → telemetry, and at
//! the renewal point a renewal and a swap to the new certificate ([`super::renewal`]), or a
//! revocation when the fleet says so ([`super::revocation`]), until the run stops. Every step is
//! timed; failures are counted, retried with jittered backoff when retrying can help, and never
//! panic.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::control::{Command, Inbox};
use super::gate::{Gate, TrafficClass};
use super::renewal::RenewalPolicy;
use super::revocation::RevocationReport;
use super::{
    CertificateAuthority, DeviceRegistry, DeviceSession, DeviceTransport, Issued, ServiceError,
};
use crate::crypto::{DeviceKey, KeyKind};
use crate::metrics::{DeviceState, Outcome, Phase, Recorder};

/// What one device does, resolved from the scenario.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub index: u64,
    pub id: String,
    pub key_kind: KeyKind,
    pub validity_days: u32,
    /// Share of the certificate's lifetime after which it renews (0.8 for 80%).
    pub renew_fraction: f64,
    pub telemetry_interval: Duration,
    pub at_least_once: bool,
    /// Create the hub identity as the device arrives (false when the fleet registered in bulk).
    pub register: bool,
    /// Seeds this device's telemetry values and backoff jitter.
    pub seed: u64,
    /// Renewal jitter, deadline, rekey and swap.
    pub renewal: RenewalPolicy,
    /// Commands from the fleet (revocation events); none by default.
    pub control: Inbox,
    /// What a resumed soak's state holds for this device (`--state`).
    pub resume: Option<Arc<crate::state::StoredDevice>>,
}

/// The services every device of a run shares.
pub struct Services<C, R, T> {
    pub ca: C,
    pub registry: R,
    pub transport: T,
    pub recorder: Arc<Recorder>,
    pub backoff: Backoff,
    /// The fleet's limits and closed-model places.
    pub gate: Gate,
    /// Fresh keys (timed as `keygen`) or keys from the on-disk pool.
    pub keys: super::keys::KeySource,
    /// The soak state (`--state`): certificates are committed there before they are used.
    pub state: Option<crate::state::DeviceJournal>,
}

/// How many of its latest certificate serials a device's report keeps.
pub const SERIALS_KEPT: usize = 16;

/// What happened to one device, for the report and for tests.
#[derive(Debug, Clone, Default)]
pub struct DeviceReport {
    pub id: String,
    /// Its telemetry is QoS 1 (so the hub's count must match what it sent).
    pub at_least_once: bool,
    pub enrolled: bool,
    pub connected: bool,
    pub messages_sent: u64,
    pub messages_acked: u64,
    pub messages_failed: u64,
    pub renewals: u64,
    pub connects: u64,
    /// How many certificates the device was issued (enrolment and renewals, this run and, on
    /// resume, before). Also the generation of its next key.
    pub certificates_issued: u64,
    /// Serials (hex) of the last [`SERIALS_KEPT`] certificates the device was issued, oldest
    /// first: bounded, so a soak's memory does not grow with every renewal.
    pub certificate_serials: Vec<String>,
    /// The chain the device holds at the end (leaf first).
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Why the device gave up, if it did.
    pub failure: Option<String>,
    /// Certificate swaps (one per renewal that reconnected).
    pub swaps: u64,
    /// Renewals abandoned at their deadline.
    pub renewals_given_up: u64,
    /// The certificate reached notAfter before a renewal succeeded.
    pub expired_before_renewal: bool,
    /// Set when the fleet told the device to revoke its certificate.
    pub revocation: Option<RevocationReport>,
    /// Still connected when the run stopped.
    pub online_at_end: bool,
}

impl DeviceReport {
    /// Notes a certificate the device was just issued.
    pub(super) fn issued(&mut self, issued: &Issued) {
        self.certificates_issued += 1;
        if self.certificate_serials.len() == SERIALS_KEPT {
            self.certificate_serials.remove(0);
        }
        self.certificate_serials
            .push(issued.info.serial_hex.clone());
        self.chain = issued.chain.clone();
    }
}

pub(super) enum Stop {
    /// The run ended while the device was waiting or working.
    Stopped,
    /// A step failed for good.
    Failed(Phase, ServiceError),
}

pub(super) struct Device<'a, C, R, T> {
    pub(super) spec: &'a DeviceSpec,
    pub(super) services: &'a Services<C, R, T>,
    pub(super) stop: &'a CancellationToken,
    pub(super) rng: StdRng,
    state: DeviceState,
    pub(super) report: DeviceReport,
    /// When the certificate was revoked (the start of the revocation request).
    pub(super) revoked_at: Option<Instant>,
}

/// Runs one device until `stop` is cancelled or it fails for good. `intended_start` is when the
/// scheduler meant it to arrive: enrolment latency counts from there.
pub async fn run_device<C, R, T>(
    spec: DeviceSpec,
    services: Arc<Services<C, R, T>>,
    intended_start: Instant,
    stop: CancellationToken,
) -> DeviceReport
where
    C: CertificateAuthority,
    R: DeviceRegistry,
    T: DeviceTransport,
{
    services.recorder.transition(None, DeviceState::Enrolling);
    let mut device = Device {
        spec: &spec,
        services: &services,
        stop: &stop,
        rng: StdRng::seed_from_u64(spec.seed),
        state: DeviceState::Enrolling,
        report: DeviceReport {
            id: spec.id.clone(),
            at_least_once: spec.at_least_once,
            ..Default::default()
        },
        revoked_at: None,
    };
    match device.live(intended_start).await {
        // A revoked device stays counted as revoked.
        Ok(()) | Err(Stop::Stopped) if device.is_revoked() => {}
        Ok(()) | Err(Stop::Stopped) => device.set_state(DeviceState::Done),
        Err(Stop::Failed(phase, e)) => {
            tracing::debug!(device = %spec.id, phase = phase.name(), error = %e, "device failed");
            device.report.failure = Some(format!("{}: {e}", phase.name()));
            device.set_state(DeviceState::Failed);
        }
    }
    device.report
}

impl<C, R, T> Device<'_, C, R, T>
where
    C: CertificateAuthority,
    R: DeviceRegistry,
    T: DeviceTransport,
{
    pub(super) fn set_state(&mut self, to: DeviceState) {
        use DeviceState::*;
        // Once revoked, the device is counted as revoked whatever it does next (it may well stay
        // connected), until it stops or fails.
        let to = match (self.is_revoked(), to) {
            (true, Online | Connecting | Renewing | Backoff) => Revoked,
            _ => to,
        };
        if self.state != to {
            self.services.recorder.transition(Some(self.state), to);
            self.state = to;
        }
    }

    /// The device's whole life. Its future is the device task's state for as long as the device
    /// lives, and an async fn's state is as large as its largest await: so the one-off steps
    /// (enrolment, registration, connects, renewals, swaps, revocation) are boxed and their state
    /// is freed when they end, instead of being carried inline by every idle device (≈ 14 KiB
    /// per device; BENCHMARKS.md, "Memory per device").
    async fn live(&mut self, intended_start: Instant) -> Result<(), Stop> {
        let (key, issued) = match super::resume::stored::<Stop>(self.spec, &mut self.report)? {
            Some((_, issued)) if super::resume::expired(&issued) => {
                Box::pin(self.reissue_expired()).await?
            }
            Some(stored) => stored,
            None => Box::pin(self.enrol()).await?,
        };
        self.report.enrolled = true;
        let registered = self.spec.resume.as_ref().is_some_and(|r| r.registered);
        if self.spec.register && !registered {
            let registry = &self.services.registry;
            let id = self.spec.id.as_str();
            Box::pin(self.attempt(Phase::HubRegister, || registry.register(id))).await?;
            if let Some(state) = &self.services.state {
                state
                    .registered(id)
                    .await
                    .map_err(|e| local_failure(Phase::HubRegister, "state", e.to_string()))?;
            }
        }

        self.set_state(DeviceState::Connecting);
        // Enrolled and registered: the next device may take this one's place (closed model).
        self.services.gate.enrolment_done(self.spec.index);
        let mut session = Box::pin(self.connect(Phase::MqttConnect, &key, &issued)).await?;
        self.report.connected = true;
        self.set_state(DeviceState::Online);
        let mut key = key;
        let mut current = issued;
        let mut schedule = self.schedule(&current);
        let mut inbox = self.spec.control.clone();
        let stop = self.stop;

        let mut message_id = 0u64;
        let mut next_tick = Instant::now();
        let mut first_telemetry = true;
        loop {
            let wake = schedule.wake(next_tick).min(next_tick);
            tokio::select! {
                _ = stop.cancelled() => break,
                command = inbox.next() => {
                    if let Command::Revoke(method) = command {
                        Box::pin(self.revoke(method, &key, &current)).await?;
                        if self.is_revoked() {
                            schedule.stop();
                        }
                    }
                    continue;
                }
                _ = session.closed() => {
                    match Box::pin(self.connection_lost(&key, &current)).await? {
                        Some(s) => session = s,
                        None => {
                            stop.cancelled().await;
                            return Ok(());
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(wake) => {}
            }
            let now = Instant::now();
            if schedule.next_try.is_some_and(|at| now >= at) {
                if let Some((new_key, issued)) =
                    Box::pin(self.try_renewal(&key, &current, &mut schedule)).await?
                {
                    let new_key = new_key.unwrap_or(key);
                    session = Box::pin(self.swap(session, &new_key, &issued)).await?;
                    key = new_key;
                    current = issued;
                    schedule = self.schedule(&current);
                    self.report.renewals += 1;
                }
                continue;
            }
            if schedule.expires.is_some_and(|at| now >= at) {
                // Renewal gave up and the certificate lapsed: the hub would refuse the next
                // connection, so the device is out.
                self.report.expired_before_renewal = true;
                self.services.recorder.certs().expired_before_renewal();
                session.close().await;
                return Err(local_failure(
                    Phase::CaRenew,
                    "expired_before_renewal",
                    "the certificate expired before a renewal succeeded".into(),
                ));
            }
            if now < next_tick {
                continue;
            }
            if self.services.gate.is_limited(TrafficClass::Publish) {
                let gate = self
                    .services
                    .gate
                    .wait(TrafficClass::Publish, &self.services.recorder);
                tokio::select! {
                    _ = self.stop.cancelled() => break,
                    _ = gate => {}
                }
            }
            let (topic, payload) =
                super::telemetry::next_message(&self.spec.id, message_id, &mut self.rng);
            message_id += 1;
            self.report.messages_sent += 1;
            self.services.recorder.message_sent();
            // Not cancelled by the stop signal: a message already handed to the hub is seen
            // through to its PUBACK (bounded by the ack timeout), so sent == acked at the end.
            let publish_start = Instant::now();
            let result = session
                .publish(topic, payload, self.spec.at_least_once)
                .await;
            let now = Instant::now();
            let recorder = &self.services.recorder;
            match result {
                Ok(()) => {
                    // Latency from when the message was due (and, uncorrected, from when the
                    // send began), so a late send shows up as latency.
                    recorder.record_with_actual(
                        Phase::MqttPublish,
                        Outcome::Ok,
                        next_tick,
                        publish_start,
                        now,
                    );
                    if self.spec.at_least_once {
                        self.report.messages_acked += 1;
                        recorder.message_acked();
                    }
                    if first_telemetry {
                        recorder.record(Phase::FirstTelemetry, Outcome::Ok, intended_start, now);
                        first_telemetry = false;
                    }
                }
                Err(e) => {
                    recorder.record_with_actual(
                        Phase::MqttPublish,
                        e.outcome(),
                        next_tick,
                        publish_start,
                        now,
                    );
                    recorder.error(Phase::MqttPublish, &e.kind);
                    self.report.messages_failed += 1;
                    recorder.message_failed();
                    match Box::pin(self.connection_lost(&key, &current)).await? {
                        Some(s) => session = s,
                        None => {
                            stop.cancelled().await;
                            return Ok(());
                        }
                    }
                }
            }
            next_tick += self.spec.telemetry_interval;
        }
        self.report.online_at_end = true;
        session.close().await;
        Ok(())
    }

    /// The session was lost: a revoked device records its cut-off and tries once more; any other
    /// reconnects (with retries). `None`: the device is cut off for good.
    async fn connection_lost(
        &mut self,
        key: &DeviceKey,
        current: &Issued,
    ) -> Result<Option<T::Session>, Stop> {
        if self.is_revoked() {
            return self.cut_off(key, current).await;
        }
        self.set_state(DeviceState::Connecting);
        let session = self.connect(Phase::MqttReconnect, key, current).await?;
        self.set_state(DeviceState::Online);
        Ok(Some(session))
    }

    /// A fresh key and a first certificate for it.
    async fn enrol(&mut self) -> Result<(DeviceKey, Issued), Stop> {
        self.request_certificate(false).await
    }

    /// A resumed soak's device whose stored certificate expired while the soak was down: it
    /// counts as expired before renewal (it was), and, as a real device's enrollment agent
    /// would, gets a new key and certificate for its registered domain before it connects; the
    /// state and the report count that as a renewal.
    async fn reissue_expired(&mut self) -> Result<(DeviceKey, Issued), Stop> {
        tracing::info!(device = %self.spec.id, "stored certificate expired while the soak was down; requesting a new one");
        self.report.expired_before_renewal = true;
        self.services.recorder.certs().expired_before_renewal();
        let obtained = self.request_certificate(true).await?;
        self.report.renewals += 1;
        Ok(obtained)
    }

    /// A key and a certificate from the CA: a first enrolment registers the device's domain
    /// first; a re-issue (`again`) uses the domain it has.
    async fn request_certificate(&mut self, again: bool) -> Result<(DeviceKey, Issued), Stop> {
        let recorder = self.services.recorder.clone();
        let kind = self.spec.key_kind;
        // One key per certificate: the first enrolment is generation 0, each renewal the next.
        let generation = self.report.certificates_issued;
        let key = self
            .services
            .keys
            .key_for(kind, self.spec.index, generation, &recorder)
            .await
            .map_err(|e| local_failure(Phase::Keygen, "keygen", e.to_string()))?;

        let t = Instant::now();
        let csr = key
            .csr_pem(&self.spec.id)
            .map_err(|e| local_failure(Phase::Csr, "csr", e.to_string()))?;
        recorder.record(Phase::Csr, Outcome::Ok, t, Instant::now());

        let ca = &self.services.ca;
        let id = self.spec.id.as_str();
        let validity = self.spec.validity_days;
        // The key and CSR are committed before the CA sees them, so a kill while the CA answers
        // leaves an intent a resumed run can match to what the CA issued.
        if let Some(state) = &self.services.state {
            state
                .intent(id, self.spec.index, again, &key, &csr)
                .await
                .map_err(|e| local_failure(Phase::CaIssue, "state", e.to_string()))?;
        }
        if !again {
            self.attempt(Phase::CaRegisterDomain, || ca.register_domain(id))
                .await?;
        }
        let issued = self
            .attempt(Phase::CaIssue, || ca.issue(id, csr.clone(), validity))
            .await?;
        // Committed before the device uses it (or a resumed run would not know it).
        if let Some(state) = &self.services.state {
            state
                .certificate(id, again, &key, &issued.chain, &issued.info)
                .await
                .map_err(|e| local_failure(Phase::CaIssue, "state", e.to_string()))?;
        }
        self.report.issued(&issued);
        Ok((key, issued))
    }

    pub(super) async fn connect(
        &mut self,
        phase: Phase,
        key: &DeviceKey,
        issued: &Issued,
    ) -> Result<T::Session, Stop> {
        let transport = &self.services.transport;
        let id = self.spec.id.as_str();
        let session = self
            .attempt(phase, || transport.connect(id, issued.chain.clone(), key))
            .await?;
        self.report.connects += 1;
        Ok(session)
    }

    /// Runs `op`, timing each try under `phase`, retrying retryable failures with backoff.
    async fn attempt<V, F, Fut>(&mut self, phase: Phase, mut op: F) -> Result<V, Stop>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<V, ServiceError>>,
    {
        let recorder = self.services.recorder.clone();
        let mut tries = 0;
        loop {
            if let Some(class) = TrafficClass::of(phase) {
                tokio::select! {
                    _ = self.stop.cancelled() => return Err(Stop::Stopped),
                    _ = self.services.gate.wait(class, &recorder) => {}
                }
            }
            let start = Instant::now();
            let result = tokio::select! {
                _ = self.stop.cancelled() => return Err(Stop::Stopped),
                r = op() => r,
            };
            let end = Instant::now();
            match result {
                Ok(v) => {
                    recorder.record(phase, Outcome::Ok, start, end);
                    return Ok(v);
                }
                Err(e) => {
                    recorder.record(phase, e.outcome(), start, end);
                    recorder.error(phase, &e.kind);
                    tracing::debug!(device = %self.spec.id, phase = phase.name(), error = %e, "attempt failed");
                    if !e.retryable() || tries + 1 >= self.services.backoff.max_attempts {
                        return Err(Stop::Failed(phase, e));
                    }
                    let previous = self.state;
                    self.set_state(DeviceState::Backoff);
                    let delay = self
                        .services
                        .backoff
                        .delay(tries, &mut self.rng)
                        .max(e.retry_after.unwrap_or_default());
                    tokio::select! {
                        _ = self.stop.cancelled() => return Err(Stop::Stopped),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    self.set_state(previous);
                    tries += 1;
                }
            }
        }
    }
}

impl From<(Phase, String)> for Stop {
    fn from((phase, message): (Phase, String)) -> Self {
        local_failure(phase, "state", message)
    }
}

pub(super) fn local_failure(phase: Phase, kind: &str, message: String) -> Stop {
    Stop::Failed(
        phase,
        ServiceError {
            kind: kind.into(),
            class: super::FailureClass::Rejected,
            message,
            retry_after: None,
        },
    )
}
