//! `fleetsim validate` as a user runs it.

use std::process::Command;

/// Runs `fleetsim validate PATH`: whether it passed, and what it printed.
pub(crate) fn validate(path: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
        .arg("validate")
        .arg(path)
        .output()
        .expect("runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn write(name: &str, text: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("fleetsim-validate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_typo_names_file_line_column_and_the_expected_keys() {
    let path = write(
        "typo.yaml",
        "name: typo\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arival_rate: 5/s\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok, "a typo fails validation");
    assert!(out.contains(&format!("{}:7:3:", path.display())), "{out}");
    assert!(
        out.contains("arival_rate")
            && out.contains("expected one of devices, id_pattern, arrival_rate"),
        "{out}"
    );
}

#[test]
fn bad_units_and_values_are_located() {
    let path = write(
        "units.yaml",
        "name: u\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 10\n  arrival_rate: 5 per second\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok);
    assert!(out.contains(&format!("{}:7:17:", path.display())), "{out}");
    assert!(out.contains("expected a rate such as 50/s"), "{out}");

    let path = write(
        "qos.yaml",
        "name: q\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\ntelemetry:\n  qos: 2\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok);
    assert!(
        out.contains(":9:8:") && out.contains("expected 0 or 1"),
        "{out}"
    );
}

#[test]
fn cross_field_rules_are_located() {
    let path = write(
        "aad.yaml",
        "name: a\nduration: 30s\ntarget:\n  remote:\n    ezca: {url: \"https://portal.ezca.io/\"}\n    iothub: {token_env: HUB_TOKEN}\nfleet: {devices: 1, arrival_rate: 1/s}\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok);
    assert!(
        out.contains(&format!("{}:4:3:", path.display())) && out.contains("needs iothub.host"),
        "{out}"
    );
}

#[test]
fn a_bad_threshold_is_located_and_explained() {
    let path = write(
        "threshold.yaml",
        "name: t\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\nthresholds:\n  - failed_devices == 0\n  - \"ca.issue p99 < 500\"\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok, "a bad threshold fails validation");
    assert!(out.contains(&format!("{}:10:5:", path.display())), "{out}");
    assert!(
        out.contains("invalid threshold") && out.contains("invalid duration \"500\""),
        "{out}"
    );

    let path = write(
        "report.yaml",
        "name: r\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\nreport:\n  intervl: 5s\n",
    );
    let (ok, out) = validate(&path);
    assert!(!ok);
    assert!(
        out.contains(":9:3:") && out.contains("unknown field `intervl`, expected one of interval"),
        "{out}"
    );
}

#[test]
fn shipped_scenarios_are_valid() {
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/scenarios")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "yaml") {
            let (ok, out) = validate(&path);
            assert!(ok, "{}: {out}", path.display());
        }
    }
}

/// Values that used to pass (or panic in) validation and then panic at run time: each is refused
/// with its file:line:column and exit status 1, never a panic (101).
#[test]
fn out_of_range_units_are_located_not_a_panic() {
    let cases = [
        (
            "huge-duration.yaml",
            "name: d\nduration: 18446744073709551615s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n",
            ":2:11:",
            "at most 36525 days",
        ),
        (
            "tiny-rate.yaml",
            "name: r\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 0.00000000000000000001/s\n",
            ":7:17:",
            "at least one event per 100 years",
        ),
        (
            "huge-rate.yaml",
            "name: r\nduration: 30s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 2000000000/s\n",
            ":7:17:",
            "one event per nanosecond",
        ),
        (
            "time-scale.yaml",
            "name: t\nduration: 30s\ntime_scale: 5000000000000000000s\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\n",
            ":3:",
            "at most",
        ),
        (
            "scaled-validity.yaml",
            "name: t\nduration: 30s\ntime_scale: 2d\ntarget:\n  embedded: {}\nfleet:\n  devices: 1\n  arrival_rate: 1/s\ncertificate:\n  validity_days: 20000\n",
            ":3:",
            "makes a certificate of 20000 days last",
        ),
    ];
    for (name, text, at, why) in cases {
        let path = write(name, text);
        let out = Command::new(env!("CARGO_BIN_EXE_fleetsim"))
            .arg("validate")
            .arg(&path)
            .output()
            .expect("runs");
        let text = String::from_utf8_lossy(&out.stderr).into_owned()
            + &String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{name}: {text}");
        assert!(
            text.contains(&format!("{}{at}", path.display())),
            "{name}: {text}"
        );
        assert!(text.contains(why), "{name}: {text}");
    }
}
