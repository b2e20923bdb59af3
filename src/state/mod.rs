//! Resumable soak state: `fleetsim run --state FILE` keeps everything a killed soak needs to carry
//! on in one embedded SQLite database (WAL), written transactionally as the fleet changes.
//!
//! # What is stored
//! - the scenario's identity (name and SHA-256 of its file): a state is only ever resumed by the
//!   scenario that wrote it;
//! - per device: id, index, current key (PKCS#8 PEM), certificate chain, serial, notAfter (from
//!   which the renewal schedule follows), renewal count, whether it is registered in the hub and
//!   enrolled; every certificate it was ever issued (`certificates`), with its SHA-1 thumbprint
//!   (`certificate_thumbprints`: how EZCA names it), and which of them `fleetsim cleanup
//!   --revoke` has revoked (`cleanup_revocations`, see [`RevocationLedger`]);
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
mod revocations;
mod rows;
mod run_record;
mod schema;
mod store;
mod writer;

pub use resume::{ResolvedIntents, StoredDevice};
pub use revocations::{RevocationLedger, RunCertificate};
pub use rows::{CaDomainRow, CaIdentityRow, CaIssuedRow, Checkpoint, EmulatorRows, StateError};
pub use run_record::{device_ids, remember_run_id, stored_run_id};
pub use store::{StateFile, Store};
pub use writer::{DeviceJournal, Op, StateWriter};

/// The SHA-256 of a scenario file's bytes, hex: what a state is bound to.
pub fn scenario_hash(bytes: &[u8]) -> String {
    crate::crypto::hex_upper(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, bytes).as_ref())
}

#[cfg(test)]
mod tests;
