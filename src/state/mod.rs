//! Resumable soak state: `fleetsim run --state FILE` keeps everything a killed soak needs to carry
//! on in one embedded SQLite database (WAL), written transactionally as the fleet changes.
//!
//! # What is stored
//! - the scenario's identity (name and SHA-256 of its file): a state is only ever resumed by the
//!   scenario that wrote it;
//! - per device: id, index, current key (PKCS#8 PEM), certificate chain, serial, notAfter (from
//!   which the renewal schedule follows), renewal count, whether it is registered in the hub and
//!   enrolled; every certificate it was ever issued (`certificates`);
//! - per device at most one *issuing intent*: the key and CSR of a request about to go to the CA;
//! - the run's checkpoint: elapsed run time and the recorder's counters and HDR histograms (a
//!   report JSON, histograms base64-encoded as in `report`), written every second, and at each
//!   timeline point together with the report's timeline so far (`timeline`: the checkpoint of
//!   that moment is the timeline's base, so a resumed run's first interval is exact);
//! - for the embedded target, the emulators' durable state: the CA's identity (root and issuing
//!   certificates, the issuing key, CA and template ids), every certificate it issued, its
//!   registered domains and revocations, and the hub's registry. A restarted emulator is seeded
//!   from these, so stored device certificates still chain to the CA the hub trusts, renewals
//!   authenticate with them, and no device is registered or enrolled a second time.
//!
//! # Durability
//! The file is created 0600 before SQLite opens it (it holds private keys); SQLite creates its
//! `-wal` and `-shm` with the database file's mode, and existing ones are narrowed to 0600.
//! `journal_mode=WAL` lets the checkpoint reader and the writer overlap; `synchronous=FULL` fsyncs
//! the WAL on every commit, so a committed certificate survives not only `kill -9` (which NORMAL
//! would already survive) but a power cut or kernel crash too. The fsync cost is paid once per
//! batch, not per device: all writes go through one writer thread (`writer`), which takes
//! whatever is queued (up to a batch limit), commits it in one transaction and only then
//! acknowledges each waiting device.
//!
//! # The issue window
//! A device writes an intent (new key + CSR) and waits for its commit *before* it calls the CA,
//! and writes the certificate (clearing the intent) and waits for that commit *before* it uses
//! it. The embedded CA journals each certificate it issues through the same writer before it
//! answers, so FIFO order guarantees the CA's record is committed no later than the device's. A
//! kill between the CA signing and our write therefore leaves an intent behind; on resume
//! ([`Store::resolve_intents`]) it is matched by public key against the CA's journal and the
//! certificate is adopted (the device has its key), so no certificate the CA issued is unknown to
//! the state. Against a real CA there is no journal to look in: such intents are reported as
//! certificates that may have been issued, with their device ids, and the device enrols again.
//! What remains: the checkpoint of counters and histograms is at most a second old, so samples
//! recorded in the last second before a kill are lost from the report (device and certificate
//! rows are not affected).

mod resume;
mod schema;
mod writer;

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

pub use resume::{ResolvedIntents, StoredDevice};
pub use writer::{DeviceJournal, Op, StateWriter};

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

/// The SHA-256 of a scenario file's bytes, hex: what a state is bound to.
pub fn scenario_hash(bytes: &[u8]) -> String {
    crate::crypto::hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

/// Where the state lives and which scenario it belongs to.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    pub scenario_name: String,
    pub scenario_hash: String,
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

/// An open state database (the synchronous side: opening, checks, loading).
pub struct Store {
    conn: Connection,
    path: PathBuf,
    /// Whether the file held a run before this one opened it.
    pub resumed: bool,
}

/// Creates `path` readable by its owner only, before SQLite opens it; narrows an existing file
/// and its WAL and shared-memory files.
fn create_private(path: &Path) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let file = options.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
        for suffix in ["-wal", "-shm"] {
            let mut side = path.as_os_str().to_owned();
            side.push(suffix);
            if let Ok(f) = std::fs::File::open(&side) {
                f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            }
        }
    }
    Ok(())
}

impl Store {
    /// Opens (or creates) the state at `file.path` for `file`'s scenario; refuses a state written
    /// by another scenario.
    pub fn open(file: &StateFile) -> Result<Self, StateError> {
        let conn = open_connection(&file.path)?;
        schema::migrate(&conn)?;
        let stored: Option<(String, String)> = conn
            .query_row(
                "SELECT scenario_name, scenario_hash FROM scenario WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?;
        let resumed = match stored {
            Some((stored_name, stored_hash)) => {
                if stored_hash != file.scenario_hash || stored_name != file.scenario_name {
                    return Err(StateError::OtherScenario {
                        path: file.path.display().to_string(),
                        stored_name,
                        stored_hash,
                        name: file.scenario_name.clone(),
                        hash: file.scenario_hash.clone(),
                    });
                }
                true
            }
            None => {
                conn.execute(
                    "INSERT INTO scenario (id, scenario_name, scenario_hash, created_at) \
                     VALUES (1, ?1, ?2, ?3)",
                    params![file.scenario_name, file.scenario_hash, now_unix()],
                )?;
                false
            }
        };
        Ok(Self {
            conn,
            path: file.path.clone(),
            resumed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last checkpoint, if the state holds a run.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT elapsed_ms, report_json FROM checkpoint WHERE id = 1",
                [],
                |r| {
                    Ok(Checkpoint {
                        elapsed_ms: r.get::<_, i64>(0)?.max(0) as u64,
                        report_json: r.get(1)?,
                    })
                },
            )
            .optional()?)
    }

    /// The stored timeline and the report JSON of the recorder at its last point, if any.
    pub fn timeline(&self) -> Result<Option<(String, String)>, StateError> {
        Ok(self
            .conn
            .query_row(
                "SELECT timeline_json, base_json FROM timeline WHERE id = 1",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?)
    }

    /// The embedded emulators' stored state.
    pub fn emulator_rows(&self) -> Result<EmulatorRows, StateError> {
        let ca = self
            .conn
            .query_row(
                "SELECT ca_id, template_id, root_der, issuing_der, issuing_key, caller_oid \
                 FROM ca_identity WHERE id = 1",
                [],
                |r| {
                    Ok(CaIdentityRow {
                        ca_id: r.get(0)?,
                        template_id: r.get(1)?,
                        root_der: r.get(2)?,
                        issuing_der: r.get(3)?,
                        issuing_key_pkcs8: r.get(4)?,
                        caller_oid: r.get(5)?,
                    })
                },
            )
            .optional()?;
        let mut stmt = self.conn.prepare(
            "SELECT thumbprint, subject_cn, requested_by, der, revoked_at FROM ca_issued",
        )?;
        let issued = stmt
            .query_map([], |r| {
                Ok(CaIssuedRow {
                    thumbprint: r.get(0)?,
                    subject_cn: r.get(1)?,
                    requested_by: r.get(2)?,
                    der: r.get(3)?,
                    revoked_at: r.get(4)?,
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self
            .conn
            .prepare("SELECT name, id, owners, requesters FROM ca_domains")?;
        let domains = stmt
            .query_map([], |r| {
                let split = |s: String| -> Vec<String> {
                    s.split('\n')
                        .filter(|p| !p.is_empty())
                        .map(str::to_string)
                        .collect()
                };
                Ok(CaDomainRow {
                    name: r.get(0)?,
                    id: r.get(1)?,
                    owners: split(r.get(2)?),
                    requesters: split(r.get(3)?),
                })
            })?
            .collect::<Result<Vec<_>, _>>()?;
        let mut stmt = self.conn.prepare("SELECT json FROM hub_devices")?;
        let hub_devices = stmt
            .query_map([], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(EmulatorRows {
            ca,
            issued,
            domains,
            hub_devices,
        })
    }

    /// Hands the connection to a writer thread; loading is over.
    pub fn into_writer(self) -> Result<StateWriter, StateError> {
        StateWriter::start(self.conn)
    }
}

fn open_connection(path: &Path) -> Result<Connection, StateError> {
    create_private(path).map_err(|source| StateError::Open {
        path: path.display().to_string(),
        source,
    })?;
    let conn = Connection::open(path)?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    Ok(conn)
}

pub(crate) fn now_unix() -> i64 {
    time::OffsetDateTime::now_utc().unix_timestamp()
}

/// Reads a stored key back.
pub(crate) fn key_from_row(kind: &str, pem: &str) -> Result<DeviceKey, StateError> {
    let kind: KeyKind = serde_json::from_value(serde_json::Value::String(kind.to_string()))
        .map_err(|e| StateError::Corrupt {
            what: "key kind".into(),
            why: e.to_string(),
        })?;
    Ok(DeviceKey::from_pkcs8_pem(kind, pem)?)
}

pub(crate) fn key_kind_name(kind: KeyKind) -> String {
    match serde_json::to_value(kind) {
        Ok(serde_json::Value::String(s)) => s,
        _ => format!("{kind:?}"),
    }
}

#[cfg(test)]
mod tests;
