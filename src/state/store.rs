//! The synchronous side of the state: opening the file (0600, WAL, FULL sync), the scenario
//! check, and loading what a resumed run starts from.

use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension, params};

use super::rows::{
    CaDomainRow, CaIdentityRow, CaIssuedRow, Checkpoint, EmulatorRows, StateError, now_unix,
};
use super::schema;
use super::writer::StateWriter;

/// Where the state lives and which scenario it belongs to.
#[derive(Debug, Clone)]
pub struct StateFile {
    pub path: PathBuf,
    pub scenario_name: String,
    pub scenario_hash: String,
}

/// An open state database (the synchronous side: opening, checks, loading).
pub struct Store {
    pub(super) conn: Connection,
    pub(super) path: PathBuf,
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

pub(super) fn open_connection(path: &Path) -> Result<Connection, StateError> {
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
