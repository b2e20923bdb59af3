//! The IoT Hub side of the wire as a device and a service client see it: SAS tokens ([`sas`]),
//! the registry REST client ([`registry`]), topic names and property bags ([`topics`]), the
//! MQTT device transport over rumqttc ([`mqtt`]) and the device side of DPS ([`dps`]).

pub mod dps;
pub mod identity;
pub mod mqtt;
pub mod registry;
pub mod sas;
pub mod topics;

/// The api-version devices put in their MQTT username and the registry client in its query.
pub const API_VERSION: &str = "2021-04-12";

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
            HubError::ConnectionString(_) => "connection_string".into(),
            HubError::Setup(_) => "setup".into(),
        }
    }

    pub fn is_transient(&self) -> bool {
        match self {
            HubError::Transport(_)
            | HubError::Timeout
            | HubError::Closed(_)
            | HubError::Tls(_)
            | HubError::ClosedBeforeConnack => true,
            HubError::Status { status, .. } => matches!(status, 408 | 429 | 500 | 502 | 503 | 504),
            // 3 is "server unavailable" (also a disabled device); 5 "not authorized" is final.
            HubError::ConnectRefused(code) => code == "3",
            _ => false,
        }
    }
}

/// `HostName=...;SharedAccessKeyName=...;SharedAccessKey=...`. The key is kept private and out
/// of `Debug`.
#[derive(Clone)]
pub struct ConnectionString {
    pub host_name: String,
    pub key_name: String,
    key: String,
}

impl std::fmt::Debug for ConnectionString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ConnectionString(HostName={};SharedAccessKeyName={};SharedAccessKey=<redacted>)",
            self.host_name, self.key_name
        )
    }
}

impl ConnectionString {
    pub fn new(host_name: &str, key_name: &str, key_b64: &str) -> Self {
        Self {
            host_name: host_name.into(),
            key_name: key_name.into(),
            key: key_b64.into(),
        }
    }

    pub fn parse(s: &str) -> Result<Self, HubError> {
        let (mut host, mut name, mut key) = (None, None, None);
        for part in s.trim().split(';').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').ok_or_else(|| {
                HubError::ConnectionString(format!("'{}' has no '='", k_only(part)))
            })?;
            match k {
                "HostName" => host = Some(v.to_string()),
                "SharedAccessKeyName" => name = Some(v.to_string()),
                // base64 keys end in '=': split_once keeps them whole in v.
                "SharedAccessKey" => key = Some(v.to_string()),
                _ => {}
            }
        }
        let missing = |what| HubError::ConnectionString(format!("{what} is missing"));
        Ok(Self {
            host_name: host.ok_or_else(|| missing("HostName"))?,
            key_name: name.ok_or_else(|| missing("SharedAccessKeyName"))?,
            key: key.ok_or_else(|| missing("SharedAccessKey"))?,
        })
    }

    /// A service SAS token for this hub valid until `expiry` (seconds since the epoch).
    pub fn sas_token(&self, expiry: u64) -> Result<String, HubError> {
        sas::token(&self.host_name, &self.key, Some(&self.key_name), expiry)
    }

    pub fn to_secret_string(&self) -> String {
        format!(
            "HostName={};SharedAccessKeyName={};SharedAccessKey={}",
            self.host_name, self.key_name, self.key
        )
    }
}

fn k_only(part: &str) -> &str {
    part.split('=').next().unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_string_round_trips_and_hides_its_key() {
        let cs = ConnectionString::parse(
            "HostName=h.azure-devices.net;SharedAccessKeyName=iothubowner;SharedAccessKey=AAEC/w==",
        )
        .unwrap();
        assert_eq!(cs.host_name, "h.azure-devices.net");
        assert_eq!(cs.key_name, "iothubowner");
        assert!(!format!("{cs:?}").contains("AAEC"));
        assert!(cs.to_secret_string().ends_with("SharedAccessKey=AAEC/w=="));
        assert!(ConnectionString::parse("HostName=x").is_err());
    }
}
