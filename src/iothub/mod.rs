//! The IoT Hub side of the wire as a device and a service client see it: SAS tokens ([`sas`]),
//! the registry REST client ([`registry`]), the service client of the operator ([`service`]:
//! twins, direct methods, statistics, queries), both over one HTTPS plumbing (`rest`), topic
//! names and property bags ([`topics`]), the MQTT device transport ([`mqtt`]: over rumqttc's
//! client, or over fleetsim's own session, [`lean`]), the
//! device side of DPS ([`dps`]), the TLS and rumqttc setup both MQTT clients share (`tls`),
//! fleetsim's AMQP clients ([`amqp`]: the C2D sender and the Event Hub consumer) and the tiers
//! with their published limits ([`quotas`]), which the hub emulator shares.

pub mod amqp;
mod delivery;
pub mod dps;
mod error;
pub mod identity;
pub mod lean;
pub mod management;
pub mod mqtt;
pub mod quotas;
pub mod registry;
mod rest;
mod rumqttc_session;
pub mod sas;
pub mod service;
mod tls;
pub mod topics;

pub use error::HubError;

/// The application property fleetsim puts on every message it sends (a device's telemetry, the
/// operator's cloud-to-device messages): the send time in Unix epoch milliseconds, as a decimal
/// string. The receiving end measures `d2c.delivery` / `c2d.delivery` from it.
pub const SENT_AT_PROPERTY: &str = topics::C2D_SENT_AT;

/// The application property with a fleetsim device's telemetry sequence number (0, 1, 2, … per
/// device), so the backend can tell a lost or duplicated message exactly.
pub const SEQUENCE_PROPERTY: &str = "fleetsim-seq";

/// The api-version devices put in their MQTT username and the registry client in its query.
pub const API_VERSION: &str = "2021-04-12";

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
