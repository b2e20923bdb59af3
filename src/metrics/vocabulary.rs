//! The names a run is measured in (DESIGN.md's vocabulary): lifecycle phases, outcomes and
//! device states, as metrics, reports and dashboards spell them.

use serde::Serialize;

/// A step of the device lifecycle that is timed. Names are the vocabulary of DESIGN.md.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Phase {
    Keygen,
    Csr,
    CaRegisterDomain,
    CaIssue,
    HubRegister,
    MqttConnect,
    MqttPublish,
    CaRenew,
    MqttReconnect,
    RevokeCutoff,
    FirstTelemetry,
    /// A device that started after its arrival slot: how late (recorded only for late devices).
    ArrivalLate,
    /// Waits for the fleet's certificate-request limit (`fleet.limits.enrolments`).
    LimitEnrolment,
    /// Waits for the fleet's connect limit (`fleet.limits.connects`).
    LimitConnect,
    /// Waits for the fleet's publish limit (`fleet.limits.publishes`).
    LimitPublish,
    /// How long a device had no connection to publish on while it swapped to a renewed
    /// certificate.
    SwapGap,
}

impl Phase {
    pub const ALL: [Phase; 16] = [
        Phase::Keygen,
        Phase::Csr,
        Phase::CaRegisterDomain,
        Phase::CaIssue,
        Phase::HubRegister,
        Phase::MqttConnect,
        Phase::MqttPublish,
        Phase::CaRenew,
        Phase::MqttReconnect,
        Phase::RevokeCutoff,
        Phase::FirstTelemetry,
        Phase::ArrivalLate,
        Phase::LimitEnrolment,
        Phase::LimitConnect,
        Phase::LimitPublish,
        Phase::SwapGap,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Phase::Keygen => "keygen",
            Phase::Csr => "csr",
            Phase::CaRegisterDomain => "ca.register_domain",
            Phase::CaIssue => "ca.issue",
            Phase::HubRegister => "hub.register",
            Phase::MqttConnect => "mqtt.connect",
            Phase::MqttPublish => "mqtt.publish",
            Phase::CaRenew => "ca.renew",
            Phase::MqttReconnect => "mqtt.reconnect",
            Phase::RevokeCutoff => "revoke.cutoff",
            Phase::FirstTelemetry => "first_telemetry",
            Phase::ArrivalLate => "arrival.late",
            Phase::LimitEnrolment => "limit.enrolment",
            Phase::LimitConnect => "limit.connect",
            Phase::LimitPublish => "limit.publish",
            // Not an operation: how long a device had no connection to publish on while it
            // swapped to a renewed certificate.
            Phase::SwapGap => "swap.gap",
        }
    }

    /// The phase named `name` (the vocabulary of DESIGN.md), if there is one.
    pub fn from_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.name() == name)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Outcome {
    Ok,
    Error,
    Timeout,
    Throttled,
    Rejected,
}

impl Outcome {
    pub const ALL: [Outcome; 5] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Throttled,
        Outcome::Rejected,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Throttled => "throttled",
            Outcome::Rejected => "rejected",
        }
    }

    pub fn from_name(name: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.name() == name)
    }

    pub(super) fn index(self) -> usize {
        self as usize
    }
}

/// Where a device is in its lifecycle; the recorder keeps a gauge per state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum DeviceState {
    Pending,
    Enrolling,
    Connecting,
    Online,
    Renewing,
    Backoff,
    Revoked,
    Failed,
    Done,
}

impl DeviceState {
    pub const ALL: [DeviceState; 9] = [
        DeviceState::Pending,
        DeviceState::Enrolling,
        DeviceState::Connecting,
        DeviceState::Online,
        DeviceState::Renewing,
        DeviceState::Backoff,
        DeviceState::Revoked,
        DeviceState::Failed,
        DeviceState::Done,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DeviceState::Pending => "pending",
            DeviceState::Enrolling => "enrolling",
            DeviceState::Connecting => "connecting",
            DeviceState::Online => "online",
            DeviceState::Renewing => "renewing",
            DeviceState::Backoff => "backoff",
            DeviceState::Revoked => "revoked",
            DeviceState::Failed => "failed",
            DeviceState::Done => "done",
        }
    }
}
