//! The process-wide recorder shared by all device tasks.
//!
//! **Why shards, not one lock per histogram.** At 50k events/s one mutex per phase × outcome is a
//! shared lock that every worker thread fights over for the hottest slot (`mqtt.publish/ok`).
//! Instead the recorder owns a small array of shards (twice the available parallelism, at least
//! 4); each OS thread is given a sequential number the first time it records, and writes only to
//! shard `number % shards`. Tokio's worker threads therefore each land on their own shard and take
//! an uncontended lock (a single atomic swap, no syscall); only a snapshot walks all shards and
//! merges them with `Histogram::add`, which is exact.
//!
//! The alternatives considered: `thread_local!` histograms need a registry to find them at
//! snapshot time and lose samples when a `spawn_blocking` thread exits, and must be keyed by
//! recorder because tests run several recorders in one process; `hdrhistogram::sync` needs one
//! `Recorder` handle per writer (per device would mean one histogram each: 100k × 136 KiB) and a
//! phaser round-trip for every snapshot. Shards keep the memory bounded (histograms are allocated
//! on first use, per shard and slot) and snapshots cheap.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use hdrhistogram::Histogram;

use super::vocabulary::{DeviceState, Outcome, Phase};
use crate::sync::lock;

/// Lowest recordable latency, in microseconds.
pub const LOWEST_US: u64 = 1;
/// Highest recordable latency (1 h), in microseconds; longer operations are clamped to it.
pub const HIGHEST_US: u64 = 3_600_000_000;
/// Significant figures kept: values are exact to within 0.1%.
pub const SIGFIG: u8 = 3;

const SLOTS: usize = Phase::ALL.len() * Outcome::ALL.len();

/// An empty histogram with the recorder's bounds (1 µs..1 h, 3 significant figures).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(LOWEST_US, HIGHEST_US, SIGFIG)
        .expect("static histogram bounds are valid")
}

fn slot(phase: Phase, outcome: Outcome) -> usize {
    phase.index() * Outcome::ALL.len() + outcome.index()
}

static NEXT_THREAD: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    /// This thread's number, handed out in order of first use so that the few runtime worker
    /// threads spread evenly over the shards.
    static THREAD_NUMBER: usize = NEXT_THREAD.fetch_add(1, Ordering::Relaxed);
}

/// What one shard holds. Histograms are boxed and allocated on first use: most of the 261
/// phase × outcome slots stay empty in a run.
#[derive(Default)]
struct ShardData {
    corrected: Vec<Option<Box<Histogram<u64>>>>,
    uncorrected: Vec<Option<Box<Histogram<u64>>>>,
    /// Per phase: error kind → count.
    errors: Vec<HashMap<String, u64>>,
}

impl ShardData {
    fn new() -> Self {
        Self {
            corrected: (0..SLOTS).map(|_| None).collect(),
            uncorrected: (0..SLOTS).map(|_| None).collect(),
            errors: (0..Phase::ALL.len()).map(|_| HashMap::new()).collect(),
        }
    }
}

/// Aligned to keep two shards' locks off one cache line, so neighbouring threads don't slow each
/// other down through false sharing. A panic while holding its lock leaves only counts behind,
/// which are still valid, so it is taken over ([`crate::sync::lock`]).
#[repr(align(128))]
struct Shard(Mutex<ShardData>);

pub struct Recorder {
    shards: Box<[Shard]>,
    messages_sent: AtomicU64,
    messages_acked: AtomicU64,
    messages_failed: AtomicU64,
    /// Payload bytes and IoT Hub 4 KB meters of the messages sent.
    bytes_sent: AtomicU64,
    meters_sent: AtomicU64,
    states: [AtomicI64; DeviceState::ALL.len()],
    /// `service/endpoint/reason` → retries a client made on its own (EZCA's 2/4/8 s policy).
    /// Rare by nature (each waits seconds), so one lock is enough.
    retries: Mutex<BTreeMap<String, u64>>,
    certs: super::certs::CertHealth,
    /// Set when the run has a backend: devices note their acknowledged telemetry in it.
    delivery: std::sync::OnceLock<Arc<super::delivery::DeliveryLedger>>,
    /// Which device is in which state, when the run draws a map ([`super::board`]).
    board: std::sync::OnceLock<Arc<super::board::DeviceBoard>>,
    /// Every QoS 1 telemetry message: acknowledged or lost, per cause.
    pub qos1: super::qos1::Qos1Ledger,
    /// Hub identities by authentication type (see [`Recorder::identity`]).
    identities: super::auth_gauge::IdentityGauges,
}

impl Default for Recorder {
    fn default() -> Self {
        Self::new()
    }
}

fn micros(from: Instant, to: Instant) -> u64 {
    let us = to.saturating_duration_since(from).as_micros();
    u64::try_from(us)
        .unwrap_or(HIGHEST_US)
        .clamp(LOWEST_US, HIGHEST_US)
}

fn record_into(slots: &mut [Option<Box<Histogram<u64>>>], slot: usize, us: u64) {
    slots[slot]
        .get_or_insert_with(|| Box::new(new_histogram()))
        .saturating_record(us);
}

impl Recorder {
    pub fn new() -> Self {
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self::with_shards((threads * 2).clamp(4, 64))
    }

    /// A recorder with exactly `shards` shards (at least one).
    pub fn with_shards(shards: usize) -> Self {
        Self {
            shards: (0..shards.max(1))
                .map(|_| Shard(Mutex::new(ShardData::new())))
                .collect(),
            messages_sent: AtomicU64::new(0),
            messages_acked: AtomicU64::new(0),
            messages_failed: AtomicU64::new(0),
            bytes_sent: AtomicU64::new(0),
            meters_sent: AtomicU64::new(0),
            states: Default::default(),
            retries: Mutex::new(BTreeMap::new()),
            certs: super::certs::CertHealth::new(),
            delivery: std::sync::OnceLock::new(),
            board: std::sync::OnceLock::new(),
            qos1: Default::default(),
            identities: Default::default(),
        }
    }

    /// A device's hub identity appeared as `to`, or (`from`) changed type: the fleet's
    /// identities per authentication type over time (SAS devices and their migration).
    pub fn identity(
        &self,
        from: Option<super::auth_gauge::AuthType>,
        to: super::auth_gauge::AuthType,
    ) {
        self.identities.change(from, to);
    }

    fn shard(&self) -> &Shard {
        let n = THREAD_NUMBER.with(|n| *n);
        &self.shards[n % self.shards.len()]
    }

    /// Records one operation of `phase` that was due at `intended_start` and ended at `end`.
    pub fn record(
        &self,
        phase: Phase,
        outcome: Outcome,
        intended_start: impl Into<Instant>,
        end: impl Into<Instant>,
    ) {
        let us = micros(intended_start.into(), end.into());
        record_into(
            &mut lock(&self.shard().0).corrected,
            slot(phase, outcome),
            us,
        );
    }

    /// Records an operation that was due at `intended_start` but only began at `actual_start`
    /// (e.g. a publish that waited behind a slow one): the corrected histogram gets
    /// `end - intended_start`, the uncorrected one `end - actual_start`.
    pub fn record_with_actual(
        &self,
        phase: Phase,
        outcome: Outcome,
        intended_start: impl Into<Instant>,
        actual_start: impl Into<Instant>,
        end: impl Into<Instant>,
    ) {
        let end = end.into();
        let corrected = micros(intended_start.into(), end);
        let uncorrected = micros(actual_start.into(), end);
        let slot = slot(phase, outcome);
        let mut shard = lock(&self.shard().0);
        record_into(&mut shard.corrected, slot, corrected);
        record_into(&mut shard.uncorrected, slot, uncorrected);
    }

    /// Starts the delivery check (a run with a backend): from now on devices note every
    /// acknowledged message in the returned ledger.
    pub fn track_deliveries(&self) -> Arc<super::delivery::DeliveryLedger> {
        self.delivery.get_or_init(Default::default).clone()
    }

    /// The hub acknowledged telemetry message `seq` of `device` (noted only when deliveries are
    /// tracked).
    pub fn telemetry_acked(&self, device: &str, seq: u64) {
        if let Some(ledger) = self.delivery.get() {
            ledger.acked(device, seq);
        }
    }

    /// Keeps the fleet board `board` up to date from now on (the first board set wins).
    pub fn set_board(&self, board: Arc<super::board::DeviceBoard>) {
        let _ = self.board.set(board);
    }

    /// The fleet board, if the run keeps one.
    pub fn board(&self) -> Option<&Arc<super::board::DeviceBoard>> {
        self.board.get()
    }

    /// Counts a failure of `phase` by kind (`tls`, `http_401`, `connack_5`, ...).
    pub fn error(&self, phase: Phase, kind: &str) {
        let mut shard = lock(&self.shard().0);
        let by_kind = &mut shard.errors[phase.index()];
        match by_kind.get_mut(kind) {
            Some(n) => *n += 1,
            None => {
                by_kind.insert(kind.to_string(), 1);
            }
        }
    }

    /// Counts a retry a service client made by itself, e.g. (`ezca`, `RequestSSLCertificate`,
    /// `http_503`).
    pub fn retry(&self, service: &str, endpoint: &str, reason: &str) {
        let mut retries = lock(&self.retries);
        *retries
            .entry(format!("{service}/{endpoint}/{reason}"))
            .or_insert(0) += 1;
    }

    pub fn message_sent(&self) {
        self.messages_sent.fetch_add(1, Ordering::Relaxed);
    }

    pub fn message_acked(&self) {
        self.messages_acked.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts the payload bytes and IoT Hub meters of a message sent (with [`message_sent`]).
    ///
    /// [`message_sent`]: Self::message_sent
    pub fn message_bytes(&self, bytes: u64, meters: u64) {
        self.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        self.meters_sent.fetch_add(meters, Ordering::Relaxed);
    }

    /// Counts a telemetry message that was not delivered (publish error or missing PUBACK).
    pub fn message_failed(&self) {
        self.messages_failed.fetch_add(1, Ordering::Relaxed);
    }

    /// Moves one device from `from` to `to` (pass `None` for a device that just appeared).
    pub fn transition(&self, from: Option<DeviceState>, to: DeviceState) {
        if let Some(from) = from {
            self.states[from as usize].fetch_sub(1, Ordering::Relaxed);
        }
        self.states[to as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// The fleet's certificate health (held certificates, renewals, revocations).
    pub fn certs(&self) -> &super::certs::CertHealth {
        &self.certs
    }

    /// Adds what an earlier part of the same soak recorded (a resumed `--state` run): its
    /// histograms, message counters (sent, acked, failed) and errors keyed `phase/kind`.
    pub fn absorb(
        &self,
        latency: &BTreeMap<(Phase, Outcome), Histogram<u64>>,
        uncorrected: &BTreeMap<(Phase, Outcome), Histogram<u64>>,
        messages: [u64; 3],
        errors: &BTreeMap<String, u64>,
    ) {
        let mut shard = lock(&self.shards[0].0);
        for (into, from) in [(0, latency), (1, uncorrected)] {
            for ((phase, outcome), h) in from {
                let slots = match into {
                    0 => &mut shard.corrected,
                    _ => &mut shard.uncorrected,
                };
                let target =
                    slots[slot(*phase, *outcome)].get_or_insert_with(|| Box::new(new_histogram()));
                // Histograms of another bound are skipped rather than fail the resume.
                let _ = target.add(h);
            }
        }
        for (key, n) in errors {
            if let Some((phase, kind)) = key.split_once('/')
                && let Some(phase) = Phase::from_name(phase)
            {
                *shard.errors[phase.index()]
                    .entry(kind.to_string())
                    .or_insert(0) += n;
            }
        }
        drop(shard);
        self.messages_sent.fetch_add(messages[0], Ordering::Relaxed);
        self.messages_acked
            .fetch_add(messages[1], Ordering::Relaxed);
        self.messages_failed
            .fetch_add(messages[2], Ordering::Relaxed);
    }

    /// Everything recorded so far, with the shards merged. Each shard is locked only while it is
    /// added in, so writers on other shards carry on.
    pub fn snapshot(&self) -> Snapshot {
        let mut corrected: Vec<Option<Histogram<u64>>> = (0..SLOTS).map(|_| None).collect();
        let mut uncorrected: Vec<Option<Histogram<u64>>> = (0..SLOTS).map(|_| None).collect();
        let mut errors = BTreeMap::new();
        for shard in self.shards.iter() {
            let data = lock(&shard.0);
            merge_slots(&mut corrected, &data.corrected);
            merge_slots(&mut uncorrected, &data.uncorrected);
            for (phase, by_kind) in Phase::ALL.iter().zip(&data.errors) {
                for (kind, n) in by_kind {
                    *errors
                        .entry(format!("{}/{kind}", phase.name()))
                        .or_insert(0) += n;
                }
            }
        }
        let devices = DeviceState::ALL
            .iter()
            .map(|s| (s.name(), self.states[*s as usize].load(Ordering::Relaxed)))
            .collect();
        Snapshot {
            identities: self.identities.snapshot(),
            latency: keyed(corrected),
            uncorrected: keyed(uncorrected),
            messages_sent: self.messages_sent.load(Ordering::Relaxed),
            messages_acked: self.messages_acked.load(Ordering::Relaxed),
            messages_failed: self.messages_failed.load(Ordering::Relaxed),
            bytes_sent: self.bytes_sent.load(Ordering::Relaxed),
            meters_sent: self.meters_sent.load(Ordering::Relaxed),
            errors,
            retries: lock(&self.retries).clone(),
            devices,
            certs: self.certs.snapshot(),
        }
    }
}

fn merge_slots(into: &mut [Option<Histogram<u64>>], from: &[Option<Box<Histogram<u64>>>]) {
    for (into, from) in into.iter_mut().zip(from) {
        let Some(from) = from.as_deref() else {
            continue;
        };
        match into {
            // Same bounds on both sides, so `add` cannot fail.
            Some(h) => h
                .add(from)
                .expect("histograms with equal bounds always add"),
            None => *into = Some(from.clone()),
        }
    }
}

fn keyed(slots: Vec<Option<Histogram<u64>>>) -> BTreeMap<(Phase, Outcome), Histogram<u64>> {
    let mut out = BTreeMap::new();
    for (i, h) in slots.into_iter().enumerate() {
        if let Some(h) = h.filter(|h| !h.is_empty()) {
            let phase = Phase::ALL[i / Outcome::ALL.len()];
            let outcome = Outcome::ALL[i % Outcome::ALL.len()];
            out.insert((phase, outcome), h);
        }
    }
    out
}

/// What the recorder held at one moment, shards merged.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Latency from the intended start, per phase × outcome; only slots with samples.
    pub latency: BTreeMap<(Phase, Outcome), Histogram<u64>>,
    /// Latency from the actual start, for phases recorded with one (`mqtt.publish`).
    pub uncorrected: BTreeMap<(Phase, Outcome), Histogram<u64>>,
    pub messages_sent: u64,
    pub messages_acked: u64,
    /// Telemetry messages whose publish failed.
    pub messages_failed: u64,
    /// Payload bytes of the messages sent.
    pub bytes_sent: u64,
    /// IoT Hub's 4 KB meters of the messages sent.
    pub meters_sent: u64,
    /// `phase/kind` → count.
    pub errors: BTreeMap<String, u64>,
    /// `service/endpoint/reason` → retries made inside a service client.
    pub retries: BTreeMap<String, u64>,
    /// Device-state gauges.
    pub devices: BTreeMap<&'static str, i64>,
    /// Fleet certificate health at the moment of the snapshot.
    pub certs: super::certs::CertSnapshot,
    /// Hub identities per authentication type (`sas`, `x509`); empty for a run without SAS
    /// devices.
    pub identities: BTreeMap<&'static str, i64>,
}

impl Snapshot {
    pub fn count(&self, phase: Phase, outcome: Outcome) -> u64 {
        self.latency.get(&(phase, outcome)).map_or(0, |h| h.len())
    }

    pub fn total_errors(&self) -> u64 {
        self.errors.values().sum()
    }
}

#[cfg(test)]
#[path = "recorder_tests.rs"]
mod tests;
