use super::*;
use crate::crypto::{CertInfo, DeviceKey, KeyKind};
use std::path::{Path, PathBuf};

fn temp_path(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-state-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("soak.db")
}

fn file(path: &Path, hash: &str) -> StateFile {
    StateFile {
        path: path.to_path_buf(),
        scenario_name: "soak".into(),
        scenario_hash: hash.into(),
    }
}

#[cfg(unix)]
#[test]
fn database_and_its_wal_are_owner_only() {
    use std::os::unix::fs::PermissionsExt;
    let path = temp_path("mode");
    let store = Store::open(&file(&path, "A")).unwrap();
    let writer = store.into_writer().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let journal = writer.journal();
    rt.block_on(journal.write(Op::DeviceStarted {
        id: "d1".into(),
        index: 0,
    }))
    .unwrap();
    for suffix in ["", "-wal", "-shm"] {
        let mut p = path.as_os_str().to_owned();
        p.push(suffix);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{suffix}");
    }
    rt.block_on(writer.close()).unwrap();
}

#[test]
fn refuses_another_scenario() {
    let path = temp_path("other");
    let store = Store::open(&file(&path, "AAAA")).unwrap();
    assert!(!store.resumed);
    drop(store);
    assert!(Store::open(&file(&path, "AAAA")).unwrap().resumed);
    let err = Store::open(&file(&path, "BBBB")).err().unwrap();
    assert!(matches!(err, StateError::OtherScenario { .. }));
    let text = err.to_string();
    assert!(text.contains("AAAA") && text.contains("BBBB"), "{text}");
}

/// A certificate the CA journaled for an intent's key, but which the device never stored (the
/// kill came in between), is adopted on resume; an intent without one is dropped.
#[test]
fn intents_resolve_against_the_ca_journal() {
    crate::crypto::install_crypto_provider();
    let path = temp_path("intents");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let key = DeviceKey::generate(KeyKind::P256).unwrap();
    let other = DeviceKey::generate(KeyKind::P256).unwrap();
    let leaf = {
        let mut params = rcgen::CertificateParams::new(vec!["d1".to_string()]).unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "d1");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertificateParams::default()
            .self_signed(&ca_key)
            .unwrap();
        let issuer = rcgen::Issuer::new(rcgen::CertificateParams::default(), ca_key);
        let _ = ca;
        let csr = key.csr_pem("d1").unwrap();
        let csr = rcgen::CertificateSigningRequestParams::from_pem(&csr).unwrap();
        rcgen::CertificateSigningRequestParams {
            params,
            public_key: csr.public_key,
        }
        .signed_by(&issuer)
        .unwrap()
        .der()
        .clone()
    };
    {
        let writer = Store::open(&file(&path, "A"))
            .unwrap()
            .into_writer()
            .unwrap();
        let j = writer.journal();
        rt.block_on(async {
            j.intent("d1", 0, false, &key, "csr1").await.unwrap();
            j.intent("d2", 1, false, &other, "csr2").await.unwrap();
            j.send(Op::CaIssued {
                subject_cn: "d1".into(),
                requested_by: "me".into(),
                der: leaf.to_vec(),
            });
        });
        rt.block_on(writer.close()).unwrap();
    }
    let mut store = Store::open(&file(&path, "A")).unwrap();
    let resolved = store.resolve_intents().unwrap();
    assert_eq!(resolved.adopted, vec!["d1".to_string()]);
    assert_eq!(resolved.unresolved, vec!["d2".to_string()]);
    let devices = store.devices().unwrap();
    let d1 = &devices["d1"];
    assert!(d1.has_certificate());
    let info = CertInfo::parse(&d1.chain[0]).unwrap();
    assert_eq!(d1.serials, vec![info.serial_hex]);
    assert_eq!(
        d1.key().unwrap().unwrap().public_key_der(),
        key.public_key_der()
    );
    assert!(!format!("{d1:?}").contains("PRIVATE"));
    assert!(!devices["d2"].has_certificate());
}
