//! What every step of a device's life shares: what the device is told ([`DeviceSpec`] with its
//! [`RenewalPolicy`]), what the devices of a run share ([`Services`], over one [`Backends`]),
//! what a device reports ([`DeviceReport`] with its [`RevocationReport`]), and the [`Device`]
//! whose methods the steps are, with what every step needs: [`Device::attempt`] (timed tries,
//! through the gate, with backoff), the device state the recorder counts, and [`Stop`].
//!
//! The steps (`enrol`, `register` or `provision`, `connect`, `online`, ...) import this file; it
//! imports none of them, only the leaves (`backends`, `backoff`, `behaviour`, `control`, `gate`,
//! `keys`, `messages`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::backends::{Backends, DeviceSession, FailureClass, Issued, ServiceError};
use super::backoff::Backoff;
use super::behaviour::CloudBehaviour;
use super::control::Inbox;
use super::gate::{Gate, TrafficClass};
use super::keys::KeySource;
use super::messages::TelemetryPlan;
use crate::crypto::KeyKind;
use crate::metrics::{DeviceState, Outcome, Phase, Recorder};
use crate::scenario::{Renewal, RevokeMethod, Swap};

/// What one device does, resolved from the scenario.
#[derive(Debug, Clone)]
pub struct DeviceSpec {
    pub index: u64,
    pub id: String,
    pub key_kind: KeyKind,
    pub validity_days: u32,
    /// Share of the certificate's lifetime after which it renews (0.8 for 80%).
    pub renew_fraction: f64,
    /// What its cohort's devices send and when (shared by the cohort).
    pub telemetry: Arc<TelemetryPlan>,
    pub at_least_once: bool,
    /// Create the hub identity as the device arrives (false when the fleet registered in bulk).
    pub register: bool,
    /// Seeds this device's telemetry values and backoff jitter.
    pub seed: u64,
    /// Renewal jitter, deadline, rekey and swap.
    pub renewal: RenewalPolicy,
    /// Commands from the fleet (revocation events); none by default.
    pub control: Inbox,
    /// How it answers the cloud (shared by its cohort); `None`: telemetry only.
    pub cloud: Option<Arc<CloudBehaviour>>,
    /// What a resumed soak's state holds for this device (`--state`).
    pub resume: Option<Arc<crate::state::StoredDevice>>,
}

/// How a device renews, resolved from the scenario's `certificate` (see `renewal`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RenewalPolicy {
    /// Which EZCA call renews: as the enrollment agent, or as the device (certificate-JWT).
    pub path: Renewal,
    /// Share of the lifetime the renewal point may move either way (0.05 for ±5%).
    pub jitter: f64,
    /// Share of the lifetime after which failed renewals are no longer retried.
    pub deadline: f64,
    /// A new key per renewal.
    pub rekey: bool,
    pub swap: Swap,
    /// A SAS device's tokens and keys (`auth: sas`); `None`: an X.509 device.
    pub sas: Option<super::sas_hub::SasPolicy>,
}

impl Default for RenewalPolicy {
    fn default() -> Self {
        Self {
            path: Renewal::EnrollmentAgent,
            jitter: 0.0,
            deadline: 0.95,
            rekey: true,
            swap: Swap::BreakBeforeMake,
            sas: None,
        }
    }
}

/// The services every device of a run shares. Built once, complete, before the first device
/// starts.
pub struct Services<B: Backends> {
    pub ca: B::Ca,
    /// The hub's registry, where devices create their identity (`hub.register`); none when a
    /// provisioning service does.
    pub registry: Option<B::Registry>,
    /// The provisioning service (DPS) devices register with instead, learning their hub.
    pub provisioning: Option<B::Provisioning>,
    pub transport: B::Transport,
    pub recorder: Arc<Recorder>,
    pub backoff: Backoff,
    /// The fleet's limits and closed-model places.
    pub gate: Gate,
    /// Fresh keys (timed as `keygen`) or keys from the on-disk pool.
    pub keys: KeySource,
    /// The soak state (`--state`): certificates are committed there before they are used.
    pub state: Option<crate::state::DeviceJournal>,
}

/// How many of its latest certificate serials a device's report keeps.
pub const SERIALS_KEPT: usize = 16;

/// How long a make-before-break swap waits for the hub to drop the old session once the new one
/// is up.
const TAKEOVER_WAIT: Duration = Duration::from_secs(2);

/// Opens the session `connect` makes while `old` is up, then closes `old` (make-before-break,
/// for a certificate or a SAS-token swap): the new session and the time the device had neither.
pub(super) async fn make_before_break<S: DeviceSession>(
    mut old: S,
    connect: impl Future<Output = Result<S, Stop>>,
) -> Result<(S, Duration), Stop> {
    let mut closed_at = None;
    tokio::pin!(connect);
    let result = loop {
        tokio::select! {
            r = &mut connect => break r,
            _ = old.closed(), if closed_at.is_none() => closed_at = Some(Instant::now()),
        }
    };
    let new = match result {
        Ok(s) => s,
        Err(stop) => {
            old.close().await;
            return Err(stop);
        }
    };
    let ready = Instant::now();
    if closed_at.is_none() {
        // The hub takes the old session over as it accepts the new one; the drop may reach us
        // just after CONNACK, when there is no gap.
        closed_at = tokio::time::timeout(TAKEOVER_WAIT, old.closed())
            .await
            .ok()
            .map(|_| ready);
    }
    old.close().await;
    let gap = closed_at.map_or(Duration::ZERO, |c| ready.saturating_duration_since(c));
    Ok((new, gap))
}

/// How long a stopping device still waits for the answer to a request in flight
/// ([`Device::answer_of`]); the fleet's drain allows 15 s.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

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
    /// Payload bytes of the messages sent.
    pub bytes_sent: u64,
    /// IoT Hub's 4 KB meters of the messages sent (size with properties, at least one each).
    pub meters_sent: u64,
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
    /// The hub a provisioning service (DPS) placed the device in, last.
    pub assigned_hub: Option<String>,
    /// Times a provisioning service placed the device (more than one: it re-provisioned).
    pub provisioned: u32,
    /// Status polls the device sent to the provisioning service.
    pub provisioning_polls: u64,
    /// Provisioning requests throttled (429) and sent again.
    pub provisioning_throttled: u64,
    /// What the device heard from the cloud and did about it (see [`CloudReport`]).
    pub cloud: CloudReport,
    /// The phase the device was in when its task panicked (the panic was caught and counted).
    pub panicked_in: Option<crate::metrics::Phase>,
    /// A SAS device that moved to a certificate (a `migrate` event) and connected with it.
    pub migrated: bool,
}

/// A device's cloud-to-device traffic (all zero for a telemetry-only device).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CloudReport {
    /// Direct methods answered (any status).
    pub methods_answered: u64,
    /// Desired-property changes applied (each property of each patch).
    pub desired_applied: u64,
    /// Reported-property patches the hub accepted.
    pub reported_accepted: u64,
    /// Cloud-to-device messages received (each acknowledged: MQTT cannot refuse one).
    pub c2d_received: u64,
    /// Of those, the ones the application rejected (`behaviour.c2d.reject`).
    pub c2d_rejected: u64,
    /// Of those, the ones the application abandoned (`behaviour.c2d.abandon`).
    pub c2d_abandoned: u64,
    /// Messages from the cloud it could not use (malformed, unknown topic).
    pub malformed: u64,
    /// The telemetry interval the cloud last set, if it set one.
    pub interval_set: Option<std::time::Duration>,
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

/// What happened when a device was told to revoke its certificate (see `revocation`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RevocationReport {
    pub method: RevokeMethod,
    /// The CA's refusal, if the revocation failed (the device then carries on as before).
    pub error: Option<String>,
    /// Revocation → connection lost, if the connection was lost.
    pub cutoff: Option<Duration>,
    /// The hub refused the device's reconnect after the cut-off.
    pub reconnect_refused: bool,
}

/// Why a device's life ended early.
pub(super) enum Stop {
    /// The run ended while the device was waiting or working.
    Stopped,
    /// A step failed for good.
    Failed(Phase, ServiceError),
}

/// A failure of the device's own making (a key, a CSR, the state file): not worth retrying.
pub(super) fn local_failure(phase: Phase, kind: &str, message: String) -> Stop {
    Stop::Failed(
        phase,
        ServiceError {
            kind: kind.into(),
            class: FailureClass::Rejected,
            message,
            retry_after: None,
        },
    )
}

/// One device while it lives: the steps of its life are methods of this, each in its own file.
pub(super) struct Device<'a, B: Backends> {
    pub(super) spec: &'a DeviceSpec,
    pub(super) services: &'a Services<B>,
    pub(super) stop: &'a CancellationToken,
    pub(super) rng: StdRng,
    state: DeviceState,
    pub(super) report: DeviceReport,
    /// When the certificate was revoked (the start of the revocation request).
    pub(super) revoked_at: Option<Instant>,
}

impl<'a, B: Backends> Device<'a, B> {
    /// A device about to enrol (and counted as enrolling).
    pub(super) fn new(
        spec: &'a DeviceSpec,
        services: &'a Services<B>,
        stop: &'a CancellationToken,
    ) -> Self {
        services.recorder.transition(None, DeviceState::Enrolling);
        if let Some(board) = services.recorder.board() {
            board.set_state(spec.index, DeviceState::Enrolling);
        }
        Self {
            spec,
            services,
            stop,
            rng: StdRng::seed_from_u64(spec.seed),
            state: DeviceState::Enrolling,
            report: DeviceReport {
                id: spec.id.clone(),
                at_least_once: spec.at_least_once,
                ..Default::default()
            },
            revoked_at: None,
        }
    }

    pub(super) fn state(&self) -> DeviceState {
        self.state
    }

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
            if let Some(board) = self.services.recorder.board() {
                board.set_state(self.spec.index, to);
            }
            self.state = to;
        }
    }

    /// Counts a failure of `phase` by kind, and notes it as this device's last error on the
    /// fleet board (the web map's hover).
    pub(super) fn note_error(&self, phase: Phase, kind: &str) {
        self.services.recorder.error(phase, kind);
        if let Some(board) = self.services.recorder.board() {
            board.set_error(self.spec.index, format!("{}/{kind}", phase.name()));
        }
    }

    /// Whether this device's certificate has been revoked.
    pub(super) fn is_revoked(&self) -> bool {
        self.revoked_at.is_some()
    }

    /// The answer to a request already sent, even when the run stops meanwhile, for at most
    /// [`STOP_GRACE`] more: the service may have acted on it (issued a certificate, created an
    /// identity), and the report must count what the service did. `None` if the grace ran out.
    pub(super) async fn answer_of<T>(&self, request: impl Future<Output = T>) -> Option<T> {
        tokio::pin!(request);
        tokio::select! {
            answer = &mut request => Some(answer),
            _ = self.stop.cancelled() => tokio::time::timeout(STOP_GRACE, request).await.ok(),
        }
    }

    /// Runs `op`, timing each try under `phase`, retrying retryable failures with backoff.
    pub(super) async fn attempt<V, F, Fut>(&mut self, phase: Phase, mut op: F) -> Result<V, Stop>
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
            let Some(result) = self.answer_of(op()).await else {
                return Err(Stop::Stopped);
            };
            let end = Instant::now();
            let e = match result {
                Ok(v) => {
                    recorder.record(phase, Outcome::Ok, start, end);
                    return Ok(v);
                }
                Err(e) => e,
            };
            recorder.record(phase, e.outcome(), start, end);
            recorder.error(phase, &e.kind);
            if let Some(board) = recorder.board() {
                board.set_error(self.spec.index, format!("{}/{}", phase.name(), e.kind));
            }
            tracing::debug!(device = %self.spec.id, phase = phase.name(), error = %e, "attempt failed");
            if !e.retryable() || tries + 1 >= self.services.backoff.max_attempts {
                return Err(Stop::Failed(phase, e));
            }
            self.back_off(tries, e.retry_after).await?;
            tries += 1;
        }
    }

    /// Waits before retry number `tries` (at least as long as the service asked), counted as
    /// state `backoff`.
    async fn back_off(&mut self, tries: u32, asked: Option<Duration>) -> Result<(), Stop> {
        let previous = self.state;
        self.set_state(DeviceState::Backoff);
        let delay = self
            .services
            .backoff
            .delay(tries, &mut self.rng)
            .max(asked.unwrap_or_default());
        tokio::select! {
            _ = self.stop.cancelled() => return Err(Stop::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
        self.set_state(previous);
        Ok(())
    }
}
