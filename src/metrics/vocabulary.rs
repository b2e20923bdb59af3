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
    /// The operator's waits for the fleet's method limit (`fleet.limits.methods`).
    LimitMethod,
    /// The operator's waits for the fleet's twin-update limit (`fleet.limits.twin_updates`).
    LimitTwinUpdate,
    /// The operator's waits for the fleet's twin-read limit (`fleet.limits.twin_reads`).
    LimitTwinRead,
    /// The operator's waits for the fleet's cloud-to-device limit (`fleet.limits.c2d`).
    LimitC2d,
    /// How long a device had no connection to publish on while it swapped to a renewed
    /// certificate.
    SwapGap,
    /// A device's registration with DPS: register request → assigned (polls included).
    DpsRegister,
    /// A direct method as the operator sees it: service call → the device's answer.
    MethodInvoke,
    /// A direct method as the device sees it: request received → answer sent (think time).
    MethodDevice,
    /// A desired-properties change: service PATCH → the device's reported acknowledgement
    /// seen by the service.
    TwinDesired,
    /// A device's reported-properties PATCH → the hub's 204.
    TwinReported,
    /// A registry query (`POST /devices/query`), all pages.
    RegistryQuery,
    /// A cloud-to-device message: accepted by the hub → received by the device.
    C2dDelivery,
    /// A device-to-cloud message: sent by the device → read by the backend.
    D2cDelivery,
    /// A cloud-to-device message as the operator sends it: due → the hub's disposition.
    C2dSend,
    /// A SAS device's token renewal: renewal point → a session with the new token (the swap
    /// included, as for a renewed certificate).
    SasRenew,
    /// A migrating SAS device's first certificate: key, CSR and issue, end to end.
    MigrateIssue,
    /// A migrating device's identity switched from `sas` to `certificateAuthority` (read, then
    /// update with its etag).
    MigrateUpdate,
    /// A migrating device's connect with its certificate (the SAS session closed first).
    MigrateReconnect,
}

impl Phase {
    pub const ALL: [Phase; 33] = [
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
        Phase::LimitMethod,
        Phase::LimitTwinUpdate,
        Phase::LimitTwinRead,
        Phase::LimitC2d,
        Phase::SwapGap,
        Phase::DpsRegister,
        Phase::MethodInvoke,
        Phase::MethodDevice,
        Phase::TwinDesired,
        Phase::TwinReported,
        Phase::RegistryQuery,
        Phase::C2dDelivery,
        Phase::D2cDelivery,
        Phase::C2dSend,
        Phase::SasRenew,
        Phase::MigrateIssue,
        Phase::MigrateUpdate,
        Phase::MigrateReconnect,
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
            Phase::LimitMethod => "limit.method",
            Phase::LimitTwinUpdate => "limit.twin_update",
            Phase::LimitTwinRead => "limit.twin_read",
            Phase::LimitC2d => "limit.c2d",
            // Not an operation: how long a device had no connection to publish on while it
            // swapped to a renewed certificate.
            Phase::SwapGap => "swap.gap",
            Phase::DpsRegister => "dps.register",
            Phase::MethodInvoke => "method.invoke",
            Phase::MethodDevice => "method.device",
            Phase::TwinDesired => "twin.desired",
            Phase::TwinReported => "twin.reported",
            Phase::RegistryQuery => "registry.query",
            Phase::C2dDelivery => "c2d.delivery",
            Phase::D2cDelivery => "d2c.delivery",
            Phase::C2dSend => "c2d.send",
            Phase::SasRenew => "sas.renew",
            Phase::MigrateIssue => "migrate.issue",
            Phase::MigrateUpdate => "migrate.update",
            Phase::MigrateReconnect => "migrate.reconnect",
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
    /// The device was not connected (a direct method to an offline device, IoT Hub's 404103).
    Offline,
    /// A cloud-to-device message the hub refused because the device's queue was full (403004).
    QueueFull,
    /// A cloud-to-device message that expired before it could be sent.
    Expired,
    /// A cloud-to-device message the hub accepted for a device that was not connected: it
    /// waits in the device's queue.
    OfflineQueued,
}

impl Outcome {
    pub const ALL: [Outcome; 9] = [
        Outcome::Ok,
        Outcome::Error,
        Outcome::Timeout,
        Outcome::Throttled,
        Outcome::Rejected,
        Outcome::Offline,
        Outcome::QueueFull,
        Outcome::Expired,
        Outcome::OfflineQueued,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error => "error",
            Outcome::Timeout => "timeout",
            Outcome::Throttled => "throttled",
            Outcome::Rejected => "rejected",
            Outcome::Offline => "offline",
            Outcome::QueueFull => "queue_full",
            Outcome::Expired => "expired",
            Outcome::OfflineQueued => "offline_queued",
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
