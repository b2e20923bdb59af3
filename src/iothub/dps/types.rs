//! What a registration gives and how it waits: the assignment, the errors, and the polling
//! policy. Apart from the client so that the answer parser can name them too.

use std::time::Duration;

/// How long to wait between requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Polling {
    /// The wait when DPS sends no `retry-after` (2 s, as the SDKs).
    pub default_interval: Duration,
    /// Multiplies every wait, `retry-after` included (below 1 for compressed runs).
    pub scale: f64,
    /// Replaces every wait when set.
    pub fixed: Option<Duration>,
    /// Send a throttled (429) request again after its `retry-after`, as the SDKs do, rather than
    /// give up at once with [`ProvisioningError::Throttled`].
    pub retry_throttled: bool,
}

impl Default for Polling {
    fn default() -> Self {
        Self {
            default_interval: Duration::from_secs(2),
            scale: 1.0,
            fixed: None,
            retry_throttled: true,
        }
    }
}

impl Polling {
    /// The wait before the next request, given DPS's `retry-after`.
    pub fn wait(&self, retry_after: Option<Duration>) -> Duration {
        match self.fixed {
            Some(fixed) => fixed,
            None => retry_after
                .unwrap_or(self.default_interval)
                .mul_f64(self.scale.max(0.0)),
        }
    }
}

/// Where DPS assigned a device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub assigned_hub: String,
    pub device_id: String,
    /// `assigned`.
    pub status: String,
    /// `initialAssignment`, `deviceDataMigrated`, `deviceDataReset` or
    /// `reprovisionedToInitialAssignment`.
    pub substatus: Option<String>,
    /// The group that admitted the device (none for an individual enrolment).
    pub enrollment_group_id: Option<String>,
    pub operation_id: String,
}

/// Why a registration did not end in an assignment. `kind()` is the label counted in metrics.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProvisioningError {
    #[error("cannot reach DPS: {0}")]
    Transport(String),
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("DPS refused the connection with CONNACK {0}")]
    ConnectRefused(u8),
    #[error("DPS closed the connection: {0}")]
    Closed(String),
    #[error("DPS throttled the registration; retry after {retry_after:?}")]
    Throttled { retry_after: Duration },
    #[error("DPS answered {status} (error {code:?}): {message}")]
    Failed {
        /// The response status (200 for a registration whose status is `failed`).
        status: u16,
        /// DPS's `errorCode`.
        code: Option<u64>,
        message: String,
    },
    #[error("the device's enrolment is disabled")]
    Disabled,
    #[error("DPS did not assign the device within {0:?}")]
    Timeout(Duration),
    #[error("unexpected answer from DPS: {0}")]
    Protocol(String),
    #[error("client setup: {0}")]
    Setup(String),
}

impl ProvisioningError {
    pub fn kind(&self) -> String {
        match self {
            Self::Transport(_) => "transport".into(),
            Self::Tls(_) => "tls".into(),
            Self::ConnectRefused(code) => format!("connack_{code}"),
            Self::Closed(_) => "closed".into(),
            Self::Throttled { .. } => "throttled".into(),
            Self::Failed { .. } => "failed".into(),
            Self::Disabled => "disabled".into(),
            Self::Timeout(_) => "timeout".into(),
            Self::Protocol(_) => "protocol".into(),
            Self::Setup(_) => "setup".into(),
        }
    }
}
