//! Why a hub operation failed, and whether it is worth retrying.

/// Why a hub operation failed. `kind()` is the short label counted in metrics.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error("cannot reach the hub: {0}")]
    Transport(String),
    #[error("the hub timed out")]
    Timeout,
    #[error("the hub answered HTTP {status} ({code}): {body}")]
    Status {
        status: u16,
        code: String,
        body: String,
        /// The hub's `Retry-After`, if it sent one.
        retry_after: Option<std::time::Duration>,
    },
    #[error("CONNACK refused the connection: {0}")]
    ConnectRefused(String),
    #[error("the hub closed the connection before CONNACK (throttled or quota spent)")]
    ClosedBeforeConnack,
    #[error("TLS failed: {0}")]
    Tls(String),
    #[error("the hub closed the connection: {0}")]
    Closed(String),
    /// The hub broke the MQTT protocol (a malformed, oversize or unexpected packet): the
    /// session ends, and the device reconnects.
    #[error("protocol violation by the hub: {0}")]
    Protocol(String),
    #[error("bad connection string: {0}")]
    ConnectionString(String),
    #[error("client setup: {0}")]
    Setup(String),
}

impl HubError {
    pub fn kind(&self) -> String {
        match self {
            HubError::Transport(_) => "transport".into(),
            HubError::Timeout => "timeout".into(),
            HubError::Status { status, .. } => format!("http_{status}"),
            HubError::ConnectRefused(code) => format!("connack_{code}"),
            HubError::Tls(_) => "tls".into(),
            HubError::ClosedBeforeConnack => "closed_before_connack".into(),
            HubError::Closed(_) => "closed".into(),
            HubError::Protocol(_) => "protocol".into(),
            HubError::ConnectionString(_) => "connection_string".into(),
            HubError::Setup(_) => "setup".into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Transport(_)
            | HubError::Timeout
            | HubError::Closed(_)
            | HubError::Protocol(_)
            | HubError::Tls(_)
            | HubError::ClosedBeforeConnack => true,
            HubError::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            // 3 is "server unavailable" (also a disabled device); 5 "not authorized" is final.
            HubError::ConnectRefused(code) => code == "3",
            _ => false,
        }
    }
}
