//! Faults injected into the embedded emulators at timed points of a run (chaos), each one of:
//!
//! ```yaml
//! faults:
//!   - {at: 10s, drop_connections: 30%}          # the hub closes 30% of the live device connections
//!   - {at: 20s, delay_pubacks: 2s, for: 5s}     # each PUBACK held back 2 s, for 5 s
//!   - {at: 30s, refuse_connects: 5s}            # CONNACK 3 (server unavailable) to every CONNECT for 5 s
//!   - {at: 40s, restart_hub: 2s}                # the hub's device endpoints down for 2 s, state kept
//!   - {at: 50s, ca_unavailable: 5s}             # the CA answers 503 to every request for 5 s
//! ```
//!
//! Faults only apply to the embedded target (fleetsim cannot break Azure); the loader refuses them
//! with a remote one. [`Fault::kind`] says which of the five a fault is once [`validate`] checked
//! it names exactly one.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::Location;

use super::units::{Percent, Span};

/// One fault, at a point of the run.
#[derive(Debug, Clone, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Fault {
    /// When, from the first arrival (real time).
    pub at: Span,
    /// Share of the device connections live at `at` the hub closes (as a failing gateway would:
    /// no DISCONNECT, the TLS connection just ends).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_connections: Option<Percent>,
    /// How long the hub holds back each PUBACK (with `for`: while the fault lasts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_pubacks: Option<Span>,
    /// How long the fault lasts (`delay_pubacks` only).
    #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
    pub lasting: Option<Span>,
    /// For how long every CONNECT is answered CONNACK 3, "server unavailable".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_connects: Option<Span>,
    /// How long the hub's device endpoints stay down (connections dropped, the ports closed);
    /// its registry, twins and queues are kept, as `fleetsim emulate --state` keeps them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart_hub: Option<Span>,
    /// For how long the CA answers every request 503.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_unavailable: Option<Span>,
}

/// What a fault does (see [`Fault::kind`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    DropConnections(Percent),
    DelayPubacks {
        delay: std::time::Duration,
        lasting: std::time::Duration,
    },
    RefuseConnects(std::time::Duration),
    RestartHub(std::time::Duration),
    CaUnavailable(std::time::Duration),
}

impl FaultKind {
    /// The fault's name in reports (the key it is written with).
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::DropConnections(_) => "drop_connections",
            FaultKind::DelayPubacks { .. } => "delay_pubacks",
            FaultKind::RefuseConnects(_) => "refuse_connects",
            FaultKind::RestartHub(_) => "restart_hub",
            FaultKind::CaUnavailable(_) => "ca_unavailable",
        }
    }

    /// How long the fault lasts (none for dropping connections, which happens at once).
    pub fn lasting(&self) -> Option<std::time::Duration> {
        match *self {
            FaultKind::DropConnections(_) => None,
            FaultKind::DelayPubacks { lasting, .. } => Some(lasting),
            FaultKind::RefuseConnects(d)
            | FaultKind::RestartHub(d)
            | FaultKind::CaUnavailable(d) => Some(d),
        }
    }
}

impl Fault {
    /// What the fault does; `None` unless it names exactly one kind (with `for` only on
    /// `delay_pubacks`), which [`validate`] makes sure of.
    pub fn kind(&self) -> Option<FaultKind> {
        let named = [
            self.drop_connections.is_some(),
            self.delay_pubacks.is_some(),
            self.refuse_connects.is_some(),
            self.restart_hub.is_some(),
            self.ca_unavailable.is_some(),
        ];
        if named.iter().filter(|n| **n).count() != 1 {
            return None;
        }
        if let (Some(delay), Some(lasting)) = (self.delay_pubacks, self.lasting) {
            return Some(FaultKind::DelayPubacks {
                delay: delay.0,
                lasting: lasting.0,
            });
        }
        if self.lasting.is_some() {
            return None;
        }
        self.drop_connections
            .map(FaultKind::DropConnections)
            .or(self.refuse_connects.map(|d| FaultKind::RefuseConnects(d.0)))
            .or(self.restart_hub.map(|d| FaultKind::RestartHub(d.0)))
            .or(self.ca_unavailable.map(|d| FaultKind::CaUnavailable(d.0)))
    }
}

/// Checks one fault of a run lasting `duration` against an `embedded` target or not.
pub fn validate(
    fault: &Fault,
    at: Location,
    duration: std::time::Duration,
    embedded: bool,
) -> Result<(), (Location, String)> {
    let err = |m: String| Err((at, m));
    if !embedded {
        return err(
            "faults apply to the embedded target only (fleetsim cannot break Azure)".into(),
        );
    }
    // Zero spans and shares never get here: the unit parsers refuse them.
    if fault.kind().is_none() {
        return err(match (fault.delay_pubacks, fault.lasting) {
            (Some(_), None) => "delay_pubacks needs `for:` (how long the fault lasts)".into(),
            _ => "a fault names exactly one of drop_connections, delay_pubacks (with for), \
                  refuse_connects, restart_hub, ca_unavailable"
                .into(),
        });
    }
    if fault.at.0 >= duration {
        return err(format!(
            "fault at {:?} is not before the end of the run ({duration:?})",
            fault.at.0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fault(text: &str) -> Fault {
        serde_saphyr::from_str(text).unwrap()
    }

    fn check(text: &str) -> Result<(), String> {
        let d = std::time::Duration::from_secs(60);
        validate(&fault(text), Location::UNKNOWN, d, true).map_err(|(_, m)| m)
    }

    #[test]
    fn each_kind_reads_as_itself() {
        let s = std::time::Duration::from_secs;
        let kinds = [
            ("{at: 1s, drop_connections: 30%}", "drop_connections", None),
            (
                "{at: 1s, delay_pubacks: 2s, for: 5s}",
                "delay_pubacks",
                Some(s(5)),
            ),
            (
                "{at: 1s, refuse_connects: 4s}",
                "refuse_connects",
                Some(s(4)),
            ),
            ("{at: 1s, restart_hub: 2s}", "restart_hub", Some(s(2))),
            ("{at: 1s, ca_unavailable: 3s}", "ca_unavailable", Some(s(3))),
        ];
        for (text, name, lasting) in kinds {
            let kind = fault(text).kind().unwrap();
            assert_eq!(kind.name(), name, "{text}");
            assert_eq!(kind.lasting(), lasting, "{text}");
            assert_eq!(check(text), Ok(()), "{text}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let cases = [
            ("{at: 1s}", "exactly one"),
            (
                "{at: 1s, restart_hub: 2s, ca_unavailable: 2s}",
                "exactly one",
            ),
            ("{at: 1s, delay_pubacks: 2s}", "needs `for:`"),
            ("{at: 1s, refuse_connects: 2s, for: 3s}", "exactly one"),
            ("{at: 61s, restart_hub: 2s}", "not before the end"),
        ];
        for (text, expected) in cases {
            let message = check(text).unwrap_err();
            assert!(message.contains(expected), "{text}: {message}");
        }
        let remote = validate(
            &fault("{at: 1s, restart_hub: 2s}"),
            Location::UNKNOWN,
            std::time::Duration::from_secs(60),
            false,
        );
        assert!(remote.unwrap_err().1.contains("embedded target only"));
    }

    #[test]
    fn unknown_keys_and_an_empty_share_are_refused() {
        let parsed: Result<Fault, _> = serde_saphyr::from_str("{at: 1s, explode: true}");
        assert!(parsed.is_err());
        let none: Result<Fault, _> = serde_saphyr::from_str("{at: 1s, drop_connections: 0%}");
        assert!(none.is_err(), "the percentage parser refuses 0%");
        let zero: Result<Fault, _> = serde_saphyr::from_str("{at: 1s, ca_unavailable: 0s}");
        assert!(zero.is_err(), "the duration parser refuses 0s");
    }
}
