//! The state database's tables, created in one transaction and versioned in `schema_version`.

use rusqlite::{Connection, OptionalExtension};

use super::rows::StateError;

/// Bump when a table changes; older files are then refused rather than misread.
pub const VERSION: i64 = 1;

const TABLES: &str = "
CREATE TABLE schema_version (version INTEGER NOT NULL);
CREATE TABLE scenario (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    scenario_name TEXT NOT NULL,
    scenario_hash TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE checkpoint (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    elapsed_ms INTEGER NOT NULL,
    report_json TEXT NOT NULL,
    segments INTEGER NOT NULL DEFAULT 1,
    written_at INTEGER NOT NULL
);
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    idx INTEGER NOT NULL UNIQUE,
    key_kind TEXT,
    key_pem TEXT,
    chain_pem TEXT,
    serial TEXT,
    not_after INTEGER,
    renewals INTEGER NOT NULL DEFAULT 0,
    registered INTEGER NOT NULL DEFAULT 0,
    enrolled INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE intents (
    device_id TEXT PRIMARY KEY REFERENCES devices(id),
    kind TEXT NOT NULL,
    key_kind TEXT NOT NULL,
    key_pem TEXT NOT NULL,
    spki BLOB NOT NULL,
    csr TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE certificates (
    serial TEXT PRIMARY KEY,
    device_id TEXT NOT NULL REFERENCES devices(id),
    kind TEXT NOT NULL,
    not_after INTEGER NOT NULL,
    recovered INTEGER NOT NULL DEFAULT 0,
    stored_at INTEGER NOT NULL
);
CREATE TABLE ca_identity (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    ca_id TEXT NOT NULL,
    template_id TEXT NOT NULL,
    root_der BLOB NOT NULL,
    issuing_der BLOB NOT NULL,
    issuing_key BLOB NOT NULL,
    caller_oid TEXT NOT NULL
);
CREATE TABLE ca_issued (
    thumbprint TEXT PRIMARY KEY,
    serial TEXT NOT NULL,
    subject_cn TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    spki BLOB NOT NULL,
    der BLOB NOT NULL,
    issued_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE TABLE ca_domains (
    name TEXT PRIMARY KEY,
    id TEXT NOT NULL,
    owners TEXT NOT NULL,
    requesters TEXT NOT NULL
);
CREATE TABLE timeline (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    timeline_json TEXT NOT NULL,
    base_json TEXT NOT NULL
);
CREATE TABLE certificate_thumbprints (
    serial TEXT PRIMARY KEY,
    thumbprint TEXT NOT NULL
);
CREATE TABLE hub_devices (
    id TEXT PRIMARY KEY,
    json TEXT NOT NULL,
    creations INTEGER NOT NULL DEFAULT 1
);
";

/// Creates the tables in a new file; checks the version of an existing one.
pub fn migrate(conn: &Connection) -> Result<(), StateError> {
    let has_version: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
            [],
            |_| Ok(()),
        )
        .optional()?
        .is_some();
    if has_version {
        let found: i64 = conn.query_row("SELECT version FROM schema_version", [], |r| r.get(0))?;
        if found != VERSION {
            return Err(StateError::Version {
                found,
                expected: VERSION,
            });
        }
        // Added to version 1 later; a file from before simply has no timeline yet, and knows its
        // certificates' thumbprints only from the devices' current chains.
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS timeline (id INTEGER PRIMARY KEY CHECK (id = 1), \
             timeline_json TEXT NOT NULL, base_json TEXT NOT NULL); \
             CREATE TABLE IF NOT EXISTS certificate_thumbprints (serial TEXT PRIMARY KEY, \
             thumbprint TEXT NOT NULL);",
        )?;
        return Ok(());
    }
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {TABLES} INSERT INTO schema_version (version) VALUES ({VERSION}); COMMIT;"
    ))?;
    Ok(())
}
