use std::path::Path;

use super::*;
use crate::iothub::quotas::Sku;

fn scenario(text: &str) -> Scenario {
    crate::scenario::parse(text, Path::new("plan.yaml")).expect("parses")
}

const REMOTE: &str = "target:\n  remote:\n    ezca: {url: 'https://ezca.example/'}\n    iothub: {sku: S1, units: 1}\n";

fn s1_fleet(devices: u32, interval: &str, duration: &str) -> Scenario {
    scenario(&format!(
        "name: quota\nduration: {duration}\n{REMOTE}fleet:\n  devices: {devices}\n  arrival_rate: 50/s\n  registration: bulk\ntelemetry:\n  interval: {interval}\n  qos: 1\n"
    ))
}

fn find<'a>(plan: &'a Plan, what: &str) -> &'a Line {
    plan.lines
        .iter()
        .find(|l| l.what.starts_with(what))
        .unwrap_or_else(|| panic!("no line {what}: {plan:?}"))
}

#[test]
fn five_hundred_devices_at_one_message_a_second_spend_an_s1_units_quota_in_13_minutes() {
    let s = s1_fleet(500, "1s", "1h");
    let plan = plan(&s, scenario_tier(&s), "scenario");
    assert!(plan.remote);
    let quota = find(&plan, "hub: messages against the daily quota");
    assert_eq!(quota.verdict, Verdict::Exceeds, "{quota:?}");
    assert!((quota.per_second.unwrap() - 500.0).abs() < 1e-6);
    // 400,000 / 500 per second = 800 s.
    assert!(quota.note.contains("13.3 min"), "{}", quota.note);
    assert!(quota.limit.contains("400,000"), "{}", quota.limit);
    assert_eq!(plan.exceeding().count(), 1, "{}", plan.to_text());
    // 500 sends a second is over S1's 100/s send throttle too.
    let sends = find(&plan, "hub: device-to-cloud sends");
    assert_eq!(sends.verdict, Verdict::Throttled);
    assert!(sends.note.contains("5.0x"), "{}", sends.note);
    assert!(plan.to_text().contains("EXCEEDS"));
}

#[test]
fn a_run_shorter_than_the_time_to_spend_the_quota_fits_but_says_when_it_would_not() {
    let s = s1_fleet(500, "1s", "10m");
    let plan = plan(&s, scenario_tier(&s), "scenario");
    let quota = find(&plan, "hub: messages against the daily quota");
    assert_eq!(quota.verdict, Verdict::Fits);
    assert!(quota.note.contains("13.3 min"), "{}", quota.note);
    assert_eq!(plan.exceeding().count(), 0);
}

#[test]
fn more_units_or_a_slower_fleet_fit() {
    let s = s1_fleet(500, "1s", "1h");
    let two = HubTier {
        sku: Sku::S1,
        units: 2,
    };
    let plan_two = plan(&s, Some(two), "test");
    // 800,000 a day at 500/s: spent after 26.7 min, still inside an hour.
    assert_eq!(plan_two.exceeding().count(), 1);
    let s3 = HubTier {
        sku: Sku::S3,
        units: 1,
    };
    assert_eq!(plan(&s, Some(s3), "test").exceeding().count(), 0);
    let slow = s1_fleet(500, "10s", "24h");
    // 50 a second is 4,320,000 a day: still over.
    assert_eq!(
        plan(&slow, scenario_tier(&slow), "s").exceeding().count(),
        1
    );
    let slower = s1_fleet(40, "10s", "24h");
    // 4 a second is 345,600 a day: fits.
    let p = plan(&slower, scenario_tier(&slower), "s");
    assert_eq!(p.exceeding().count(), 0, "{}", p.to_text());
}

#[test]
fn bulk_and_per_device_registration_meet_the_registry_throttle_differently() {
    let s = s1_fleet(500, "10s", "1m");
    let p = plan(&s, scenario_tier(&s), "s");
    let reg = find(&p, "hub: registry operations (bulk");
    assert_eq!(reg.total, Some(5.0));
    assert_eq!(reg.verdict, Verdict::Fits);
    let per_device = scenario(&format!(
        "name: r\nduration: 1m\n{REMOTE}fleet:\n  devices: 500\n  arrival_rate: 10/s\n"
    ));
    let p = plan(&per_device, scenario_tier(&per_device), "s");
    let reg = find(&p, "hub: registry operations (one per device)");
    assert_eq!(reg.verdict, Verdict::Throttled);
    assert!(reg.limit.starts_with("100 /min"), "{}", reg.limit);
    let connects = find(&p, "hub: new connections");
    assert_eq!(connects.verdict, Verdict::Fits);
    assert_eq!(find(&p, "hub: identities created").total, Some(500.0));
}

#[test]
fn without_a_tier_hub_lines_are_unknown_and_say_how_to_know() {
    let s = scenario(
        "name: u\nduration: 1m\ntarget:\n  remote:\n    ezca: {url: 'https://e.example/'}\nfleet:\n  devices: 10\n  arrival_rate: 5/s\n",
    );
    assert_eq!(scenario_tier(&s), None);
    let p = plan(&s, None, "not in the scenario");
    let quota = find(&p, "hub: messages against the daily quota");
    assert_eq!(quota.verdict, Verdict::Unknown);
    assert!(quota.note.contains("--check"));
    assert_eq!(p.exceeding().count(), 0);
}

#[test]
fn renewals_and_certificates_follow_the_compressed_lifetime() {
    let s = scenario(
        "name: r\nduration: 60s\ntime_scale: 1s\ntarget: {embedded: {}}\nfleet:\n  devices: 10\n  arrival_rate: 10/s\ncertificate: {validity_days: 10, renew_at: 50%}\n",
    );
    let p = plan(&s, None, "none");
    assert!(!p.remote);
    // A renewal every 5 s per device: 2 a second, 12 per device over 60 s.
    let renew = find(&p, "ca: renewals");
    assert!((renew.per_second.unwrap() - 2.0).abs() < 1e-9);
    assert_eq!(renew.total, Some(120.0));
    assert_eq!(find(&p, "ca: certificates issued").total, Some(130.0));
}

#[test]
fn a_basic_tier_refuses_cloud_to_device_events() {
    let s = scenario(&format!(
        "name: b\nduration: 1m\n{}fleet:\n  devices: 10\n  arrival_rate: 5/s\nevents:\n  - {{at: 10s, c2d: {{body: hi, devices: 50%, rate: 1/s}}}}\n  - {{at: 20s, desired: {{patch: {{a: 1}}, devices: 100%, rate: 2/s}}}}\n",
        REMOTE.replace("S1", "B1")
    ));
    let p = plan(&s, scenario_tier(&s), "s");
    let c2d = find(&p, "hub: cloud-to-device sends");
    assert_eq!(c2d.total, Some(5.0));
    assert_eq!(c2d.verdict, Verdict::Exceeds);
    assert_eq!(find(&p, "hub: twin updates").verdict, Verdict::Exceeds);
    let on_s1 = HubTier {
        sku: Sku::S1,
        units: 1,
    };
    let p = plan(&s, Some(on_s1), "s");
    // S1's C2D throttle is 100 a minute: 1/s fits.
    assert_eq!(
        find(&p, "hub: cloud-to-device sends").verdict,
        Verdict::Fits
    );
}

#[test]
fn numbers_are_grouped() {
    assert_eq!(number(400_000.0), "400,000");
    assert_eq!(number(1.666), "1.7");
    assert_eq!(number(12.0), "12");
    assert_eq!(number(1234567.4), "1,234,567");
}
