//! Why a call to EZCA failed, with the short label metrics count it under.

/// Why a call to EZCA failed. `kind()` is the short label counted in metrics.
#[derive(Debug, thiserror::Error)]
pub enum EzcaError {
    #[error("cannot reach EZCA: {0}")]
    Transport(String),
    #[error("EZCA timed out")]
    Timeout,
    #[error("EZCA answered HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        /// The `Retry-After` of a 429 or 503, if any.
        retry_after: Option<std::time::Duration>,
    },
    #[error("EZCA refused: {0}")]
    Refused(String),
    #[error("EZCA reply could not be understood: {0}")]
    Malformed(String),
    #[error("no usable CA: {0}")]
    NoCa(String),
    #[error("client setup: {0}")]
    Setup(String),
}

impl EzcaError {
    pub fn kind(&self) -> String {
        match self {
            EzcaError::Transport(_) => "transport".into(),
            EzcaError::Timeout => "timeout".into(),
            EzcaError::Status { status, .. } => format!("http_{status}"),
            EzcaError::Refused(_) => "refused".into(),
            EzcaError::Malformed(_) => "malformed_reply".into(),
            EzcaError::NoCa(_) => "no_ca".into(),
            EzcaError::Setup(_) => "setup".into(),
        }
    }

    /// Worth retrying: network trouble and the statuses the official clients retry
    /// (408, 429, 500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            EzcaError::Transport(_) | EzcaError::Timeout | EzcaError::Malformed(_) => true,
            EzcaError::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}
