//! The run id a state file belongs to (what its identities are tagged with), kept in a table
//! of its own so `fleetsim run` can read it before the run opens the state, and `fleetsim
//! cleanup --state` can read it and the device ids without the scenario.

use std::path::Path;

use rusqlite::OptionalExtension;

use super::rows::StateError;
use super::store::open_connection;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS fleetsim_run (id INTEGER PRIMARY KEY CHECK (id = 1), run_id TEXT NOT NULL)";

fn has_table(conn: &rusqlite::Connection, name: &str) -> Result<bool, StateError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [name],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// The run id stored in the state at `path`; `None` when the file does not exist or has none.
pub fn stored_run_id(path: &Path) -> Result<Option<String>, StateError> {
    if !path.exists() {
        return Ok(None);
    }
    let conn = open_connection(path)?;
    if !has_table(&conn, "fleetsim_run")? {
        return Ok(None);
    }
    Ok(conn
        .query_row("SELECT run_id FROM fleetsim_run WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?)
}

/// Stores `run_id` in the state at `path` (created 0600 if absent).
pub fn remember_run_id(path: &Path, run_id: &str) -> Result<(), StateError> {
    let conn = open_connection(path)?;
    conn.execute_batch(TABLE)?;
    conn.execute(
        "INSERT INTO fleetsim_run (id, run_id) VALUES (1, ?1) \
         ON CONFLICT (id) DO UPDATE SET run_id = excluded.run_id",
        [run_id],
    )?;
    Ok(())
}

/// The ids of every device the state knows, in index order (none in a state without devices).
pub fn device_ids(path: &Path) -> Result<Vec<String>, StateError> {
    if !path.exists() {
        return Err(StateError::Open {
            path: path.display().to_string(),
            source: std::io::Error::from(std::io::ErrorKind::NotFound),
        });
    }
    let conn = open_connection(path)?;
    if !has_table(&conn, "devices")? {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare("SELECT id FROM devices ORDER BY idx")?;
    let ids = stmt
        .query_map([], |r| r.get::<_, String>(0))?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_run_id_survives_and_a_missing_file_has_none() {
        let dir = std::env::temp_dir().join(format!("fleetsim-run-record-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        assert_eq!(stored_run_id(&path).unwrap(), None);
        remember_run_id(&path, "fs12345678").unwrap();
        assert_eq!(stored_run_id(&path).unwrap().as_deref(), Some("fs12345678"));
        assert!(device_ids(&path).unwrap().is_empty());
        assert!(device_ids(&dir.join("absent.db")).is_err());
        std::fs::remove_dir_all(&dir).ok();
    }
}
