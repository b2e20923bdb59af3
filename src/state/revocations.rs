//! What `fleetsim cleanup --revoke` needs of a run's state file: every certificate the run was
//! issued (serial, device, SHA-1 thumbprint, which is how EZCA names a certificate) and which of
//! them cleanup has already revoked, so an interrupted revocation carries on where it stopped
//! and never counts a certificate twice.

use std::collections::HashSet;
use std::path::Path;

use rusqlite::{Connection, params};

use super::rows::StateError;
use super::store::open_connection;

const TABLE: &str = "CREATE TABLE IF NOT EXISTS cleanup_revocations \
    (thumbprint TEXT PRIMARY KEY, revoked_at INTEGER NOT NULL)";

/// A certificate the run was issued, as its state knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunCertificate {
    /// Upper-case hex, as the state stores serials.
    pub serial: String,
    pub device_id: String,
    /// Upper-case hex SHA-1 of the DER; `None` for a certificate a state from before
    /// thumbprints were recorded knows only by serial (one a device no longer holds).
    pub thumbprint: Option<String>,
    /// Revoked by an earlier `cleanup --revoke` of this state.
    pub revoked: bool,
}

/// A state file opened for revocation.
pub struct RevocationLedger {
    conn: Connection,
}

impl RevocationLedger {
    /// Opens the state at `path`, which must exist and hold a run's devices.
    pub fn open(path: &Path) -> Result<Self, StateError> {
        if !path.is_file() {
            return Err(StateError::Open {
                path: path.display().to_string(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            });
        }
        let conn = open_connection(path)?;
        super::schema::migrate(&conn)?;
        conn.execute_batch(TABLE)?;
        Ok(Self { conn })
    }

    /// Every certificate the run was issued, in device order, oldest first.
    pub fn certificates(&self) -> Result<Vec<RunCertificate>, StateError> {
        let revoked: HashSet<String> = self
            .conn
            .prepare("SELECT thumbprint FROM cleanup_revocations")?
            .query_map([], |r| r.get::<_, String>(0))?
            .collect::<Result<_, _>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT c.serial, c.device_id, t.thumbprint, d.serial, d.chain_pem \
             FROM certificates c \
             LEFT JOIN certificate_thumbprints t ON t.serial = c.serial \
             LEFT JOIN devices d ON d.id = c.device_id \
             ORDER BY d.idx, c.stored_at, c.serial",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (serial, device_id, thumbprint, current_serial, chain_pem) = row?;
            // Before thumbprints were recorded: the device's current certificate still has one.
            let thumbprint = thumbprint.or_else(|| {
                (current_serial.as_deref() == Some(serial.as_str()))
                    .then(|| leaf_thumbprint(chain_pem.as_deref()?))
                    .flatten()
            });
            let revoked = thumbprint.as_ref().is_some_and(|t| revoked.contains(t));
            out.push(RunCertificate {
                serial,
                device_id,
                thumbprint,
                revoked,
            });
        }
        Ok(out)
    }

    /// Records that `thumbprint` was revoked at the CA (committed before this returns).
    pub fn mark_revoked(&self, thumbprint: &str) -> Result<(), StateError> {
        self.conn.execute(
            "INSERT OR IGNORE INTO cleanup_revocations (thumbprint, revoked_at) VALUES (?1, ?2)",
            params![
                thumbprint.to_ascii_uppercase(),
                time::OffsetDateTime::now_utc().unix_timestamp()
            ],
        )?;
        Ok(())
    }
}

fn leaf_thumbprint(chain_pem: &str) -> Option<String> {
    let leaf = crate::crypto::certs_from_pem(chain_pem)
        .ok()?
        .into_iter()
        .next()?;
    Some(crate::crypto::sha1_thumbprint(&leaf))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf_pem(cn: &str) -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec![cn.to_string()]).unwrap();
        params.self_signed(&key).unwrap().pem()
    }

    #[test]
    fn lists_every_certificate_and_remembers_what_was_revoked() {
        let dir = std::env::temp_dir().join(format!("fleetsim-revocations-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.db");
        assert!(RevocationLedger::open(&path).is_err(), "a missing state");
        let (old, current) = (leaf_pem("d1"), leaf_pem("d1"));
        let thumbprint = |pem: &str| leaf_thumbprint(pem).unwrap();
        {
            let conn = open_connection(&path).unwrap();
            super::super::schema::migrate(&conn).unwrap();
            conn.execute_batch(&format!(
                "INSERT INTO devices (id, idx, chain_pem, serial) VALUES ('d1', 0, '{current}', 'B2'); \
                 INSERT INTO certificates (serial, device_id, kind, not_after, stored_at) VALUES \
                   ('A1', 'd1', 'issue', 0, 1), ('B2', 'd1', 'renew', 0, 2), ('C3', 'd1', 'renew', 0, 3); \
                 INSERT INTO certificate_thumbprints (serial, thumbprint) VALUES ('A1', '{}');",
                thumbprint(&old)
            ))
            .unwrap();
        }
        let ledger = RevocationLedger::open(&path).unwrap();
        let certs = ledger.certificates().unwrap();
        let summary: Vec<(&str, Option<String>, bool)> = certs
            .iter()
            .map(|c| (c.serial.as_str(), c.thumbprint.clone(), c.revoked))
            .collect();
        assert_eq!(
            summary,
            [
                ("A1", Some(thumbprint(&old)), false),
                // No recorded thumbprint (an older state), but it is the device's current one.
                ("B2", Some(thumbprint(&current)), false),
                // Superseded and unrecorded: known by serial only.
                ("C3", None, false),
            ]
        );
        ledger
            .mark_revoked(&thumbprint(&old).to_ascii_lowercase())
            .unwrap();
        drop(ledger);
        let again = RevocationLedger::open(&path)
            .unwrap()
            .certificates()
            .unwrap();
        assert!(again[0].revoked && !again[1].revoked && !again[2].revoked);
        std::fs::remove_dir_all(&dir).ok();
    }
}
