//! `fleetsim collect` in-process: what it accepts (our shards' reports and failures, once each),
//! what it refuses and with which status, the token, arrivals kept on disk and taken over by a
//! collector that restarts, and the verdict over what arrived.

use std::path::Path;
use std::sync::Arc;

use fleetsim::distributed::{Collector, Shards, Verdict, delivery};
use fleetsim::report::Report;
use tokio_util::sync::CancellationToken;

use crate::common::scratch_dir;

fn report(scenario: &str, shard: Option<&str>) -> Report {
    let snapshot = fleetsim::metrics::Recorder::new().snapshot();
    let mut r = Report::new(
        scenario,
        "remote",
        "2026-12-01T10:00:00Z".into(),
        1.0,
        snapshot,
    )
    .unwrap();
    r.shard = shard.map(str::to_string);
    r.devices.planned = 5;
    r
}

/// Serves `collector` on a free loopback port until `stop`; its URL.
async fn serve(collector: Arc<Collector>, stop: &CancellationToken) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(collector.serve(listener, stop.clone().cancelled_owned()));
    url
}

async fn post(url: &str, token: Option<&str>, body: Vec<u8>) -> u16 {
    let mut request = reqwest::Client::new()
        .post(format!("{url}/reports"))
        .body(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap().status().as_u16()
}

fn json(r: &Report) -> Vec<u8> {
    serde_json::to_vec(r).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_collector_admits_each_shard_once_and_refuses_the_rest() {
    let out = scratch_dir("collector-admits");
    let shards = Shards::new(2, Some("c".into()));
    let collector = Collector::load(shards, &out, Some("s3cret".into())).unwrap();
    let stop = CancellationToken::new();
    let url = serve(collector.clone(), &stop).await;
    let ours = json(&report("c", Some("0/2")));

    assert_eq!(post(&url, None, ours.clone()).await, 401, "no token");
    assert_eq!(
        post(&url, Some("s3cres"), ours.clone()).await,
        401,
        "wrong token"
    );
    let t = Some("s3cret");
    assert_eq!(post(&url, t, b"{not json".to_vec()).await, 400);
    assert_eq!(
        post(&url, t, br#"{"schema":"other/v9"}"#.to_vec()).await,
        400
    );
    assert_eq!(
        post(&url, t, json(&report("c", None))).await,
        422,
        "not a shard"
    );
    assert_eq!(
        post(&url, t, json(&report("c", Some("0/3")))).await,
        422,
        "of 3"
    );
    assert_eq!(
        post(&url, t, json(&report("d", Some("1/2")))).await,
        422,
        "scenario d"
    );
    assert_eq!(post(&url, t, ours.clone()).await, 201);
    assert_eq!(post(&url, t, ours).await, 409, "shard 0/2 twice");

    let status: serde_json::Value = reqwest::get(format!("{url}/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["arrived"], serde_json::json!(["0/2"]));
    assert_eq!(status["missing"], serde_json::json!(["1/2"]));
    assert!(
        out.join("shards/shard-0-of-2.json").is_file(),
        "kept before the 201"
    );
    stop.cancel();
    std::fs::remove_dir_all(&out).ok();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_collector_takes_over_and_names_a_failed_shard() {
    let out = scratch_dir("collector-restart");
    let first = Collector::load(Shards::new(3, None), &out, None).unwrap();
    let stop = CancellationToken::new();
    let url = serve(first, &stop).await;
    assert_eq!(post(&url, None, json(&report("c", Some("2/3")))).await, 201);
    stop.cancel();

    // A new collector (the pod was rescheduled) over the same volume.
    let second = Collector::load(Shards::new(3, None), &out, None).unwrap();
    assert_eq!(second.shards().arrived.len(), 1, "2/3 was kept");
    let stop = CancellationToken::new();
    let url = serve(second.clone(), &stop).await;
    let reports = format!("{url}/reports");
    delivery::notify_failure(&reports, "0/3", "EZCA: 403 Forbidden")
        .await
        .unwrap();
    let mut interrupted = report("c", Some("1/3"));
    interrupted.interrupted = true;
    delivery::deliver_report(&reports, &interrupted)
        .await
        .unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), second.all_arrived())
        .await
        .expect("all three arrived");
    stop.cancel();

    let verdict = Verdict::judge(&second.shards(), None).unwrap();
    assert!(!verdict.passed());
    let text = verdict.to_text();
    assert!(
        text.contains("shard 0/3 failed: EZCA: 403 Forbidden"),
        "{text}"
    );
    assert!(
        text.contains("shard 1/3 was stopped before its end"),
        "{text}"
    );
    let merged = verdict.merged.expect("two reports merged");
    assert_eq!(merged.devices.planned, 10);
    assert_eq!(
        merged.merged_from,
        vec!["shard-1-of-3.json", "shard-2-of-3.json"]
    );
    // The failure notice is kept beside the reports, but not as a report.
    assert!(out.join("shards/shard-0-of-3.failed").is_file());
    let files = fleetsim::report::merge::report_files(&[out.join("shards")]).unwrap();
    assert_eq!(files.len(), 2);
    assert!(Path::new(&files[0]).ends_with("shard-1-of-3.json"));
    std::fs::remove_dir_all(&out).ok();
}

#[test]
fn a_run_with_every_shard_passing_passes() {
    let mut shards = Shards::new(2, None);
    for i in 0..2 {
        let shard = format!("{i}/2");
        shards
            .admit_report(format!("r{i}.json"), report("c", Some(&shard)))
            .unwrap();
    }
    let thresholds = ["failed_devices == 0".parse().unwrap()];
    let verdict = Verdict::judge(&shards, Some(&thresholds)).unwrap();
    assert!(verdict.passed(), "{}", verdict.to_text());
    let merged = verdict.merged.unwrap();
    assert_eq!(merged.thresholds.len(), 1);
    assert_eq!(merged.devices.planned, 10);
}
