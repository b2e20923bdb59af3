//! The one writer of the state database: a thread that owns the connection, takes every queued
//! change (from thousands of devices and from the embedded emulators) and commits them together
//! in one transaction, then acknowledges the devices that wait for their write. SQLite is
//! therefore never a lock on the devices' hot path, and one fsync covers a whole batch.
//!
//! Order is the channel's: a change queued before another is committed no later than it. The
//! emulators rely on this (their journal entry is queued before they answer the device, whose own
//! write is queued after the answer arrives).

use rusqlite::{Connection, Transaction, params};
use rustls_pki_types::CertificateDer;
use tokio::sync::{mpsc, oneshot};

use super::rows::{CaDomainRow, CaIdentityRow, StateError, key_kind_name, now_unix};
use crate::crypto::{CertInfo, DeviceKey};

/// Most changes committed in one transaction.
const BATCH: usize = 1024;

/// One change to the state.
#[derive(Debug)]
pub enum Op {
    /// A device arrived (its row exists from now on, so a resumed run knows it started).
    DeviceStarted {
        id: String,
        index: u64,
    },
    /// A request is about to go to the CA for this key (kind `issue` or `renew`).
    Intent {
        id: String,
        index: u64,
        kind: &'static str,
        key_kind: String,
        key_pem: Secret,
        spki: Vec<u8>,
        csr: String,
    },
    /// The CA answered: the device's current key and certificate from now on.
    Certificate {
        id: String,
        kind: &'static str,
        key_kind: String,
        key_pem: Secret,
        chain_pem: String,
        serial: String,
        not_after: i64,
    },
    /// The device's hub identity exists.
    Registered {
        id: String,
    },
    /// The embedded CA issued a certificate (leaf DER).
    CaIssued {
        subject_cn: String,
        requested_by: String,
        der: Vec<u8>,
    },
    CaDomain(CaDomainRow),
    /// The embedded CA's identity, saved once when a new state's CA is created.
    CaIdentity(CaIdentityRow),
    CaRevoked {
        thumbprint: String,
        at: i64,
    },
    /// The embedded hub's registry entry for `id` changed (`None`: deleted).
    HubDevice {
        id: String,
        json: Option<String>,
    },
    /// The run's progress and recorder content.
    Checkpoint {
        elapsed_ms: u64,
        report_json: String,
        new_segment: bool,
        /// The report's timeline, when this checkpoint was taken from the snapshot of its last
        /// point: saved in the same transaction, with `report_json` as its base, so a resumed
        /// run's recorder never holds less than the timeline already counted.
        timeline_json: Option<String>,
    },
    /// Nothing: acknowledged once everything queued before it is committed.
    Flush,
}

/// A private key in transit to the database: never printed.
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<private>")
    }
}

struct Msg {
    op: Op,
    ack: Option<oneshot::Sender<Result<(), String>>>,
}

/// Owns the writer thread; [`StateWriter::journal`] hands out cheap senders.
pub struct StateWriter {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// A cheap, cloneable handle devices and emulators write through.
#[derive(Clone)]
pub struct DeviceJournal {
    tx: mpsc::UnboundedSender<Msg>,
}

impl StateWriter {
    pub(super) fn start(conn: Connection) -> Result<Self, StateError> {
        let (tx, rx) = mpsc::unbounded_channel();
        let thread = std::thread::Builder::new()
            .name("fleetsim-state".into())
            .spawn(move || run(conn, rx))
            .map_err(|source| StateError::Open {
                path: "writer thread".into(),
                source,
            })?;
        Ok(Self {
            tx,
            thread: Some(thread),
        })
    }

    pub fn journal(&self) -> DeviceJournal {
        DeviceJournal {
            tx: self.tx.clone(),
        }
    }

    /// Commits everything queued so far. The thread ends by itself once the last handle
    /// (devices' and emulators' included) is dropped; nothing waits for that.
    pub async fn close(mut self) -> Result<(), StateError> {
        let flushed = self.journal().write(Op::Flush).await;
        drop(self.thread.take());
        flushed
    }
}

impl DeviceJournal {
    /// Queues `op` without waiting (emulator journals, checkpoints, arrivals).
    pub fn send(&self, op: Op) {
        let _ = self.tx.send(Msg { op, ack: None });
    }

    /// Queues `op` and returns once it is committed.
    pub async fn write(&self, op: Op) -> Result<(), StateError> {
        let (ack, done) = oneshot::channel();
        self.tx
            .send(Msg { op, ack: Some(ack) })
            .map_err(|_| StateError::WriterGone)?;
        match done.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(why)) => Err(StateError::Corrupt {
                what: "write".into(),
                why,
            }),
            Err(_) => Err(StateError::WriterGone),
        }
    }

    pub fn started(&self, id: &str, index: u64) {
        self.send(Op::DeviceStarted {
            id: id.to_string(),
            index,
        });
    }

    /// Records, and waits for, the intent to request a certificate for `key` with `csr`.
    pub async fn intent(
        &self,
        id: &str,
        index: u64,
        renewal: bool,
        key: &DeviceKey,
        csr: &str,
    ) -> Result<(), StateError> {
        self.write(Op::Intent {
            id: id.to_string(),
            index,
            kind: kind(renewal),
            key_kind: key_kind_name(key.kind()),
            key_pem: Secret(key.private_key_pem()),
            spki: key.public_key_der(),
            csr: csr.to_string(),
        })
        .await
    }

    /// Records, and waits for, the device's new certificate (and the key it belongs to).
    pub async fn certificate(
        &self,
        id: &str,
        renewal: bool,
        key: &DeviceKey,
        chain: &[CertificateDer<'static>],
        info: &CertInfo,
    ) -> Result<(), StateError> {
        let chain_pem: String = chain
            .iter()
            .map(|c| crate::crypto::cert_to_pem(c))
            .collect();
        self.write(Op::Certificate {
            id: id.to_string(),
            kind: kind(renewal),
            key_kind: key_kind_name(key.kind()),
            key_pem: Secret(key.private_key_pem()),
            chain_pem,
            serial: info.serial_hex.clone(),
            not_after: info.not_after.unix_timestamp(),
        })
        .await
    }

    pub async fn registered(&self, id: &str) -> Result<(), StateError> {
        self.write(Op::Registered { id: id.to_string() }).await
    }
}

fn kind(renewal: bool) -> &'static str {
    if renewal { "renew" } else { "issue" }
}

fn run(mut conn: Connection, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut batch = Vec::with_capacity(BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < BATCH {
            match rx.try_recv() {
                Ok(m) => batch.push(m),
                Err(_) => break,
            }
        }
        let results = commit(&mut conn, &batch);
        for (msg, result) in batch.drain(..).zip(results) {
            if let Err(why) = &result {
                tracing::warn!(error = %why, "state write failed");
            }
            if let Some(ack) = msg.ack {
                let _ = ack.send(result);
            }
        }
    }
}

/// Applies a batch in one transaction: one result per message (all errors if the commit fails).
fn commit(conn: &mut Connection, batch: &[Msg]) -> Vec<Result<(), String>> {
    let tx = match conn.transaction() {
        Ok(tx) => tx,
        Err(e) => return batch.iter().map(|_| Err(e.to_string())).collect(),
    };
    let results: Vec<Result<(), String>> = batch
        .iter()
        .map(|m| apply(&tx, &m.op).map_err(|e| e.to_string()))
        .collect();
    match tx.commit() {
        Ok(()) => results,
        Err(e) => batch.iter().map(|_| Err(e.to_string())).collect(),
    }
}

fn apply(tx: &Transaction, op: &Op) -> Result<(), StateError> {
    match op {
        Op::DeviceStarted { id, index } => {
            tx.execute(
                "INSERT OR IGNORE INTO devices (id, idx) VALUES (?1, ?2)",
                params![id, *index as i64],
            )?;
        }
        Op::Intent {
            id,
            index,
            kind,
            key_kind,
            key_pem,
            spki,
            csr,
        } => {
            tx.execute(
                "INSERT OR IGNORE INTO devices (id, idx) VALUES (?1, ?2)",
                params![id, *index as i64],
            )?;
            tx.execute(
                "INSERT OR REPLACE INTO intents (device_id, kind, key_kind, key_pem, spki, csr, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![id, kind, key_kind, key_pem.0, spki, csr, now_unix()],
            )?;
        }
        Op::Certificate {
            id,
            kind,
            key_kind,
            key_pem,
            chain_pem,
            serial,
            not_after,
        } => store_certificate(
            tx, id, kind, key_kind, &key_pem.0, chain_pem, serial, *not_after, false,
        )?,
        Op::Registered { id } => {
            tx.execute(
                "UPDATE devices SET registered = 1 WHERE id = ?1",
                params![id],
            )?;
        }
        Op::CaIssued {
            subject_cn,
            requested_by,
            der,
        } => store_ca_issued(tx, subject_cn, requested_by, der)?,
        Op::CaDomain(d) => {
            tx.execute(
                "INSERT OR REPLACE INTO ca_domains (name, id, owners, requesters) \
                 VALUES (?1, ?2, ?3, ?4)",
                params![d.name, d.id, d.owners.join("\n"), d.requesters.join("\n")],
            )?;
        }
        Op::CaIdentity(ca) => store_ca_identity(tx, ca)?,
        Op::CaRevoked { thumbprint, at } => {
            tx.execute(
                "UPDATE ca_issued SET revoked_at = ?2 WHERE thumbprint = ?1 AND revoked_at IS NULL",
                params![thumbprint.to_ascii_uppercase(), at],
            )?;
        }
        Op::HubDevice { id, json } => store_hub_device(tx, id, json.as_deref())?,
        Op::Checkpoint {
            elapsed_ms,
            report_json,
            new_segment,
            timeline_json,
        } => store_checkpoint(
            tx,
            *elapsed_ms,
            report_json,
            *new_segment,
            timeline_json.as_deref(),
        )?,
        Op::Flush => {}
    }
    Ok(())
}

fn store_ca_identity(tx: &Transaction, ca: &CaIdentityRow) -> Result<(), StateError> {
    tx.execute(
        "INSERT OR REPLACE INTO ca_identity (id, ca_id, template_id, root_der, \
         issuing_der, issuing_key, caller_oid) VALUES (1, ?1, ?2, ?3, ?4, ?5, ?6)",
        params![
            ca.ca_id,
            ca.template_id,
            ca.root_der,
            ca.issuing_der,
            ca.issuing_key_pkcs8,
            ca.caller_oid
        ],
    )?;
    Ok(())
}

/// The embedded hub's registry entry for `id` (`None`: deleted).
fn store_hub_device(tx: &Transaction, id: &str, json: Option<&str>) -> Result<(), StateError> {
    match json {
        Some(json) => tx.execute(
            "INSERT INTO hub_devices (id, json) VALUES (?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET json = excluded.json",
            params![id, json],
        )?,
        None => tx.execute("DELETE FROM hub_devices WHERE id = ?1", params![id])?,
    };
    Ok(())
}

/// Records a certificate the embedded CA issued, by thumbprint (once).
fn store_ca_issued(
    tx: &Transaction,
    subject_cn: &str,
    requested_by: &str,
    der: &[u8],
) -> Result<(), StateError> {
    let (serial, spki) = serial_and_spki(der)?;
    tx.execute(
        "INSERT OR IGNORE INTO ca_issued (thumbprint, serial, subject_cn, requested_by, \
         spki, der, issued_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            crate::crypto::sha1_thumbprint(der),
            serial,
            subject_cn,
            requested_by,
            spki,
            der,
            now_unix()
        ],
    )?;
    Ok(())
}

/// The run's progress (one row, a new segment counted on resume) and, when given, the timeline
/// with the report it was taken with as its base.
fn store_checkpoint(
    tx: &Transaction,
    elapsed_ms: u64,
    report_json: &str,
    new_segment: bool,
    timeline_json: Option<&str>,
) -> Result<(), StateError> {
    tx.execute(
        "INSERT INTO checkpoint (id, elapsed_ms, report_json, segments, written_at) \
         VALUES (1, ?1, ?2, 1, ?3) ON CONFLICT(id) DO UPDATE SET \
         elapsed_ms = excluded.elapsed_ms, report_json = excluded.report_json, \
         written_at = excluded.written_at, segments = segments + ?4",
        params![
            elapsed_ms as i64,
            report_json,
            now_unix(),
            i64::from(new_segment)
        ],
    )?;
    if let Some(timeline) = timeline_json {
        tx.execute(
            "INSERT INTO timeline (id, timeline_json, base_json) VALUES (1, ?1, ?2) \
             ON CONFLICT(id) DO UPDATE SET timeline_json = excluded.timeline_json, \
             base_json = excluded.base_json",
            params![timeline, report_json],
        )?;
    }
    Ok(())
}

/// Makes `chain_pem` the device's current certificate and records it in its history.
#[allow(clippy::too_many_arguments)]
pub(super) fn store_certificate(
    tx: &Transaction,
    id: &str,
    kind: &str,
    key_kind: &str,
    key_pem: &str,
    chain_pem: &str,
    serial: &str,
    not_after: i64,
    recovered: bool,
) -> Result<(), StateError> {
    tx.execute(
        "UPDATE devices SET key_kind = ?2, key_pem = ?3, chain_pem = ?4, serial = ?5, \
         not_after = ?6, enrolled = 1, renewals = renewals + ?7 WHERE id = ?1",
        params![
            id,
            key_kind,
            key_pem,
            chain_pem,
            serial,
            not_after,
            i64::from(kind == "renew")
        ],
    )?;
    tx.execute(
        "INSERT OR IGNORE INTO certificates (serial, device_id, kind, not_after, recovered, \
         stored_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![serial, id, kind, not_after, recovered, now_unix()],
    )?;
    // The thumbprint is how EZCA names a certificate (`cleanup --revoke` revokes by it).
    if let Some(leaf) = crate::crypto::certs_from_pem(chain_pem)
        .ok()
        .and_then(|c| c.into_iter().next())
    {
        tx.execute(
            "INSERT OR IGNORE INTO certificate_thumbprints (serial, thumbprint) VALUES (?1, ?2)",
            params![serial, crate::crypto::sha1_thumbprint(&leaf)],
        )?;
    }
    tx.execute("DELETE FROM intents WHERE device_id = ?1", params![id])?;
    Ok(())
}

/// The serial (upper hex, as `CertInfo` writes it) and SubjectPublicKeyInfo of a certificate.
pub(super) fn serial_and_spki(der: &[u8]) -> Result<(String, Vec<u8>), StateError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| StateError::Corrupt {
        what: "certificate".into(),
        why: e.to_string(),
    })?;
    Ok((
        cert.raw_serial_as_string().replace(':', ""),
        cert.tbs_certificate.subject_pki.raw.to_vec(),
    ))
}
