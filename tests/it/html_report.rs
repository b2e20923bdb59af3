//! The HTML report as a person opens it: a shortened quickstart runs through the library, its
//! report is written, and Debian's `chromium` renders it headless. The charts must be laid out
//! (every chart an SVG with a real size and curves of non-zero length), the page must raise no
//! script error, and the file must stand alone (nothing loaded over the network).
//!
//! Needs `chromium` on the PATH (`./scripts/test` installs Debian's package); without it the
//! test fails and says so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use fleetsim::fleet::{self, RunOptions};

/// Stands in for the page's own scripts' error reporting: records every error into the DOM,
/// so `--dump-dom` shows it. Inserted first in `<head>`, before anything else can run.
const ERROR_RECORDER: &str = "<script>window.__errors=[];\
window.addEventListener('error',function(e){window.__errors.push(String(e.message))});\
window.addEventListener('unhandledrejection',function(e){window.__errors.push(String(e.reason))});\
</script>";

/// Runs once the page has loaded (so after any script of the report): measures what Chromium
/// laid out and writes it into `<pre id="probe">` as JSON.
const PROBE: &str = "<script>window.addEventListener('load',function(){\
var svgs=Array.from(document.querySelectorAll('svg')).map(function(s){\
var r=s.getBoundingClientRect();\
var lines=Array.from(s.querySelectorAll('polyline,path,line')).map(function(l){return l.getTotalLength()});\
return {id:s.id,w:r.width,h:r.height,curves:s.querySelectorAll('polyline').length,shapes:lines.length,drawn:lines.filter(function(n){return n>0}).length}});\
var p=document.createElement('pre');p.id='probe';\
p.textContent=JSON.stringify({errors:window.__errors,svgs:svgs,height:document.body.scrollHeight});\
document.body.appendChild(p)});</script>";

fn chromium() -> PathBuf {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("chromium"))
            .find(|p| p.is_file())
    });
    found.unwrap_or_else(|| {
        panic!(
            "chromium is not installed: this test renders the HTML report in Debian's headless \
             chromium (./scripts/test installs it)"
        )
    })
}

fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .map(|s| {
            s.lines()
                .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

/// Runs headless chromium on `page` with `args`, bounded in time; returns (stdout, stderr).
fn run_chromium(page: &Path, profile: &Path, args: &[String]) -> (String, String) {
    let mut command = Command::new(chromium());
    command.args([
        "--headless",
        "--disable-gpu",
        "--no-first-run",
        "--disable-extensions",
        "--disable-background-networking",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=3000",
    ]);
    // Chromium refuses to run as root with its sandbox (CI runs as root).
    if running_as_root() {
        command.arg("--no-sandbox");
    }
    command
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(args)
        .arg(format!("file://{}", page.display()));
    // Killed when it hangs rather than hanging the test suite.
    let output = crate::common::output_within(&mut command, Duration::from_secs(90));
    assert!(
        output.status.success(),
        "chromium failed ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    (
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Every place an HTML page or its CSS can load something from: none may be remote.
fn remote_references(html: &str) -> Vec<String> {
    let lower = html.to_ascii_lowercase();
    let mut found = Vec::new();
    for attr in [
        "src=", "href=", "url(", "@import", "srcset=", "action=", "data=",
    ] {
        for (at, _) in lower.match_indices(attr) {
            let value = lower[at + attr.len()..]
                .trim_start_matches(['"', '\'', ' '])
                .to_string();
            if value.starts_with("http:") || value.starts_with("https:") || value.starts_with("//")
            {
                found.push(html[at..(at + 80).min(html.len())].to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_quickstart_report_renders_in_headless_chromium() {
    // The quickstart as shipped, shortened: 50 devices for 12 s instead of 500 for 45 s.
    let quickstart = Path::new(env!("CARGO_MANIFEST_DIR")).join("scenarios/quickstart.yaml");
    let text = std::fs::read_to_string(&quickstart).expect("scenarios/quickstart.yaml");
    assert!(
        text.contains("\n  devices: 500\n") && text.contains("\nduration: 45s\n"),
        "scenarios/quickstart.yaml no longer has `devices: 500` and `duration: 45s`"
    );
    let shortened = text
        .replacen("\n  devices: 500\n", "\n  devices: 50\n", 1)
        .replacen("\nduration: 45s\n", "\nduration: 12s\n", 1);
    let text = shortened;
    let scenario = fleetsim::scenario::parse(&text, &quickstart).expect("quickstart parses");
    let outcome = fleet::run(&scenario, &RunOptions::default(), std::future::pending())
        .await
        .expect("run completes");
    assert_eq!(outcome.report.devices.connected, 50);

    let dir = std::env::temp_dir().join(format!("fleetsim-html-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let report = dir.join("report.html");
    fleetsim::report::html::write_html(&outcome.report, &text, &report).unwrap();
    let html = std::fs::read_to_string(&report).unwrap();

    // One file that opens offline: nothing to fetch from anywhere.
    let remote = remote_references(&html);
    assert!(
        remote.is_empty(),
        "the report loads remote resources: {remote:?}"
    );
    let charts = html.matches("<svg").count();
    assert!(charts >= 4, "expected a chart per phase, found {charts}");

    // The page as Chromium renders it, with the error recorder and the probe added.
    let probed = html
        .replacen("<head>", &format!("<head>{ERROR_RECORDER}"), 1)
        .replacen("</body>", &format!("{PROBE}</body>"), 1);
    let page = dir.join("probed.html");
    std::fs::write(&page, probed).unwrap();
    let (dom, log) = run_chromium(&page, &dir.join("profile"), &["--dump-dom".into()]);
    let probe = dom
        .split_once("<pre id=\"probe\">")
        .and_then(|(_, rest)| rest.split_once("</pre>"))
        .map(|(json, _)| json.replace("&quot;", "\""))
        .unwrap_or_else(|| panic!("the probe did not run; the DOM was:\n{dom}\n{log}"));
    let probe: serde_json::Value = serde_json::from_str(&probe).expect("probe JSON");
    assert_eq!(probe["errors"], serde_json::json!([]), "script errors");
    assert!(
        !log.contains("Uncaught"),
        "console errors in chromium's log:\n{log}"
    );
    let svgs = probe["svgs"].as_array().unwrap();
    assert_eq!(svgs.len(), charts, "every chart is in the rendered DOM");
    for svg in svgs {
        assert!(svg["w"].as_f64().unwrap() >= 100.0, "{svg}");
        assert!(svg["h"].as_f64().unwrap() >= 100.0, "{svg}");
        // Grid lines and at least one curve, all with a length on the page.
        assert!(svg["curves"].as_u64().unwrap() >= 1, "{svg}");
        assert!(svg["shapes"].as_u64().unwrap() > 2, "{svg}");
        assert_eq!(svg["drawn"], svg["shapes"], "{svg}");
    }

    // The run over time: throughput, latency per phase, device states and renewal events, each
    // laid out and drawn like the others (checked above), with one curve per series at least.
    let ids: Vec<&str> = svgs.iter().filter_map(|s| s["id"].as_str()).collect();
    for id in [
        "timeline-throughput",
        "timeline-latency-ca.issue",
        "timeline-latency-mqtt.publish",
        "timeline-states",
        "timeline-events",
    ] {
        assert!(ids.contains(&id), "no over-time chart {id} in {ids:?}");
    }
    let curves = |id: &str| {
        svgs.iter()
            .find(|s| s["id"] == id)
            .and_then(|s| s["curves"].as_u64())
            .unwrap_or(0)
    };
    assert!(
        curves("timeline-throughput") >= 3,
        "acked, enrolments, connects"
    );
    assert!(curves("timeline-latency-ca.issue") >= 2, "p50 and p99");
    assert!(curves("timeline-states") >= 1);
    assert!(curves("timeline-events") >= 2, "ca.renew ok and failed");
    // The timeline itself: a point per 5 s interval and one at the end, summing to the totals.
    let timeline = outcome.report.timeline.as_ref().expect("a timeline");
    assert!(timeline.points.len() >= 3, "{:?}", timeline.points.len());
    let last = timeline.points.last().unwrap();
    assert_eq!(last.messages_acked, outcome.report.messages.acked);
    let issued: u64 = timeline
        .points
        .iter()
        .filter_map(|p| p.phases.get("ca.issue"))
        .map(|p| p.ok)
        .sum();
    assert_eq!(issued, 50, "every enrolment in some interval");

    // And a picture of it, as a person would see it (kept in the temp dir for a look).
    let shot = dir.join("report.png");
    run_chromium(
        &report,
        &dir.join("profile"),
        &[
            format!("--screenshot={}", shot.display()),
            "--window-size=1280,2400".into(),
            "--hide-scrollbars".into(),
        ],
    );
    let png = std::fs::read(&shot).expect("chromium wrote the screenshot");
    assert_eq!(&png[1..4], b"PNG");
    assert!(
        png.len() > 20_000,
        "a nearly empty screenshot ({} bytes)",
        png.len()
    );
    if std::env::var_os("FLEETSIM_KEEP_SCREENSHOT").is_none() {
        std::fs::remove_dir_all(&dir).ok();
    } else {
        eprintln!("screenshot kept at {}", shot.display());
    }
}
