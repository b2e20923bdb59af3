//! What can go wrong talking AMQP to the hub ([`AmqpError`]), how an AMQP error reads, and the
//! wall clock the clients stamp tokens and messages with: what every client file shares, so none
//! imports `mod.rs`.

use std::time::Duration;

use crate::amqp::codec::{DecodeError, Value};
use crate::amqp::frames::FrameError;

/// What can go wrong talking AMQP to the hub.
#[derive(Debug, thiserror::Error)]
pub enum AmqpError {
    #[error("cannot connect to {address}: {source}")]
    Connect {
        address: String,
        source: std::io::Error,
    },
    #[error("TLS with {host} failed: {source}")]
    Tls {
        host: String,
        source: std::io::Error,
    },
    #[error("{0}")]
    Frame(#[from] FrameError),
    #[error("undecodable frame from the hub: {0}")]
    Decode(#[from] DecodeError),
    #[error("SASL failed: {0}")]
    Sasl(String),
    #[error("AMQP protocol error: {0}")]
    Protocol(String),
    #[error("the hub closed the connection: {0}")]
    Closed(String),
    #[error("link to '{address}' refused: {condition}: {description}")]
    LinkRefused {
        address: String,
        condition: String,
        description: String,
    },
    /// `$cbs` refused the token (401) or another request failed with a status.
    #[error("{node} answered {status}: {description}")]
    Status {
        node: &'static str,
        status: i32,
        description: String,
    },
    #[error("{what} timed out after {after:?}")]
    Timeout { what: &'static str, after: Duration },
    #[error("setup: {0}")]
    Setup(String),
    #[error("Event Hub connection string: {0}")]
    ConnectionString(String),
}

impl AmqpError {
    /// The error's kind for the metrics' error counts (`amqp_…`).
    pub fn kind(&self) -> String {
        match self {
            AmqpError::Connect { .. } => "amqp_connect".into(),
            AmqpError::Tls { .. } => "amqp_tls".into(),
            AmqpError::Frame(_) | AmqpError::Decode(_) | AmqpError::Protocol(_) => {
                "amqp_protocol".into()
            }
            AmqpError::Sasl(_) => "amqp_sasl".into(),
            AmqpError::Closed(_) => "amqp_closed".into(),
            AmqpError::LinkRefused { .. } => "amqp_link_refused".into(),
            AmqpError::Status { status, .. } => format!("amqp_status_{status}"),
            AmqpError::Timeout { .. } => "amqp_timeout".into(),
            AmqpError::Setup(_) | AmqpError::ConnectionString(_) => "amqp_setup".into(),
        }
    }

    /// Whether the hub refused the credentials (a bad SAS on `$cbs`, a refused SASL).
    pub fn is_unauthorized(&self) -> bool {
        match self {
            AmqpError::Status { status, .. } => *status == 401,
            AmqpError::Sasl(_) => true,
            AmqpError::LinkRefused { condition, .. } => condition == "amqp:unauthorized-access",
            _ => false,
        }
    }
}

/// The condition and description of an `amqp:error:list`.
pub fn error_parts(error: &Value) -> (String, String) {
    let fields = match error {
        Value::Described(_, inner) => match inner.as_ref() {
            Value::List(items) => items.as_slice(),
            _ => &[],
        },
        _ => &[],
    };
    let text = |i: usize| {
        fields
            .get(i)
            .and_then(Value::as_text)
            .unwrap_or_default()
            .to_string()
    };
    (text(0), text(1))
}

/// Seconds since the Unix epoch (SAS expiries).
pub fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Milliseconds since the Unix epoch (message timestamps).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}
