//! The live web page as a person watches it: a short run with a revocation event serves its
//! page (`RunOptions::web_listener`), and Debian's headless `chromium`, driven through the
//! DevTools protocol, opens it while the run goes on. The map must draw every device, in the
//! states the run put them (all online before the revocation, the revoked ones red after it),
//! the revocation must appear on the event timeline, and the page must raise no script error.
//! Then the run's JSON report is replayed (`fleetsim report --web`) and must draw the same
//! final picture.
//!
//! A screenshot of the live page near the end is left at `target/web-view.png`.

mod cdp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use fleetsim::fleet::{self, RunOptions};
use fleetsim::web::{Replay, WebView};
use serde_json::Value;

const DEVICES: u64 = 50;
/// 10% of 50, rounded up.
const REVOKED: u64 = 5;

const SCENARIO: &str = r#"
name: web-view
seed: 7
duration: 12s
target:
  embedded:
    ca:
      disable_device_on_revoke: true
fleet:
  devices: 50
  arrival_rate: 50/s
  registration: bulk
certificate:
  key: p256
  validity_days: 30
telemetry:
  interval: 1s
  qos: 1
events:
  - at: 6s
    revoke: 10%
    method: admin
thresholds:
  - revoked_online == 0
"#;

/// What the page shows now: the devices drawn per state, the frame's time, whether it is the
/// final one, and the kinds of the events on the timeline.
const PROBE: &str = "JSON.stringify(window.fleetsim && window.fleetsim.frame ? {\
drawn: fleetsim.drawn, t: fleetsim.frame.t, done: fleetsim.frame.done, frames: fleetsim.frames,\
verdict: fleetsim.frame.verdict,\
badges: Array.from(document.querySelectorAll('#thresholds .badge')).map(function(b){return b.textContent}),\
events: Array.from(document.querySelectorAll('#events li')).map(function(li){return li.dataset.kind})\
} : null)";

async fn probe(browser: &mut cdp::Browser) -> Option<Value> {
    let text = browser.eval(PROBE).await;
    // `null` until the page has its first frame.
    serde_json::from_str(text.as_str()?)
        .ok()
        .filter(|v: &Value| !v.is_null())
}

fn drawn(v: &Value, state: &str) -> u64 {
    v["drawn"][state].as_u64().unwrap_or(0)
}

fn total(v: &Value) -> u64 {
    v["drawn"]
        .as_object()
        .map_or(0, |m| m.values().filter_map(Value::as_u64).sum())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_live_page_draws_the_fleet_and_its_revocation_and_the_replay_matches() {
    let scenario = fleetsim::scenario::parse(SCENARIO, std::path::Path::new("web.yaml")).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    let options = RunOptions {
        web_listener: Some(Arc::new(listener)),
        ..RunOptions::default()
    };
    let run =
        tokio::spawn(
            async move { fleet::run(&scenario, &options, std::future::pending::<()>()).await },
        );
    // The page is served from the start of the run (after bulk registration).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let mut browser = cdp::Browser::open(&url).await;
    let started = Instant::now();
    let (mut before, mut last, mut shot) = (None::<Value>, None::<Value>, None);
    while started.elapsed() < Duration::from_secs(25) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let Some(now) = probe(&mut browser).await else {
            continue;
        };
        assert_eq!(total(&now), DEVICES, "every device drawn once: {now}");
        let t = now["t"].as_f64().unwrap();
        // The last picture before the revocation at 6 s.
        if (2.0..5.8).contains(&t) {
            before = Some(now.clone());
        }
        if t > 10.0 && shot.is_none() {
            shot = Some(browser.screenshot().await);
        }
        let done = now["verdict"] == Value::Bool(true);
        last = Some(now);
        if done {
            break;
        }
    }
    let outcome = tokio::time::timeout(Duration::from_secs(40), run)
        .await
        .expect("the run ends")
        .unwrap()
        .unwrap();
    let before = before.expect("the page was updated between 2 s and 5.8 s");
    assert_eq!(
        drawn(&before, "online"),
        DEVICES,
        "before the revocation: {before}"
    );
    let last = last.expect("the page showed the run");
    assert_eq!(
        last["done"],
        Value::Bool(true),
        "the final frame came: {last}"
    );
    assert_eq!(drawn(&last, "revoked"), REVOKED, "{last}");
    assert_eq!(drawn(&last, "online"), DEVICES - REVOKED, "{last}");
    assert_eq!(last["events"], serde_json::json!(["revoke"]), "{last}");
    // The report's verdict reaches the live page before it stops.
    assert_eq!(last["verdict"], Value::Bool(true), "{last}");
    assert_eq!(last["badges"], serde_json::json!(["PASS"]), "{last}");
    assert!(
        browser.errors.is_empty(),
        "script errors: {:?}",
        browser.errors
    );
    let shot = shot.expect("a screenshot near the end");
    assert!(shot.starts_with(b"\x89PNG"));
    let target = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    std::fs::write(target.join("web-view.png"), &shot).unwrap();

    // The report keeps the same final picture, and its replay draws it.
    let report = &outcome.report;
    let map = report.fleet_map.as_ref().expect("the report has a map");
    let counts = map.counts().unwrap();
    assert_eq!(counts.get("revoked"), Some(&REVOKED));
    assert_eq!(counts.get("online"), Some(&(DEVICES - REVOKED)));
    let json = serde_json::to_string(report).unwrap();
    let replayed: fleetsim::report::Report = serde_json::from_str(&json).unwrap();
    let replay_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let replay_url = format!("http://{}/", replay_listener.local_addr().unwrap());
    let view = WebView::Replay(Replay::new(&replayed).unwrap());
    let stop = tokio_util::sync::CancellationToken::new();
    let server = tokio::spawn(fleetsim::web::serve(
        replay_listener,
        view,
        stop.clone().cancelled_owned(),
    ));
    browser.navigate(&replay_url).await;
    let mut replay = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if let Some(v) = probe(&mut browser).await {
            replay = Some(v);
            break;
        }
    }
    let replay = replay.expect("the replay page drew");
    assert_eq!(
        replay["drawn"], last["drawn"],
        "replay {replay} vs live {last}"
    );
    assert_eq!(replay["events"], last["events"]);
    // Hovering a device asks for its id, expiry and last error: a revoked one names its refusal.
    let revoked = browser
        .eval(
            "Promise.all(Array.from({length: 50}, function(_, i) {\
             return fetch('/device/' + i).then(function(r) { return r.json() }) }))\
             .then(function(ds) { return ds.filter(function(d) { return d.state === 'revoked' }) })",
        )
        .await;
    let revoked = revoked.as_array().unwrap();
    assert_eq!(revoked.len() as u64, REVOKED, "{revoked:?}");
    for d in revoked {
        assert!(d["not_after"].as_u64().is_some_and(|n| n > 0), "{d}");
        assert!(
            d["last_error"]
                .as_str()
                .is_some_and(|e| e.starts_with("mqtt.")),
            "{d}"
        );
    }
    assert!(
        browser.errors.is_empty(),
        "script errors: {:?}",
        browser.errors
    );
    stop.cancel();
    server.await.unwrap().unwrap();
}

/// Not a test but the tool behind the README's screenshot: opens the page at `FLEETSIM_WEB_URL`
/// (e.g. a `fleetsim run --web` of scenarios/demo.yaml), waits `FLEETSIM_SHOT_AFTER` seconds
/// (default 3) and saves a PNG to `FLEETSIM_SHOT` (default target/web-shot.png).
/// `FLEETSIM_WEB_URL=http://127.0.0.1:8080/ cargo test --test it web_view::screenshot -- --ignored`
#[tokio::test]
#[ignore = "a tool: needs a page served by a running fleetsim"]
async fn screenshot() {
    let url = std::env::var("FLEETSIM_WEB_URL").expect("FLEETSIM_WEB_URL");
    let after: u64 = std::env::var("FLEETSIM_SHOT_AFTER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    let out = std::env::var("FLEETSIM_SHOT")
        .unwrap_or_else(|_| format!("{}/target/web-shot.png", env!("CARGO_MANIFEST_DIR")));
    let mut browser = cdp::Browser::open(&url).await;
    tokio::time::sleep(Duration::from_secs(after)).await;
    let shown = probe(&mut browser).await;
    std::fs::write(&out, browser.screenshot().await).unwrap();
    println!("{out}: {shown:?}, script errors: {:?}", browser.errors);
}
