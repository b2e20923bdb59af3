//! `POST /devices/query` on the hub emulator: twins selected by the query language, paged with
//! `x-ms-max-item-count` and `x-ms-continuation`, `SELECT COUNT()`, and the 400s IoT Hub answers
//! for a query it cannot parse (naming the column) or paging headers it cannot use.

use fleetsim::clock::Clock;
use fleetsim::device::DeviceRegistry;
use fleetsim::device::adapters::HubRegistry;
use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{self, Service};

fn ids(items: &Value) -> Vec<String> {
    items
        .as_array()
        .expect("an array of twins")
        .iter()
        .map(|t| t["deviceId"].as_str().unwrap().to_string())
        .collect()
}

/// Seven devices, `q-0`..`q-6`; the even ones tagged `site: oslo`, `q-3` connected.
async fn fleet(e: &fleetsim::emulator::Emulators, s: &Service) -> common::RawMqtt {
    let registry = HubRegistry(common::registry(e));
    for i in 0..7 {
        let id = format!("q-{i}");
        registry.register(&id).await.unwrap();
        let site = if i % 2 == 0 { "oslo" } else { "rome" };
        let body = json!({"tags": {"site": site, "rank": i}});
        let a = s
            .call(Method::PATCH, &format!("/twins/{id}"), &[], Some(&body))
            .await;
        assert_eq!(a.status, 200);
    }
    common::online(e, "q-3").await
}

#[tokio::test]
async fn queries_select_twins_and_page_through_them() {
    let e = common::start_emulators(Clock::real()).await;
    let s = Service::new(&e);
    let _q3 = fleet(&e, &s).await;

    let all = s.query("SELECT * FROM devices", &[]).await;
    assert_eq!(all.status, 200, "{:?}", all.body);
    assert_eq!(all.header("x-ms-item-type"), Some("twin"));
    assert_eq!(
        all.header("x-ms-continuation"),
        None,
        "one page holds them all"
    );
    assert_eq!(
        ids(&all.body),
        ["q-0", "q-1", "q-2", "q-3", "q-4", "q-5", "q-6"]
    );
    assert_eq!(all.body[0]["tags"]["site"], "oslo");

    let oslo = "SELECT * FROM devices WHERE tags.site = 'oslo' AND tags.rank > 0";
    assert_eq!(ids(&s.query(oslo, &[]).await.body), ["q-2", "q-4", "q-6"]);
    let online = "select * from devices where connectionState = 'Connected'";
    assert_eq!(ids(&s.query(online, &[]).await.body), ["q-3"]);
    let listed = "SELECT * FROM devices WHERE deviceId IN ['q-1', 'q-5'] OR NOT tags.rank < 6";
    assert_eq!(ids(&s.query(listed, &[]).await.body), ["q-1", "q-5", "q-6"]);

    // Pages of 3: the continuation token leads through all of them, in order.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut headers = vec![("x-ms-max-item-count", "3")];
        if let Some(t) = &token {
            headers.push(("x-ms-continuation", t.as_str()));
        }
        let page = s.query("SELECT * FROM devices", &headers).await;
        assert_eq!(page.status, 200, "{:?}", page.body);
        pages += 1;
        seen.extend(ids(&page.body));
        match page.header("x-ms-continuation") {
            Some(t) => token = Some(t.to_string()),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ["q-0", "q-1", "q-2", "q-3", "q-4", "q-5", "q-6"]);

    let count = s
        .query(
            "SELECT COUNT() AS n FROM devices WHERE tags.site = 'rome'",
            &[],
        )
        .await;
    assert_eq!(count.header("x-ms-item-type"), Some("raw"));
    assert_eq!(count.body, json!([{"n": 3}]));
    assert_eq!(e.hub.stats().queries, 8);
    e.shutdown().await;
}

#[tokio::test]
async fn queries_it_cannot_run_are_400() {
    let e = common::start_emulators(Clock::real()).await;
    let s = Service::new(&e);
    let _q3 = fleet(&e, &s).await;

    let bad = s
        .query("SELECT * FROM devices WHERE tags.site = = 'x'", &[])
        .await;
    assert_eq!((bad.status, bad.error_code()), (400, Some(400004)));
    assert_eq!(bad.header("iothub-errorcode"), Some("ArgumentInvalid"));
    let message = bad.error_message();
    assert!(message.contains("The query is invalid"), "{message}");
    assert!(message.contains("column 41"), "{message}");

    let first = s
        .query("SELECT * FROM devices", &[("x-ms-max-item-count", "2")])
        .await;
    let token = first.header("x-ms-continuation").unwrap().to_string();
    let other = s
        .query(
            "SELECT * FROM devices WHERE tags.rank > 1",
            &[("x-ms-continuation", token.as_str())],
        )
        .await;
    assert_eq!(other.status, 400, "a token continues its own query only");
    for count in ["0", "-1", "lots"] {
        let a = s
            .query("SELECT * FROM devices", &[("x-ms-max-item-count", count)])
            .await;
        assert_eq!(a.status, 400, "x-ms-max-item-count {count}");
    }
    let large = s
        .query("SELECT * FROM devices", &[("x-ms-max-item-count", "5000")])
        .await;
    assert_eq!(ids(&large.body).len(), 7, "more than 100 counts as 100");
    let no_query = s
        .call(
            Method::POST,
            "/devices/query",
            &[],
            Some(&json!({"sql": "x"})),
        )
        .await;
    assert_eq!(no_query.status, 400);
    let stats = e.hub.stats();
    assert_eq!((stats.queries, stats.queries_invalid), (2, 6));
    e.shutdown().await;
}
