//! `fleetsim plan-shards`: how many pods a scenario needs at a given number of devices per pod,
//! and what each pod needs: memory, CPU, open files and source ports towards the hub.
//!
//! The figures come from `BENCHMARKS.md` (jemalloc build, P-256 devices, remote target):
//! - memory: 307 MiB at 5,000 devices and 577 MiB at 10,000 ("Memory per device", after the
//!   boxed device steps): 55.3 KiB per device on top of ~37 MiB; planned as [`MIB_FIXED`] +
//!   [`KIB_PER_DEVICE`] per device, the limit [`LIMIT_OVER_REQUEST`] above the request for
//!   renewal storms and reconnect bursts;
//! - CPU: 35.5 µs of the simulator per QoS 1 message at 5,000 devices (23.6 µs at 10,000;
//!   "Allocator"), planned at [`CPU_US_PER_MESSAGE`]; about a millisecond per enrolment on the
//!   simulator's side (the crypto floor's keygen + CSR + the client half of the TLS handshake,
//!   ~0.5 ms, doubled for the HTTP calls around them), [`CPU_US_PER_ENROLMENT`];
//! - open files: one per device with a remote hub, plus ~512 ([`crate::rlimit`]);
//! - source ports: one TCP connection per device to the hub's MQTT address; Linux's default
//!   ephemeral range (32768–60999) gives [`PORTS_PER_ADDRESS`] per destination address and port.

use std::fmt::Write as _;

use std::sync::Arc;

use crate::device::messages::{SizeProfile, TelemetryPlan, size_profile};
use crate::iothub::quotas::Sku;
use crate::scenario::{Scenario, Target};

pub const MIB_FIXED: f64 = 64.0;
pub const KIB_PER_DEVICE: f64 = 56.0;
pub const LIMIT_OVER_REQUEST: f64 = 1.5;
pub const CPU_US_PER_MESSAGE: f64 = 36.0;
pub const CPU_US_PER_ENROLMENT: f64 = 1000.0;
pub const PORTS_PER_ADDRESS: u64 = 60999 - 32768 + 1;
/// Messages built per cohort to size its telemetry (random sizes and texts average out).
const SIZE_SAMPLES: u32 = 200;

/// What a scenario needs, split into pods.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardPlan {
    pub devices: u64,
    pub pods: u32,
    /// Devices in the largest shard (shards differ by at most one).
    pub devices_per_pod: u64,
    pub memory_request_mib: u64,
    pub memory_limit_mib: u64,
    /// Cores (millicores in the manifest).
    pub cpu_millis: u64,
    pub messages_per_second: f64,
    /// Bytes per second as IoT Hub sizes messages (body and properties), and its 4 KB meters a
    /// day, by the size model a run uses ([`crate::device::messages::size_profile`]): what
    /// decides a hub's daily quota.
    pub bytes_per_second: f64,
    pub meters_per_day: f64,
    pub peak_arrivals_per_second: Option<f64>,
    pub open_files: u64,
    /// Connections each pod opens to the hub's MQTT address.
    pub hub_connections: u64,
    pub embedded: bool,
}

/// Plans `scenario` at no more than `per_pod` devices per pod.
pub fn plan(scenario: &Scenario, per_pod: u64) -> ShardPlan {
    let devices = u64::from(scenario.fleet.devices.get());
    let per_pod = per_pod.clamp(1, devices);
    let pods = devices.div_ceil(per_pod) as u32;
    let largest = devices.div_ceil(u64::from(pods));
    let embedded = matches!(scenario.target.value, Target::Embedded(_));
    let traffic = telemetry_traffic(scenario);
    let messages = traffic.messages_per_second;
    let messages_per_pod = messages / f64::from(pods);
    let peak = peak_arrivals(scenario);
    let enrolments_per_pod = peak.map_or(0.0, |p| p / f64::from(pods));
    let cores =
        (messages_per_pod * CPU_US_PER_MESSAGE + enrolments_per_pod * CPU_US_PER_ENROLMENT) / 1e6;
    let request = MIB_FIXED + largest as f64 * KIB_PER_DEVICE / 1024.0;
    ShardPlan {
        devices,
        pods,
        devices_per_pod: largest,
        memory_request_mib: round_up(request, 16.0),
        memory_limit_mib: round_up(request * LIMIT_OVER_REQUEST, 16.0),
        cpu_millis: round_up(cores * 1000.0, 50.0).max(250),
        messages_per_second: messages,
        bytes_per_second: traffic.messages_per_second * traffic.mean_bytes,
        meters_per_day: traffic.messages_per_second * traffic.mean_meters * 86_400.0,
        peak_arrivals_per_second: peak,
        open_files: crate::rlimit::descriptors_needed(largest, embedded),
        hub_connections: largest,
        embedded,
    }
}

/// The fleet's telemetry on average: messages per second, and the mean bytes and meters of a
/// message, each cohort's plan sized by messages built as its devices build them.
fn telemetry_traffic(scenario: &Scenario) -> SizeProfile {
    let mut cohorts: Vec<(Arc<TelemetryPlan>, u64)> = Vec::new();
    for d in crate::fleet::device_specs(scenario) {
        match cohorts
            .iter_mut()
            .find(|(p, _)| Arc::ptr_eq(p, &d.telemetry))
        {
            Some((_, n)) => *n += 1,
            None => cohorts.push((d.telemetry, 1)),
        }
    }
    let (mut messages, mut bytes, mut meters) = (0.0, 0.0, 0.0);
    for (plan, devices) in &cohorts {
        let profile = size_profile(plan, SIZE_SAMPLES);
        let rate = profile.messages_per_second * *devices as f64;
        messages += rate;
        bytes += rate * profile.mean_bytes;
        meters += rate * profile.mean_meters;
    }
    let per_message = |x: f64| if messages > 0.0 { x / messages } else { 0.0 };
    SizeProfile {
        mean_bytes: per_message(bytes),
        mean_meters: per_message(meters),
        messages_per_second: messages,
    }
}

/// The open model's highest rate over the fleet and its cohorts; none for the closed model.
fn peak_arrivals(scenario: &Scenario) -> Option<f64> {
    let peak = |a: &crate::scenario::Arrival| {
        let stages = a.stages.iter().filter_map(|s| s.value.ramp_to.map(|r| r.0));
        a.rate
            .map(|r| r.0)
            .into_iter()
            .chain(stages)
            .reduce(f64::max)
    };
    let fleet = scenario.fleet.arrival().and_then(|a| peak(&a));
    let cohorts = scenario
        .fleet
        .cohorts
        .iter()
        .filter_map(|c| c.value.arrival.as_ref().and_then(|a| peak(&a.value)));
    fleet.into_iter().chain(cohorts).reduce(|a, b| a + b)
}

fn round_up(value: f64, step: f64) -> u64 {
    ((value / step).ceil() * step) as u64
}

impl ShardPlan {
    /// The plan as `fleetsim plan-shards` prints it, with a patch for a kustomize overlay.
    pub fn to_text(&self, scenario: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{scenario}: {} devices in {} pods of at most {} devices",
            self.devices, self.pods, self.devices_per_pod
        );
        let _ = writeln!(
            s,
            "telemetry: {:.0} msgs/s in all, {:.0} per pod; peak arrivals: {}",
            self.messages_per_second,
            self.messages_per_second / f64::from(self.pods),
            match self.peak_arrivals_per_second {
                Some(p) => format!("{p:.0}/s in all, {:.0}/s per pod", p / f64::from(self.pods)),
                None => "closed model (as fast as the CA admits)".into(),
            }
        );
        let _ = writeln!(
            s,
            "hub: {} a second (as IoT Hub sizes messages), {:.0} meters of 4 KB a day ({})",
            crate::metrics::human_bytes(self.bytes_per_second as u64),
            self.meters_per_day,
            self.units_text()
        );
        let _ = writeln!(s, "each pod needs:");
        let _ = writeln!(
            s,
            "  memory    request {} MiB, limit {} MiB ({MIB_FIXED} MiB + {KIB_PER_DEVICE} KiB per device)",
            self.memory_request_mib, self.memory_limit_mib
        );
        let _ = writeln!(
            s,
            "  cpu       {} millicores ({CPU_US_PER_MESSAGE} µs per message, {CPU_US_PER_ENROLMENT} µs per enrolment)",
            self.cpu_millis
        );
        let _ = writeln!(
            s,
            "  open files {} (fleetsim raises its soft limit to the hard one, typically 524288+ in a container)",
            self.open_files
        );
        let _ = writeln!(
            s,
            "  source ports {} towards the hub's MQTT address (of {PORTS_PER_ADDRESS} per address with Linux's default range: {})",
            self.hub_connections,
            match self.hub_connections <= PORTS_PER_ADDRESS * 9 / 10 {
                true => "fits",
                false =>
                    "too many: use more pods, or widen net.ipv4.ip_local_port_range as deploy/kubernetes does",
            }
        );
        if self.embedded {
            let _ = writeln!(
                s,
                "warning: the scenario's target is embedded: each pod would run its own emulators; \
                 point it at `fleetsim emulate` or the real services (target.remote) to share one"
            );
        }
        s.push('\n');
        s.push_str(&self.overlay_patch());
        s
    }

    /// How many units of each standard tier the daily quota takes (`S1: 3 units, ...`).
    fn units_text(&self) -> String {
        [Sku::S1, Sku::S2, Sku::S3]
            .iter()
            .map(|sku| {
                let per_unit = sku.limits().daily_messages_per_unit as f64;
                let units = (self.meters_per_day / per_unit).ceil().max(1.0);
                format!(
                    "{}: {units:.0} unit{}",
                    sku.name(),
                    if units > 1.0 { "s" } else { "" }
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// A patch for `deploy/kubernetes` overlays: the shard count and each pod's resources.
    pub fn overlay_patch(&self) -> String {
        format!(
            "# kustomize patch (patches: in your overlay); the overlay's replacements copy\n\
             # completions to parallelism, --shard and the collector's --expect\n\
             apiVersion: batch/v1\n\
             kind: Job\n\
             metadata:\n  name: fleetsim-shards\n\
             spec:\n  completions: {pods}\n  template:\n    spec:\n      containers:\n\
             \x20       - name: fleetsim\n          resources:\n\
             \x20           requests: {{cpu: {cpu}m, memory: {req}Mi}}\n\
             \x20           limits: {{memory: {lim}Mi}}\n",
            pods = self.pods,
            cpu = self.cpu_millis,
            req = self.memory_request_mib,
            lim = self.memory_limit_mib,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scenario(devices: u32, extra: &str) -> Scenario {
        let text = format!(
            "name: sizing\nduration: 60s\ntarget:\n  embedded: {{}}\nfleet:\n  devices: {devices}\n  arrival_rate: 400/s\ntelemetry:\n  interval: 5s\n{extra}"
        );
        crate::scenario::parse(&text, std::path::Path::new("sizing.yaml")).unwrap()
    }

    #[test]
    fn pods_and_their_needs_follow_the_per_device_figures() {
        let plan = plan(&scenario(20_000, ""), 5_000);
        assert_eq!((plan.pods, plan.devices_per_pod), (4, 5_000));
        // 64 MiB + 5,000 × 56 KiB = 337.4 MiB → 352; × 1.5 = 506 → 512.
        assert_eq!((plan.memory_request_mib, plan.memory_limit_mib), (352, 512));
        assert!((plan.messages_per_second - 4_000.0).abs() < 1e-6);
        // 1,000 msgs/s × 36 µs + 100 arrivals/s × 1 ms = 0.136 cores → the 250m floor.
        assert_eq!(plan.cpu_millis, 250);
        assert_eq!(plan.open_files, 2 * 5_000 + 512);
        assert!(plan.embedded);
        // The EZCA sample (~128 bytes with its properties): one 4 KB meter a message, 4,000 ×
        // 86,400 a day.
        assert!((plan.meters_per_day - 345_600_000.0).abs() < 1.0);
        assert!(
            plan.bytes_per_second > 4_000.0 * 100.0 && plan.bytes_per_second < 4_000.0 * 160.0,
            "{plan:?}"
        );
        let text = plan.to_text("sizing");
        assert!(
            text.contains(
                "345600000 meters of 4 KB a day (S1: 864 units, S2: 58 units, S3: 2 units)"
            ),
            "{text}"
        );
        assert!(text.contains("completions: 4"), "{text}");
        assert!(text.contains("target is embedded"), "{text}");
    }

    #[test]
    fn the_hub_quota_follows_each_cohorts_size_model() {
        // 900 devices send the sample every 5 s; 100 send raw 9 KB (three meters) every 10 s.
        let cohorts = "  cohorts:\n    - {name: small, share: 90%}\n    - name: big\n      share: 10%\n      telemetry: {interval: 10s, payload: {size: 9KB}}\n";
        let s = crate::scenario::parse(
            &format!("name: sizing\nduration: 60s\ntarget:\n  embedded: {{}}\nfleet:\n  devices: 1000\n  arrival_rate: 400/s\n{cohorts}telemetry:\n  interval: 5s\n"),
            std::path::Path::new("sizing.yaml"),
        )
        .unwrap();
        let plan = plan(&s, 1_000);
        assert!((plan.messages_per_second - (180.0 + 10.0)).abs() < 1e-6);
        // 180/s × 1 meter + 10/s × 3 meters, a day.
        assert!(
            (plan.meters_per_day - 210.0 * 86_400.0).abs() < 1.0,
            "{plan:?}"
        );
        assert!(plan.bytes_per_second > 10.0 * 9216.0);
        assert!(
            plan.to_text("s")
                .contains("(S1: 46 units, S2: 4 units, S3: 1 unit)")
        );
    }

    #[test]
    fn uneven_fleets_round_the_largest_shard_up() {
        let plan = plan(&scenario(10_001, ""), 5_000);
        assert_eq!((plan.pods, plan.devices_per_pod), (3, 3_334));
        let one = super::plan(&scenario(10, ""), 1_000);
        assert_eq!((one.pods, one.devices_per_pod), (1, 10));
    }
}
