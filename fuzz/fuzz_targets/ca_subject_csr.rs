//! What the CA emulator parses of a certificate request: the SubjectName (RFC 4514), the SANs,
//! and the CSR itself, signed by a real issuing CA when everything parses. The input is split
//! at the first two NUL bytes: subject, SAN (one DNS name), CSR PEM.
#![no_main]

use std::sync::OnceLock;

use fleetsim::emulator::ca::names::{Subject, parse_sans};
use fleetsim::emulator::ca::{Authority, SignRequest};
use libfuzzer_sys::fuzz_target;

fn authority() -> &'static Authority {
    static CA: OnceLock<Authority> = OnceLock::new();
    CA.get_or_init(|| {
        fleetsim::crypto::install_crypto_provider();
        let clock = fleetsim::clock::Clock::real();
        let mut hierarchy =
            Authority::hierarchy("fuzz", 365, "https://localhost", clock).expect("an issuing CA");
        hierarchy.remove(0)
    })
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(3, '\0');
    let subject_name = parts.next().unwrap_or_default();
    let san = parts.next().unwrap_or_default().to_string();
    let csr_pem = parts.next().unwrap_or_default();
    let Ok(subject) = Subject::parse(subject_name) else {
        return;
    };
    let dns = [san];
    let Ok(sans) = parse_sans(dns.iter(), &[]) else {
        return;
    };
    let ekus = fleetsim::ezca::models::default_ekus();
    let key_usages = fleetsim::ezca::models::default_key_usages();
    let _ = authority().sign(&SignRequest {
        subject: &subject,
        sans: &sans,
        csr_pem,
        validity_days: 30,
        ekus: &ekus,
        key_usages: &key_usages,
    });
});
