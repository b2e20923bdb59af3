//! `fleetsim hub upload-ca --ezca`: IoT Hub's proof of possession for a CA whose key stays in
//! EZCA. EZCA issues the verification certificate (CN = the hub's code) for a key fleetsim
//! makes, the hub checks it against the uploaded CA, and the certificate is revoked afterwards.
//! Against `fleetsim emulate` as a remote target; uploading the root (which does not sign
//! EZCA's leaves) is refused with the reason.

use std::time::Duration;

use crate::cleanup_revoke::crl_serials;
use crate::common::{self, Watched};
use crate::plan_cleanup::{fleetsim, text, with_secrets};

const LIMIT: Duration = Duration::from_secs(60);

/// The issuing CA of the scenario's `ca_id`, as EZCA publishes it (its AIA URL), in PEM.
fn issuing_ca_pem(dir: &std::path::Path) -> String {
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let field = |name: &str| {
        target
            .lines()
            .find_map(|l| l.trim().strip_prefix(name))
            .map(|v| v.split_whitespace().next().unwrap().to_string())
            .unwrap()
    };
    let roots =
        fleetsim::crypto::certs_from_pem(&std::fs::read_to_string(dir.join("trust.pem")).unwrap())
            .unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only(
            roots
                .iter()
                .map(|r| reqwest::Certificate::from_der(r).unwrap()),
        )
        .build()
        .unwrap();
    let url = format!("{}certs/{}.cer", field("url: "), field("ca_id: "));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let der = rt.block_on(async { http.get(url).send().await.unwrap().bytes().await.unwrap() });
    fleetsim::crypto::cert_to_pem(&rustls_pki_types::CertificateDer::from(der.to_vec()))
}

#[test]
fn upload_ca_with_the_key_in_ezca_is_verified_by_an_ezca_issued_certificate() {
    let dir = common::scratch_dir("upload-ca-ezca");
    let mut emulate = Watched::spawn(
        common::emulate_on_free_ports(&dir).arg("--no-dps"),
        "fleetsim emulate",
    );
    let banner = emulate.read_until("ready", Duration::from_secs(30));
    assert!(banner.contains("issuing CA:"), "{banner}");
    // What emulate writes is the CA target.yaml names, as EZCA publishes it.
    let issuing = std::fs::read_to_string(dir.join("ezca-issuing.pem")).unwrap();
    assert_eq!(issuing, issuing_ca_pem(&dir));
    let target = std::fs::read_to_string(dir.join("target.yaml")).unwrap();
    let scenario = dir.join("hub.yaml");
    std::fs::write(
        &scenario,
        format!("name: hub\nduration: 1s\n{target}fleet:\n  devices: 1\n  arrival_rate: 1/s\n"),
    )
    .unwrap();
    let upload = |name: &str, cert: &str| {
        let mut c = fleetsim();
        c.args(["hub", "upload-ca", "--ezca", "--name", name, "--scenario"])
            .arg(&scenario)
            .arg("--cert")
            .arg(dir.join(cert));
        common::output_within(&mut with_secrets(&mut c, &dir), LIMIT)
    };

    // The root does not sign EZCA's leaves: the hub refuses the proof, and fleetsim says why.
    let root = upload("ezca-root", "ezca-root.pem");
    let out = text(&root);
    assert!(!root.status.success(), "{out}");
    assert!(out.contains("not signed by this CA"), "{out}");
    assert!(out.contains("its issuing CA, not the root"), "{out}");

    let ok = upload("ezca-issuing", "ezca-issuing.pem");
    let out = text(&ok);
    assert!(ok.status.success(), "{out}");
    assert!(
        out.contains("EZCA issued the verification certificate for"),
        "{out}"
    );
    assert!(
        out.contains("verified: devices whose chains end at ezca-issuing"),
        "{out}"
    );
    assert!(
        out.contains("revoked the verification certificate at EZCA"),
        "{out}"
    );
    // Both verification certificates EZCA issued are revoked: nothing holds one for a code.
    assert_eq!(crl_serials(&dir).len(), 2);

    let neither = common::output_within(
        fleetsim()
            .args(["hub", "upload-ca", "--name", "x", "--scenario"])
            .arg(&scenario)
            .arg("--cert")
            .arg(dir.join("ezca-issuing.pem")),
        LIMIT,
    );
    assert!(!neither.status.success());
    assert!(text(&neither).contains("--key"), "{}", text(&neither));
    emulate.kill();
    std::fs::remove_dir_all(&dir).ok();
}
