//! The key pool in a run: with `key_source: pool` every device's certificate is for the key in its
//! pool slot, the same in every run, and no `keygen` is recorded; a short pool is topped up and
//! the waits are counted in the report; with `fresh` keys every key is timed as `keygen`.

use std::path::Path;

use fleetsim::crypto::KeyKind;
use fleetsim::crypto::pool::KeyPool;
use fleetsim::fleet::{self, RunOptions};
use fleetsim::report::Report;

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

async fn run(text: &str) -> (Report, Vec<fleetsim::device::DeviceReport>) {
    let scenario = fleetsim::scenario::parse(text, Path::new("pool.yaml")).expect("parses");
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    (outcome.report, outcome.devices)
}

fn keygen_count(report: &Report) -> u64 {
    report
        .phases
        .iter()
        .filter(|p| p.phase == "keygen")
        .map(|p| p.latency.count)
        .sum()
}

/// The public key (SubjectPublicKeyInfo DER) a device's current certificate is for.
fn leaf_key(device: &fleetsim::device::DeviceReport) -> Vec<u8> {
    let (_, cert) = x509_parser::parse_x509_certificate(&device.chain[0]).expect("leaf parses");
    cert.public_key().raw.to_vec()
}

// One test function: it points FLEETSIM_KEY_DIR at a throwaway pool before anything else in this
// process reads the environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_keys_are_reused_across_runs_and_fresh_keys_are_timed() {
    let dir = std::env::temp_dir().join(format!("fleetsim-key-pool-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    // SAFETY: set before any thread of this test process reads the environment.
    unsafe { std::env::set_var("FLEETSIM_KEY_DIR", &dir) };
    let pool = KeyPool::new(&dir);
    pool.generate(KeyKind::P256, 4, 2, |_| {})
        .expect("pool filled");

    // A full pool: every key from its slot, none generated, nobody waits, no keygen timed.
    let (first, devices) = run(&scenario("pool", 4)).await;
    assert_eq!(first.devices.connected, 4, "{}", first.to_text());
    let counts = first.key_pool.clone().expect("pool counts in the report");
    assert_eq!(
        (counts.from_pool, counts.generated_during_run, counts.waits),
        (4, 0, 0)
    );
    assert_eq!(keygen_count(&first), 0);
    assert!(
        first
            .to_text()
            .contains("key pool (p256): 4 keys from the pool")
    );
    for d in &devices {
        let index: u64 = d.id.trim_start_matches("pool-").parse().unwrap();
        let slot = pool
            .load(KeyKind::P256, index)
            .unwrap()
            .expect("slot filled");
        assert_eq!(
            leaf_key(d),
            slot.public_key_der(),
            "{} has its slot's key",
            d.id
        );
    }

    // The next run hands the same keys to the same devices.
    let (_, again) = run(&scenario("pool", 4)).await;
    for (a, b) in devices.iter().zip(&again) {
        assert_eq!(a.id, b.id);
        assert_eq!(leaf_key(a), leaf_key(b), "{} reuses its key", a.id);
    }

    // A short pool: the missing keys are generated during the run, waited for, reported, and kept.
    let (short, devices) = run(&scenario("pool", 6)).await;
    assert_eq!(short.devices.connected, 6, "{}", short.to_text());
    let counts = short.key_pool.clone().unwrap();
    // Each device took its key at once or waited for it; the two missing keys were made in the run.
    assert_eq!(counts.from_pool + counts.waits, 6, "{counts:?}");
    assert_eq!(counts.generated_during_run, 2, "{counts:?}");
    assert_eq!(
        pool.count(KeyKind::P256).unwrap(),
        6,
        "generated keys are kept"
    );
    let last = devices.iter().find(|d| d.id == "pool-005").unwrap();
    let stored = pool.load(KeyKind::P256, 5).unwrap().unwrap();
    assert_eq!(leaf_key(last), stored.public_key_der());

    // Fresh keys: one keygen per device, no pool section, keys unlike the pool's.
    let (fresh, devices) = run(&scenario("fresh", 4)).await;
    assert_eq!(keygen_count(&fresh), 4);
    assert!(fresh.key_pool.is_none());
    let slot0 = pool.load(KeyKind::P256, 0).unwrap().unwrap();
    assert_ne!(leaf_key(&devices[0]), slot0.public_key_der());
    let _ = std::fs::remove_dir_all(&dir);
}
