//! The key pool in a run: with `key_source: pool` every device's certificate is for the key in its
//! pool slot, the same in every run, and no `keygen` is recorded; a short pool is topped up and
//! the waits are counted in the report; with `fresh` keys every key is timed as `keygen`.
//! Each run is a `fleetsim run` child with `FLEETSIM_KEY_DIR` in its own environment: the tests
//! share this process, where setting a variable while other threads run is not safe.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetsim::crypto::KeyKind;
use fleetsim::crypto::pool::KeyPool;
use fleetsim::report::Report;
use rusqlite::Connection;

use crate::common;

fn scenario(key_source: &str, devices: u32) -> String {
    format!(
        r#"
name: key-pool-test
seed: 11
duration: 3s
target:
  embedded: {{}}
fleet:
  devices: {devices}
  id_pattern: "pool-{{index:03}}"
  arrival_rate: 50/s
certificate:
  key: p256
  key_source: {key_source}
telemetry:
  interval: 1s
"#
    )
}

/// What one run left behind: its report, the report as text, and each device's id with the
/// public key (SubjectPublicKeyInfo DER) its certificate is for.
struct Run {
    report: Report,
    text: String,
    devices: Vec<(String, Vec<u8>)>,
}

/// `fleetsim run` on `text` with the key pool at `keys`. The pool directory reaches the run
/// through its own environment, since this process's threads share one environment. The
/// devices' certificates are read back from the run's `--state` file.
fn run(dir: &Path, keys: &Path, name: &str, text: &str) -> Run {
    let scenario = dir.join(format!("{name}.yaml"));
    std::fs::write(&scenario, text).unwrap();
    let (report, state) = (
        dir.join(format!("{name}.json")),
        dir.join(format!("{name}.db")),
    );
    let out = common::output_within(
        Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .args(["run", "--quiet", "--report"])
            .arg(&report)
            .arg("--state")
            .arg(&state)
            .arg(&scenario)
            .env("FLEETSIM_KEY_DIR", keys),
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Run {
        report: serde_json::from_slice(&std::fs::read(&report).expect("report written"))
            .expect("report parses"),
        text: String::from_utf8(out.stdout).unwrap(),
        devices: leaf_keys(&state),
    }
}

/// Each device's id and the key its current certificate is for, in device order.
fn leaf_keys(state: &Path) -> Vec<(String, Vec<u8>)> {
    let conn = Connection::open(state).unwrap();
    let mut stmt = conn
        .prepare("SELECT id, chain_pem FROM devices ORDER BY idx")
        .unwrap();
    let rows = stmt
        .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))
        .unwrap();
    rows.map(|row| {
        let (id, chain) = row.unwrap();
        let leaf = fleetsim::crypto::certs_from_pem(&chain).unwrap().remove(0);
        let (_, cert) = x509_parser::parse_x509_certificate(&leaf).expect("leaf parses");
        (id, cert.public_key().raw.to_vec())
    })
    .collect()
}

/// The key in `pool`'s slot for the device `pool-NNN`.
fn slot_key(pool: &KeyPool, id: &str) -> Vec<u8> {
    let index: u64 = id.trim_start_matches("pool-").parse().unwrap();
    pool.load(KeyKind::P256, index)
        .unwrap()
        .expect("slot filled")
        .public_key_der()
}

fn keygen_count(report: &Report) -> u64 {
    report
        .phases
        .iter()
        .filter(|p| p.phase == "keygen")
        .map(|p| p.latency.count)
        .sum()
}

#[test]
fn pool_keys_are_reused_across_runs_and_fresh_keys_are_timed() {
    let dir = common::scratch_dir("key-pool");
    let keys: PathBuf = dir.join("keys");
    let pool = KeyPool::new(&keys);
    pool.generate(KeyKind::P256, 4, 2, |_| {})
        .expect("pool filled");

    // A full pool: every key from its slot, none generated, nobody waits, no keygen timed.
    let first = run(&dir, &keys, "first", &scenario("pool", 4));
    assert_eq!(first.report.devices.connected, 4, "{}", first.text);
    let counts = first
        .report
        .key_pool
        .clone()
        .expect("pool counts in the report");
    assert_eq!(
        (counts.from_pool, counts.generated_during_run, counts.waits),
        (4, 0, 0)
    );
    assert_eq!(keygen_count(&first.report), 0);
    assert!(
        first.text.contains("key pool (p256): 4 keys from the pool"),
        "{}",
        first.text
    );
    assert_eq!(first.devices.len(), 4);
    for (id, key) in &first.devices {
        assert_eq!(*key, slot_key(&pool, id), "{id} has its slot's key");
    }

    // The next run hands the same keys to the same devices.
    let again = run(&dir, &keys, "again", &scenario("pool", 4));
    assert_eq!(again.devices, first.devices, "each device reuses its key");

    // A short pool: the missing keys are generated during the run, waited for, reported, and kept.
    let short = run(&dir, &keys, "short", &scenario("pool", 6));
    assert_eq!(short.report.devices.connected, 6, "{}", short.text);
    let counts = short.report.key_pool.clone().unwrap();
    // Each device took its key at once or waited for it; the two missing keys were made in the run.
    assert_eq!(counts.from_pool + counts.waits, 6, "{counts:?}");
    assert_eq!(counts.generated_during_run, 2, "{counts:?}");
    assert_eq!(
        pool.count(KeyKind::P256).unwrap(),
        6,
        "generated keys are kept"
    );
    let (last, key) = short.devices.last().unwrap();
    assert_eq!(last, "pool-005");
    assert_eq!(*key, slot_key(&pool, last));

    // Fresh keys: one keygen per device, no pool section, keys unlike the pool's.
    let fresh = run(&dir, &keys, "fresh", &scenario("fresh", 4));
    assert_eq!(keygen_count(&fresh.report), 4);
    assert!(fresh.report.key_pool.is_none());
    for (id, key) in &fresh.devices {
        assert_ne!(*key, slot_key(&pool, id), "{id} has a fresh key");
    }
    let _ = std::fs::remove_dir_all(&dir);
}
