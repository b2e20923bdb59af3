//! `fleetsim keys generate` and `fleetsim keys list` as a user runs them: keys land in the pool
//! directory readable by the owner only, existing keys are kept, and the list counts them.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn fleetsim(args: &[&str], dir: &Path) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .args(args)
        .arg("--dir")
        .arg(dir)
        .output()
        .expect("fleetsim runs")
}

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn generate_fills_the_pool_with_private_files_and_list_counts_them() {
    let dir = std::env::temp_dir().join(format!("fleetsim-keys-cmd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let out = fleetsim(
        &["keys", "generate", "--kind", "p256", "--count", "5"],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("p256: 5 keys"), "{stdout}");
    let kind_dir = dir.join("p256");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&kind_dir), 0o700);
    let first = kind_dir.join("00000000.pem");
    assert_eq!(mode(&first), 0o600);
    let pem = std::fs::read_to_string(&first).unwrap();
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----"));
    // The progress display went to stderr, never the key.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("PRIVATE KEY"));

    // Topping up keeps what is there.
    let out = fleetsim(
        &["keys", "generate", "--kind", "p256", "--count", "7"],
        &dir,
    );
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("2 generated") && stdout.contains("5 already there"),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&first).unwrap(), pem);

    let out = fleetsim(&["keys", "list"], &dir);
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = |kind: &str| {
        stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(kind))
            .map(|l| l.split_whitespace().nth(1).unwrap().to_string())
    };
    assert_eq!(line("p256").as_deref(), Some("7"), "{stdout}");
    assert_eq!(line("rsa-2048").as_deref(), Some("0"), "{stdout}");

    let out = fleetsim(
        &["keys", "generate", "--kind", "rsa-1024", "--count", "1"],
        &dir,
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected one of p256"));
    let _ = std::fs::remove_dir_all(&dir);
}
