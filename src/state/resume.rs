//! Reading a state back for a resumed run: the devices as they were, and the intents a kill left
//! behind, resolved against the embedded CA's journal.

use std::collections::HashMap;

use rusqlite::{OptionalExtension, params};
use rustls_pki_types::CertificateDer;

use super::rows::{StateError, key_from_row};
use super::store::Store;
use super::writer::store_certificate;
use crate::crypto::DeviceKey;

/// One device as the state holds it.
#[derive(Clone)]
pub struct StoredDevice {
    pub id: String,
    pub index: u64,
    /// Key kind and PKCS#8 PEM of the current key, when the device holds a certificate.
    key: Option<(String, String)>,
    /// The current chain (leaf first); empty when the device was never issued one.
    pub chain: Vec<CertificateDer<'static>>,
    pub serial: Option<String>,
    pub not_after: Option<i64>,
    pub renewals: u64,
    pub registered: bool,
    pub enrolled: bool,
    /// Serials of every certificate the device was issued, oldest first.
    pub serials: Vec<String>,
}

impl std::fmt::Debug for StoredDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredDevice")
            .field("id", &self.id)
            .field("index", &self.index)
            .field("serial", &self.serial)
            .field("renewals", &self.renewals)
            .field("registered", &self.registered)
            .field("enrolled", &self.enrolled)
            .finish_non_exhaustive()
    }
}

impl StoredDevice {
    /// The device's current key, when it holds a certificate.
    pub fn key(&self) -> Result<Option<DeviceKey>, StateError> {
        self.key
            .as_ref()
            .map(|(kind, pem)| key_from_row(kind, pem))
            .transpose()
    }

    /// Whether the device holds a key and certificate it can carry on with.
    pub fn has_certificate(&self) -> bool {
        self.enrolled && self.key.is_some() && !self.chain.is_empty()
    }
}

/// What became of the intents a previous run left behind.
#[derive(Debug, Clone, Default)]
pub struct ResolvedIntents {
    /// Devices whose certificate was found in the CA's journal and adopted.
    pub adopted: Vec<String>,
    /// Devices whose request may or may not have been issued (no journal to look in, or the CA
    /// never recorded it): the device requests again.
    pub unresolved: Vec<String>,
}

impl Store {
    /// Every device the state knows, by id.
    pub fn devices(&self) -> Result<HashMap<String, StoredDevice>, StateError> {
        let mut serials: HashMap<String, Vec<String>> = HashMap::new();
        let mut stmt = self
            .conn
            .prepare("SELECT device_id, serial FROM certificates ORDER BY stored_at, rowid")?;
        for row in stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))? {
            let (id, serial) = row?;
            serials.entry(id).or_default().push(serial);
        }
        let mut stmt = self.conn.prepare(
            "SELECT id, idx, key_kind, key_pem, chain_pem, serial, not_after, renewals, \
             registered, enrolled FROM devices",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, i64>(1)?,
                r.get::<_, Option<String>>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<String>>(4)?,
                r.get::<_, Option<String>>(5)?,
                r.get::<_, Option<i64>>(6)?,
                r.get::<_, i64>(7)?,
                r.get::<_, bool>(8)?,
                r.get::<_, bool>(9)?,
            ))
        })?;
        let mut out = HashMap::new();
        for row in rows {
            let (id, idx, kind, pem, chain_pem, serial, not_after, renewals, registered, enrolled) =
                row?;
            let chain = match chain_pem {
                Some(p) => crate::crypto::certs_from_pem(&p)?,
                None => Vec::new(),
            };
            let device = StoredDevice {
                serials: serials.remove(&id).unwrap_or_default(),
                id: id.clone(),
                index: idx.max(0) as u64,
                key: kind.zip(pem),
                chain,
                serial,
                not_after,
                renewals: renewals.max(0) as u64,
                registered,
                enrolled,
            };
            out.insert(id, device);
        }
        Ok(out)
    }

    /// Resolves the intents a killed run left: a certificate the embedded CA journaled for the
    /// intent's key (and device) becomes the device's current one; other intents are dropped and
    /// reported, and the device requests again.
    pub fn resolve_intents(&mut self) -> Result<ResolvedIntents, StateError> {
        let tx = self.conn.transaction()?;
        let issuing: Option<Vec<u8>> = tx
            .query_row(
                "SELECT issuing_der FROM ca_identity WHERE id = 1",
                [],
                |r| r.get(0),
            )
            .optional()?;
        let intents = {
            let mut stmt =
                tx.prepare("SELECT device_id, kind, key_kind, key_pem, spki FROM intents")?;
            stmt.query_map([], |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, String>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                ))
            })?
            .collect::<Result<Vec<_>, _>>()?
        };
        let mut resolved = ResolvedIntents::default();
        for (id, kind, key_kind, key_pem, spki) in intents {
            // The newest certificate the CA issued for this key and device that the device never
            // stored: the CA's answer the kill cut off.
            let found: Option<(String, Vec<u8>)> = tx
                .query_row(
                    "SELECT serial, der FROM ca_issued WHERE spki = ?1 AND subject_cn = ?2 \
                     AND serial NOT IN (SELECT serial FROM certificates) \
                     ORDER BY issued_at DESC LIMIT 1",
                    params![spki, id],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .optional()?;
            match found {
                Some((serial, der)) => {
                    let info = crate::crypto::CertInfo::parse(&der)?;
                    let mut chain_pem = crate::crypto::cert_to_pem(&der);
                    if let Some(issuing) = &issuing {
                        chain_pem.push_str(&crate::crypto::cert_to_pem(issuing));
                    }
                    store_certificate(
                        &tx,
                        &id,
                        &kind,
                        &key_kind,
                        &key_pem,
                        &chain_pem,
                        &serial,
                        info.not_after.unix_timestamp(),
                        true,
                    )?;
                    resolved.adopted.push(id);
                }
                None => {
                    tx.execute("DELETE FROM intents WHERE device_id = ?1", params![id])?;
                    resolved.unresolved.push(id);
                }
            }
        }
        tx.commit()?;
        Ok(resolved)
    }
}
