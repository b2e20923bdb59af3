//! Crypto micro-benchmarks: the work one device costs in cryptography, from which BENCHMARKS.md
//! computes the crypto floor (the most devices/s two cores could enrol and connect if nothing but
//! cryptography cost anything).
//!
//! `cargo bench --bench crypto` (all), or e.g. `cargo bench --bench crypto -- keygen`.
//!
//! - `keygen/<kind>`: a device key (what `key_source: fresh` costs per certificate).
//! - `csr/<kind>`: a CSR for `CN=<id>`, signed by the device key.
//! - `ca_sign/<kind>`: the embedded EZCA's issuance of one CSR: parse and verify the CSR's
//!   signature, build and sign the leaf (P-256 issuing CA) — `Authority::sign`, the code the
//!   emulator's HTTP handler calls.
//! - `tls_handshake/<kind>`: one full TLS 1.3 handshake with client certificate, both sides in
//!   memory (client: rustls with the device's chain and key; server: rustls verifying the chain
//!   against the device CA, as the hub emulator does), so the figure is client + server CPU.
//! - `hdr_record`: one latency sample into the run's recorder.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use fleetsim::clock::Clock;
use fleetsim::crypto::{DeviceKey, KeyKind, install_crypto_provider};
use fleetsim::emulator::ServerPki;
use fleetsim::emulator::ca::names::{San, Subject};
use fleetsim::emulator::ca::{Authority, SignRequest};
use fleetsim::metrics::{Outcome, Phase, Recorder};
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};
use rustls_pki_types::{CertificateDer, ServerName};

const KINDS: [KeyKind; 5] = KeyKind::ALL;
/// The kinds devices use in practice, for the benchmarks whose cost depends little on the kind.
const MAIN_KINDS: [KeyKind; 2] = [KeyKind::P256, KeyKind::Rsa2048];

/// The emulator's default issuing CA (ECDSA P-256; it also runs an RSA-2048 one).
fn authority() -> Authority {
    Authority::hierarchy("bench", 397, "https://127.0.0.1:1/", Clock::real())
        .expect("CA")
        .swap_remove(0)
}

fn sign(ca: &Authority, csr: &str) -> CertificateDer<'static> {
    let ekus = ["1.3.6.1.5.5.7.3.2".to_string()];
    let usages = ["Digital Signature".to_string()];
    let subject = Subject::parse("CN=sim-000001").expect("subject");
    let sans = [San::dns("sim-000001").expect("SAN")];
    ca.sign(&SignRequest {
        subject: &subject,
        sans: &sans,
        csr_pem: csr,
        validity_days: 30,
        ekus: &ekus,
        key_usages: &usages,
    })
    .expect("signed")
}

fn keygen(c: &mut Criterion) {
    let mut g = c.benchmark_group("keygen");
    for kind in KINDS {
        if kind.is_rsa() {
            // RSA keygen takes 0.1–2 s with a wide spread: fewer, longer samples.
            g.sample_size(10);
            g.measurement_time(Duration::from_secs(if kind == KeyKind::Rsa2048 {
                15
            } else {
                40
            }));
        } else {
            g.sample_size(50);
            g.measurement_time(Duration::from_secs(3));
        }
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter(|| DeviceKey::generate(black_box(kind)).expect("key"))
        });
    }
    g.finish();
}

fn csr_and_ca(c: &mut Criterion) {
    let ca = authority();
    let mut g = c.benchmark_group("csr");
    g.measurement_time(Duration::from_secs(3));
    for kind in MAIN_KINDS {
        let key = DeviceKey::generate(kind).expect("key");
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter(|| key.csr_pem(black_box("sim-000001")).expect("csr"))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("ca_sign");
    g.measurement_time(Duration::from_secs(3));
    for kind in MAIN_KINDS {
        let key = DeviceKey::generate(kind).expect("key");
        let csr = key.csr_pem("sim-000001").expect("csr");
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter(|| sign(&ca, black_box(&csr)))
        });
    }
    g.finish();
}

/// Moves TLS records between the two ends until both have finished the handshake.
fn handshake(client: &mut ClientConnection, server: &mut ServerConnection) {
    let mut buf = Vec::with_capacity(16 * 1024);
    while client.is_handshaking() || server.is_handshaking() {
        buf.clear();
        while client.wants_write() {
            client.write_tls(&mut buf).expect("client writes");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).expect("server reads");
        }
        server.process_new_packets().expect("server accepts");
        buf.clear();
        while server.wants_write() {
            server.write_tls(&mut buf).expect("server writes");
        }
        let mut rd = &buf[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).expect("client reads");
        }
        client.process_new_packets().expect("client accepts");
    }
}

fn tls(c: &mut Criterion) {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let pki = ServerPki::new("bench").expect("pki");
    let identity = pki
        .issue_server(&["127.0.0.1".into()])
        .expect("server cert");
    let ca = authority();
    let mut device_roots = RootCertStore::empty();
    device_roots.add(ca.root_der.clone()).expect("root");
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
        Arc::new(device_roots),
        provider.clone(),
    )
    .build()
    .expect("verifier");
    let server_cfg = Arc::new(
        ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_client_cert_verifier(verifier)
            .with_single_cert(identity.chain, identity.key)
            .expect("server config"),
    );
    let mut server_roots = RootCertStore::empty();
    server_roots.add(pki.root_der()).expect("root");
    let server_roots = Arc::new(server_roots);
    let name = ServerName::try_from("127.0.0.1").expect("name");

    let mut g = c.benchmark_group("tls_handshake");
    g.measurement_time(Duration::from_secs(5));
    for kind in MAIN_KINDS {
        let key = DeviceKey::generate(kind).expect("key");
        let leaf = sign(&ca, &key.csr_pem("sim-000001").expect("csr"));
        let chain = vec![leaf, ca.issuing_der.clone()];
        let mut client_cfg = ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(server_roots.clone())
            .with_client_auth_cert(chain, key.private_key_der())
            .expect("client config");
        client_cfg.resumption = rustls::client::Resumption::disabled();
        let client_cfg = Arc::new(client_cfg);
        g.bench_function(BenchmarkId::from_parameter(kind.name()), |b| {
            b.iter(|| {
                let mut client =
                    ClientConnection::new(client_cfg.clone(), name.clone()).expect("client");
                let mut server = ServerConnection::new(server_cfg.clone()).expect("server");
                handshake(&mut client, &mut server);
                assert!(server.peer_certificates().is_some());
            })
        });
    }
    g.finish();
}

fn hdr(c: &mut Criterion) {
    let recorder = Recorder::new();
    let t0 = tokio::time::Instant::now();
    let mut i = 0u64;
    c.bench_function("hdr_record", |b| {
        b.iter(|| {
            i = i.wrapping_add(7919);
            let end = t0 + Duration::from_micros(i % 2_000_000);
            recorder.record(Phase::MqttPublish, Outcome::Ok, black_box(t0), end);
        })
    });
}

fn setup(c: &mut Criterion) {
    install_crypto_provider();
    keygen(c);
    csr_and_ca(c);
    tls(c);
    hdr(c);
}

criterion_group!(benches, setup);
criterion_main!(benches);
