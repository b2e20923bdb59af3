//! `fleetsim emulate --state FILE`: what the standalone emulators keep across a restart, so a
//! restarted `fleetsim emulate` is the same CA and the same hub to its clients: the TLS root the
//! clients trust, every issuing CA with its key, the token keys, the hub's `iothubowner` key,
//! and the records (certificates issued, revocations, domains, the hub's registry).
//!
//! The file is JSON lines, written 0600 (it holds private keys): the first line is the
//! identity, each further line one durable change, appended as the emulators report it (before
//! they answer the request that caused it; an append lands in the kernel's page cache, so it
//! survives the process being killed). On start the file is read, replayed into a
//! [`Restore`], and rewritten compacted (identity and current records only), through a
//! temporary file and a rename. A last line cut short by a kill is skipped.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use super::EmulatorError;
use super::persist::{
    CaIdentity, CaSecrets, Domain, HubSecrets, IssuedRecord, Journal, JournalEvent, Restore,
};
use super::tls::ServerPki;
use crate::iothub::registry::Device;
use crate::sync::lock;

/// One line of the file.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum Line {
    Identity(Identity),
    Issued {
        subject_cn: String,
        requested_by: String,
        der: String,
    },
    Domain {
        name: String,
        id: String,
        ca: usize,
        owners: Vec<String>,
        requesters: Vec<String>,
    },
    Revoked {
        thumbprint: String,
        at: i64,
    },
    HubDevice {
        id: String,
        device: Option<Box<Device>>,
    },
}

/// The keys and certificates, base64 DER.
#[derive(Serialize, Deserialize)]
struct Identity {
    tls_root: String,
    tls_root_key: String,
    authorities: Vec<Authority>,
    ca_token_secret: String,
    hub_policy_key: String,
    hub_token_secret: String,
}

#[derive(Serialize, Deserialize)]
struct Authority {
    ca_id: String,
    template_id: String,
    root: String,
    issuing: String,
    issuing_key: String,
}

/// What a state file restores: the TLS root and everything else the emulators start from.
pub struct Saved {
    pub pki: ServerPki,
    pub restore: Restore,
}

fn bad(path: &Path, line: usize, why: impl std::fmt::Display) -> EmulatorError {
    EmulatorError::Setup(format!("{}:{line}: {why}", path.display()))
}

fn decode(path: &Path, line: usize, b64: &str) -> Result<Vec<u8>, EmulatorError> {
    B64.decode(b64).map_err(|e| bad(path, line, e))
}

fn key32(path: &Path, line: usize, b64: &str) -> Result<[u8; 32], EmulatorError> {
    decode(path, line, b64)?
        .try_into()
        .map_err(|_| bad(path, line, "a token key is not 32 bytes"))
}

/// Reads `path` if it exists (`None` when it does not: a first start).
pub fn load(path: &Path) -> Result<Option<Saved>, EmulatorError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut parsed = Vec::with_capacity(lines.len());
    for (i, l) in lines.iter().enumerate() {
        match serde_json::from_str::<Line>(l) {
            Ok(line) => parsed.push(line),
            // Cut short by a kill while it was appended: what it said was never answered.
            Err(_) if i + 1 == lines.len() && i > 0 && !text.ends_with('\n') => {
                tracing::warn!(line = i + 1, "state: skipped a last line cut short");
            }
            Err(e) => return Err(bad(path, i + 1, e)),
        }
    }
    let mut lines = parsed.into_iter();
    let Some(Line::Identity(identity)) = lines.next() else {
        return Err(bad(path, 1, "the first line is not the identity"));
    };
    let (pki, mut restore) = from_identity(path, identity)?;
    replay(path, lines, &mut restore)?;
    Ok(Some(Saved { pki, restore }))
}

fn from_identity(path: &Path, id: Identity) -> Result<(ServerPki, Restore), EmulatorError> {
    let pki = ServerPki::restore(
        decode(path, 1, &id.tls_root)?.into(),
        &decode(path, 1, &id.tls_root_key)?,
    )?;
    let authorities = id
        .authorities
        .iter()
        .map(|a| {
            Ok(CaIdentity {
                ca_id: a.ca_id.clone(),
                template_id: a.template_id.clone(),
                root_der: decode(path, 1, &a.root)?.into(),
                issuing_der: decode(path, 1, &a.issuing)?.into(),
                issuing_key_pkcs8: decode(path, 1, &a.issuing_key)?,
            })
        })
        .collect::<Result<Vec<_>, EmulatorError>>()?;
    let restore = Restore {
        ca_secrets: Some(CaSecrets {
            authorities,
            token_secret: Some(key32(path, 1, &id.ca_token_secret)?),
        }),
        hub_secrets: Some(HubSecrets {
            policy_key: id.hub_policy_key,
            token_secret: key32(path, 1, &id.hub_token_secret)?,
        }),
        ..Restore::default()
    };
    Ok((pki, restore))
}

/// Applies the changes in order: later lines win.
fn replay(
    path: &Path,
    lines: impl Iterator<Item = Line>,
    restore: &mut Restore,
) -> Result<(), EmulatorError> {
    let mut issued: Vec<IssuedRecord> = Vec::new();
    let mut by_thumbprint: HashMap<String, usize> = HashMap::new();
    let mut domains: Vec<(String, Domain)> = Vec::new();
    let mut devices: Vec<(String, Option<Device>)> = Vec::new();
    for (n, line) in lines.enumerate() {
        match line {
            Line::Identity(_) => return Err(bad(path, n + 2, "a second identity")),
            Line::Issued {
                subject_cn,
                requested_by,
                der,
            } => {
                let der = decode(path, n + 2, &der)?;
                by_thumbprint.insert(crate::crypto::sha1_thumbprint(&der), issued.len());
                issued.push(IssuedRecord {
                    der: der.into(),
                    ca: 0,
                    subject_cn,
                    requested_by,
                    revoked: false,
                });
            }
            Line::Revoked { thumbprint, .. } => {
                if let Some(&i) = by_thumbprint.get(&thumbprint.to_ascii_uppercase()) {
                    issued[i].revoked = true;
                }
            }
            Line::Domain {
                name,
                id,
                ca,
                owners,
                requesters,
            } => {
                domains.retain(|(n, _)| *n != name);
                let domain = Domain {
                    id,
                    ca,
                    owners,
                    requesters,
                };
                domains.push((name, domain));
            }
            Line::HubDevice { id, device } => {
                devices.retain(|(d, _)| *d != id);
                devices.push((id, device.map(|d| *d)));
            }
        }
    }
    restore.issued = issued;
    restore.domains = domains;
    restore.hub_devices = devices.into_iter().filter_map(|(_, d)| d).collect();
    Ok(())
}

fn identity_line(pki: &ServerPki, ca: &CaSecrets, hub: &HubSecrets) -> Line {
    Line::Identity(Identity {
        tls_root: B64.encode(pki.root_der()),
        tls_root_key: B64.encode(pki.root_key_pkcs8()),
        authorities: ca
            .authorities
            .iter()
            .map(|a| Authority {
                ca_id: a.ca_id.clone(),
                template_id: a.template_id.clone(),
                root: B64.encode(&a.root_der),
                issuing: B64.encode(&a.issuing_der),
                issuing_key: B64.encode(&a.issuing_key_pkcs8),
            })
            .collect(),
        ca_token_secret: B64.encode(ca.token_secret.unwrap_or_default()),
        hub_policy_key: hub.policy_key.clone(),
        hub_token_secret: B64.encode(hub.token_secret),
    })
}

fn event_line(event: JournalEvent) -> Line {
    match event {
        JournalEvent::Issued {
            subject_cn,
            requested_by,
            der,
        } => Line::Issued {
            subject_cn,
            requested_by,
            der: B64.encode(der),
        },
        JournalEvent::Domain { name, domain } => Line::Domain {
            name,
            id: domain.id,
            ca: domain.ca,
            owners: domain.owners,
            requesters: domain.requesters,
        },
        JournalEvent::Revoked { thumbprint, at } => Line::Revoked { thumbprint, at },
        JournalEvent::HubDevice { id, device } => Line::HubDevice { id, device },
    }
}

/// The records of `restore` as the changes that make them.
fn record_lines(restore: &Restore) -> impl Iterator<Item = Line> + '_ {
    let issued = restore.issued.iter().flat_map(|r| {
        let issued = Line::Issued {
            subject_cn: r.subject_cn.clone(),
            requested_by: r.requested_by.clone(),
            der: B64.encode(&r.der),
        };
        let revoked = r.revoked.then(|| Line::Revoked {
            thumbprint: crate::crypto::sha1_thumbprint(&r.der),
            at: 0,
        });
        std::iter::once(issued).chain(revoked)
    });
    let domains = restore.domains.iter().map(|(name, d)| {
        event_line(JournalEvent::Domain {
            name: name.clone(),
            domain: d.clone(),
        })
    });
    let devices = restore.hub_devices.iter().map(|d| Line::HubDevice {
        id: d.device_id.clone(),
        device: Some(Box::new(d.clone())),
    });
    issued.chain(domains).chain(devices)
}

/// The open state file, appending each change the emulators report.
pub struct StateWriter {
    file: Mutex<std::fs::File>,
    path: PathBuf,
}

impl StateWriter {
    /// Writes `path` afresh (through a temporary file and a rename) with the identity of the
    /// running emulators and the records they were restored with, and opens it for appending.
    pub fn create(
        path: &Path,
        pki: &ServerPki,
        ca: &CaSecrets,
        hub: &HubSecrets,
        restore: &Restore,
    ) -> Result<Arc<Self>, EmulatorError> {
        let mut text = String::new();
        let lines = std::iter::once(identity_line(pki, ca, hub)).chain(record_lines(restore));
        for line in lines {
            text.push_str(&serde_json::to_string(&line).map_err(|e| bad(path, 0, e))?);
            text.push('\n');
        }
        let temporary = path.with_extension("tmp");
        crate::crypto::write_secret_file(&temporary, text.as_bytes())?;
        std::fs::rename(&temporary, path)?;
        let file = std::fs::OpenOptions::new().append(true).open(path)?;
        Ok(Arc::new(Self {
            file: Mutex::new(file),
            path: path.to_path_buf(),
        }))
    }
}

impl Journal for StateWriter {
    /// One `write` of one line, unbuffered: it is in the kernel's hands when this returns.
    fn record(&self, event: JournalEvent) {
        let Ok(mut line) = serde_json::to_string(&event_line(event)) else {
            return;
        };
        line.push('\n');
        if let Err(e) = lock(&self.file).write_all(line.as_bytes()) {
            tracing::error!(path = %self.path.display(), error = %e, "state: a change was not saved");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_replay_and_a_cut_last_line_is_skipped() {
        crate::crypto::install_crypto_provider();
        let dir = std::env::temp_dir().join(format!("fleetsim-state-file-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("emulator.state");
        let pki = ServerPki::new("t").unwrap();
        let ca = CaSecrets {
            authorities: Vec::new(),
            token_secret: Some([7; 32]),
        };
        let hub = HubSecrets {
            policy_key: "a2V5".into(),
            token_secret: [9; 32],
        };
        let writer = StateWriter::create(&path, &pki, &ca, &hub, &Restore::default()).unwrap();
        let der = b"not really a certificate".to_vec();
        writer.record(JournalEvent::Issued {
            subject_cn: "d1".into(),
            requested_by: "oid".into(),
            der: der.clone(),
        });
        writer.record(JournalEvent::Revoked {
            thumbprint: crate::crypto::sha1_thumbprint(&der).to_ascii_lowercase(),
            at: 1,
        });
        for id in ["d1", "d2"] {
            writer.record(JournalEvent::HubDevice {
                id: id.into(),
                device: Some(Box::new(Device::certificate_authority(id))),
            });
        }
        writer.record(JournalEvent::HubDevice {
            id: "d2".into(),
            device: None,
        });
        drop(writer);
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        file.write_all(b"{\"kind\":\"issued\",\"subj").unwrap();

        let saved = load(&path).unwrap().expect("the file exists");
        assert_eq!(saved.pki.root_der(), pki.root_der());
        let r = &saved.restore;
        assert_eq!(r.issued.len(), 1);
        assert!(r.issued[0].revoked);
        let ids: Vec<_> = r.hub_devices.iter().map(|d| d.device_id.as_str()).collect();
        assert_eq!(ids, ["d1"], "d2 was deleted");
        assert_eq!(r.hub_secrets.as_ref().unwrap().token_secret, [9; 32]);
        assert_eq!(r.ca_secrets.as_ref().unwrap().token_secret, Some([7; 32]));

        // Compacted on the next start: the same records, nothing cut short.
        let (c, h) = (
            r.ca_secrets.clone().unwrap(),
            r.hub_secrets.clone().unwrap(),
        );
        StateWriter::create(&path, &saved.pki, &c, &h, r).unwrap();
        let again = load(&path).unwrap().unwrap().restore;
        assert_eq!(again.issued.len(), 1);
        assert!(again.issued[0].revoked);
        assert_eq!(again.hub_devices.len(), 1);
        // Anything else that does not parse is an error naming the line.
        std::fs::write(&path, "garbage\n").unwrap();
        let err = load(&path).err().expect("refused").to_string();
        assert!(err.contains("emulator.state:1:"), "{err}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
