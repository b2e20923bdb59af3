//! The report's provisioning section, for runs whose devices were provisioned through DPS: how
//! many devices it placed (and placed again after a hub refused them), the status polls and
//! throttled requests it took, the devices per assigned hub with, for the embedded hubs, what
//! each hub itself received (so QoS 1 losses are checked across all of them), and what the
//! embedded DPS counted. The `dps.register` latency is in the phase table.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisioningReport {
    /// The provisioning service: `dps`.
    pub service: String,
    /// Devices the service placed.
    pub provisioned: u64,
    /// Devices it placed more than once (their assigned hub refused them).
    pub reprovisioned: u64,
    /// Status polls the devices sent while DPS assigned them.
    pub polls: u64,
    /// Requests DPS throttled (429) that the devices sent again after its `retry-after`.
    pub throttled: u64,
    /// Per hub, in host-name order.
    pub hubs: Vec<HubShare>,
    /// What the embedded DPS counted (none against a real one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_counts: Option<DpsCounts>,
}

/// One hub's share of the fleet.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubShare {
    pub host: String,
    /// Devices whose last placement was this hub.
    pub devices: u64,
    /// What the embedded hub itself received (none for a real hub).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub received: Option<HubReceived>,
}

/// An embedded hub's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HubReceived {
    pub messages: u64,
    pub bytes: u64,
    pub connects: u64,
    pub refused: u64,
    pub throttled: u64,
    pub devices_registered: u64,
}

/// The embedded DPS's own counts.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DpsCounts {
    /// Register requests received (throttled ones included).
    pub registrations: u64,
    pub assigned: u64,
    pub polls: u64,
    /// Requests answered 429.
    pub throttled: u64,
    /// Connections refused (wrong id scope, no certificate).
    pub refused: u64,
    /// Registrations no enrolment trusts.
    pub unauthorized: u64,
    /// Registrations refused by a disabled enrolment.
    pub disabled: u64,
    pub failed: u64,
    /// Malformed requests and connections closed for bad bytes.
    pub malformed: u64,
}

impl ProvisioningReport {
    /// The section as text, for the terminal report.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "provisioning ({}): {} devices provisioned ({} again after a hub refused them), {} status polls, {} throttled requests sent again",
            self.service, self.provisioned, self.reprovisioned, self.polls, self.throttled
        );
        for h in &self.hubs {
            let _ = write!(s, "  hub {:<40} {:>7} devices", h.host, h.devices);
            if let Some(r) = &h.received {
                let _ = write!(
                    s,
                    "; received {} messages ({} bytes), {} connects, {} refused, {} throttled",
                    r.messages, r.bytes, r.connects, r.refused, r.throttled
                );
            }
            let _ = writeln!(s);
        }
        if let Some(c) = &self.service_counts {
            let _ = writeln!(s, "  DPS counted: {}", c.summary());
        }
        s
    }

    /// The section as (label, value) rows, for the HTML report.
    pub fn rows(&self) -> Vec<(String, String)> {
        let mut rows = vec![
            ("service".to_string(), self.service.clone()),
            (
                "devices provisioned".into(),
                format!("{} ({} again)", self.provisioned, self.reprovisioned),
            ),
            ("status polls".into(), self.polls.to_string()),
            ("throttled, sent again".into(), self.throttled.to_string()),
        ];
        for h in &self.hubs {
            let mut value = format!("{} devices", h.devices);
            if let Some(r) = &h.received {
                let _ = write!(
                    value,
                    "; received {} messages, {} connects, {} refused",
                    r.messages, r.connects, r.refused
                );
            }
            rows.push((format!("hub {}", h.host), value));
        }
        if let Some(c) = &self.service_counts {
            rows.push(("DPS counted".into(), c.summary()));
        }
        rows
    }
}

impl DpsCounts {
    fn summary(&self) -> String {
        format!(
            "{} registrations, {} assigned, {} polls, {} throttled, {} refused, {} unauthorized, {} disabled, {} failed, {} malformed",
            self.registrations,
            self.assigned,
            self.polls,
            self.throttled,
            self.refused,
            self.unauthorized,
            self.disabled,
            self.failed,
            self.malformed
        )
    }

    fn add(&mut self, o: &DpsCounts) {
        self.registrations += o.registrations;
        self.assigned += o.assigned;
        self.polls += o.polls;
        self.throttled += o.throttled;
        self.refused += o.refused;
        self.unauthorized += o.unauthorized;
        self.disabled += o.disabled;
        self.failed += o.failed;
        self.malformed += o.malformed;
    }
}

impl HubReceived {
    fn add(&mut self, o: &HubReceived) {
        self.messages += o.messages;
        self.bytes += o.bytes;
        self.connects += o.connects;
        self.refused += o.refused;
        self.throttled += o.throttled;
        self.devices_registered += o.devices_registered;
    }
}

/// The shards' sections added: counts summed, hubs by host name.
pub fn merge<'a>(
    sections: impl Iterator<Item = &'a ProvisioningReport>,
) -> Option<ProvisioningReport> {
    let mut merged: Option<ProvisioningReport> = None;
    for p in sections {
        let Some(m) = &mut merged else {
            merged = Some(p.clone());
            continue;
        };
        if m.service != p.service {
            m.service = format!("{}+{}", m.service, p.service);
        }
        m.provisioned += p.provisioned;
        m.reprovisioned += p.reprovisioned;
        m.polls += p.polls;
        m.throttled += p.throttled;
        for h in &p.hubs {
            match m.hubs.iter_mut().find(|m| m.host == h.host) {
                Some(into) => {
                    into.devices += h.devices;
                    if let Some(r) = &h.received {
                        into.received.get_or_insert_with(Default::default).add(r);
                    }
                }
                None => m.hubs.push(h.clone()),
            }
        }
        m.hubs.sort_by(|a, b| a.host.cmp(&b.host));
        if let Some(c) = &p.service_counts {
            m.service_counts.get_or_insert_with(Default::default).add(c);
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(hub: &str, devices: u64, messages: u64) -> ProvisioningReport {
        ProvisioningReport {
            service: "dps".into(),
            provisioned: devices,
            polls: devices * 2,
            hubs: vec![HubShare {
                host: hub.into(),
                devices,
                received: Some(HubReceived {
                    messages,
                    ..Default::default()
                }),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn shards_merge_by_hub() {
        let a = section("b.example", 3, 30);
        let b = section("a.example", 2, 20);
        let c = section("b.example", 1, 10);
        let m = merge([&a, &b, &c].into_iter()).unwrap();
        assert_eq!(m.provisioned, 6);
        assert_eq!(m.polls, 12);
        let hosts: Vec<_> = m.hubs.iter().map(|h| h.host.as_str()).collect();
        assert_eq!(hosts, ["a.example", "b.example"]);
        assert_eq!(m.hubs[1].devices, 4);
        assert_eq!(m.hubs[1].received.as_ref().unwrap().messages, 40);
        assert!(m.to_text().contains("b.example"));
    }
}
