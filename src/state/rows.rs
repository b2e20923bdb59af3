//! What the state database holds, as the rest of fleetsim sees it: its errors, the emulators'
//! rows, the run's checkpoint, and the key and time helpers every table uses.

use crate::crypto::{CryptoError, DeviceKey, KeyKind};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("state {path}: {source}")]
    Open {
        path: String,
        source: std::io::Error,
    },
    #[error("state database: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error(
        "state {path} was written by scenario {stored_name:?} (sha256 {stored_hash}), not by \
         {name:?} (sha256 {hash}): resume it with the same scenario file, or use another --state file"
    )]
    OtherScenario {
        path: String,
        stored_name: String,
        stored_hash: String,
        name: String,
        hash: String,
    },
    #[error("state schema version {found} is not supported (this fleetsim writes {expected})")]
    Version { found: i64, expected: i64 },
    #[error("state: stored {what} is invalid: {why}")]
    Corrupt { what: String, why: String },
    #[error("state: {0}")]
    Crypto(#[from] CryptoError),
    #[error("state writer stopped")]
    WriterGone,
}

/// The durable identity of the embedded CA. `issuing_key_pkcs8` is secret: never logged.
#[derive(Clone)]
pub struct CaIdentityRow {
    pub ca_id: String,
    pub template_id: String,
    pub root_der: Vec<u8>,
    pub issuing_der: Vec<u8>,
    pub issuing_key_pkcs8: Vec<u8>,
    /// The object id the fleet called the CA as (domain owner of every device).
    pub caller_oid: String,
}

impl std::fmt::Debug for CaIdentityRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CaIdentityRow({}, <private key>)", self.ca_id)
    }
}

/// A certificate the embedded CA issued, as journaled.
#[derive(Debug, Clone)]
pub struct CaIssuedRow {
    pub thumbprint: String,
    pub subject_cn: String,
    pub requested_by: String,
    pub der: Vec<u8>,
    pub revoked_at: Option<i64>,
}

/// A domain registered with the embedded CA.
#[derive(Debug, Clone)]
pub struct CaDomainRow {
    pub name: String,
    pub id: String,
    pub owners: Vec<String>,
    pub requesters: Vec<String>,
}

/// The embedded emulators' durable state, to seed restarted emulators with.
#[derive(Debug, Clone, Default)]
pub struct EmulatorRows {
    pub ca: Option<CaIdentityRow>,
    pub issued: Vec<CaIssuedRow>,
    pub domains: Vec<CaDomainRow>,
    /// Hub registry entries as their JSON.
    pub hub_devices: Vec<String>,
}

/// A run's checkpoint: how far it got and what it had recorded.
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub elapsed_ms: u64,
    /// The recorder's content as a report JSON.
    pub report_json: String,
}

pub(super) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Reads a stored key back.
pub(super) fn key_from_row(kind: &str, pem: &str) -> Result<DeviceKey, StateError> {
    let kind: KeyKind = serde_json::from_value(serde_json::Value::String(kind.to_string()))
        .map_err(|e| StateError::Corrupt {
            what: "key kind".into(),
            why: e.to_string(),
        })?;
    Ok(DeviceKey::from_pkcs8_pem(kind, pem)?)
}

pub(super) fn key_kind_name(kind: KeyKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}
