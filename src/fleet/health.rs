//! Builds the report's certificate section at the end of a run from the recorder's certificate
//! health, the devices' own reports and, for the embedded hubs, what they received per device;
//! and the report's hub totals (and, in DPS runs, each hub's and DPS's counts) from the embedded
//! emulators' counters.

use std::time::Duration;

use crate::device::DeviceReport;
use crate::emulator::HubEmulator;
use crate::emulator::dps::DpsStats;
use crate::emulator::hub::HubStats;
use crate::metrics::Recorder;
use crate::report::HubCounts;
use crate::report::certificates::{CertificateReport, RevocationSummary, SwapReport};
use crate::report::provisioning::{DpsCounts, HubReceived};
use crate::scenario::{RevokeMethod, Scenario, Target};

/// The report's copy of the embedded hub's totals.
pub fn hub_counts(h: HubStats) -> HubCounts {
    HubCounts {
        messages: h.messages,
        bytes: h.bytes,
        meters: h.meters,
        connects: h.connects,
        refused: h.refused,
        drops: h.drops,
        devices_registered: h.devices_registered,
        throttled: h.throttled,
    }
}

/// The totals of every embedded hub (several in a DPS run); none without an embedded hub.
pub fn hubs_total(hubs: &[HubEmulator]) -> Option<HubCounts> {
    let mut hubs = hubs.iter().map(|h| hub_counts(h.stats()));
    let mut total = hubs.next()?;
    for h in hubs {
        total.messages += h.messages;
        total.bytes += h.bytes;
        total.connects += h.connects;
        total.refused += h.refused;
        total.drops += h.drops;
        total.devices_registered += h.devices_registered;
        total.throttled += h.throttled;
    }
    Some(total)
}

/// One embedded hub's counts, for the provisioning section.
pub fn hub_received(h: HubStats) -> HubReceived {
    HubReceived {
        messages: h.messages,
        bytes: h.bytes,
        connects: h.connects,
        refused: h.refused,
        throttled: h.throttled,
        devices_registered: h.devices_registered,
    }
}

/// The embedded DPS's counts, for the provisioning section.
pub fn dps_counts(d: DpsStats) -> DpsCounts {
    DpsCounts {
        registrations: d.registrations,
        assigned: d.assigned,
        polls: d.polls,
        throttled: d.throttled,
        refused: d.refused,
        unauthorized: d.unauthorized,
        disabled: d.disabled,
        failed: d.failed,
        malformed: d.malformed + d.protocol_errors,
    }
}

/// The window over which the CA's latency during a renewal storm is reported.
const STORM_WINDOW: Duration = Duration::from_secs(10);

pub fn certificate_report(
    scenario: &Scenario,
    recorder: &Recorder,
    devices: &[DeviceReport],
    hubs: &[HubEmulator],
    health: crate::metrics::certs::CertSnapshot,
) -> CertificateReport {
    CertificateReport {
        day_seconds: scenario.day().as_secs_f64(),
        renewal_success_ratio: health.renewal_success_ratio(),
        health,
        storm: recorder.certs().storm(STORM_WINDOW),
        swap: swaps(scenario, devices, hubs),
        revocation: scenario
            .has_revocations()
            .then(|| revocations(scenario, devices)),
        merge_note: None,
    }
}

/// The swaps, and, against the embedded hubs, whether a QoS 1 message was lost or duplicated
/// (a device's messages are counted in every hub, as DPS may have moved it).
fn swaps(scenario: &Scenario, devices: &[DeviceReport], hubs: &[HubEmulator]) -> SwapReport {
    // Cohorts may swap differently: the report names every mode used.
    let mut modes: Vec<&str> = Vec::new();
    for c in scenario.certificate_policies() {
        if !modes.contains(&c.swap.name()) {
            modes.push(c.swap.name());
        }
    }
    let mut swap = SwapReport {
        mode: modes.join(" + "),
        swaps: devices.iter().map(|d| d.swaps).sum(),
        ..Default::default()
    };
    if !hubs.is_empty() {
        // QoS 1 devices only (cohorts may differ). Revoked devices are cut off mid-stream on
        // purpose; their losses are not the swap's.
        for d in devices
            .iter()
            .filter(|d| d.at_least_once && d.revocation.is_none())
        {
            let received: u64 = hubs.iter().map(|h| h.device_stats(&d.id).messages).sum();
            swap.devices_compared += 1;
            swap.qos1_lost += d.messages_sent.saturating_sub(received);
            swap.qos1_duplicated += received.saturating_sub(d.messages_sent);
        }
    }
    swap
}

/// What the scenario's revocation events did to the devices they picked.
fn revocations(scenario: &Scenario, devices: &[DeviceReport]) -> RevocationSummary {
    let mut r = RevocationSummary {
        disable_device_on_revoke: match &scenario.target.value {
            Target::Embedded(e) => e.ca.disable_device_on_revoke,
            Target::Remote(_) => false,
        },
        remote: matches!(scenario.target.value, Target::Remote(_)),
        ..Default::default()
    };
    for (d, rev) in devices
        .iter()
        .filter_map(|d| d.revocation.as_ref().map(|r| (d, r)))
    {
        r.requested += 1;
        if rev.error.is_some() {
            r.failed += 1;
            continue;
        }
        r.revoked += 1;
        match rev.method {
            RevokeMethod::SelfRevoke => r.by_self += 1,
            RevokeMethod::Admin => r.by_admin += 1,
        }
        r.cut_off += u64::from(rev.cutoff.is_some());
        r.reconnects_refused += u64::from(rev.reconnect_refused);
        r.still_online += u64::from(d.online_at_end);
    }
    r
}
