//! Unit tests of the C2D queues: limits, expiry, delivery and feedback, purge and throttle.

use super::*;

fn msg(device: &str, id: &str, ack: Ack) -> C2dMessage {
    C2dMessage {
        device_id: device.into(),
        message_id: Some(id.into()),
        correlation_id: None,
        user_id: None,
        content_type: None,
        content_encoding: None,
        expiry_ms: None,
        ack,
        properties: vec![("k".into(), Some("v".into())), ("flag".into(), None)],
        body: Bytes::from_static(b"body"),
    }
}

fn queues() -> C2dQueues {
    C2dQueues::new(C2dLimits::default(), |id| id.starts_with("dev"))
}

#[test]
fn limits_are_the_hubs() {
    let q = queues();
    for i in 0..MAX_PENDING {
        q.enqueue(msg("dev1", &i.to_string(), Ack::None)).unwrap();
    }
    assert_eq!(q.pending("dev1"), 50);
    assert_eq!(
        q.enqueue(msg("dev1", "51", Ack::None)),
        Err(C2dRefusal::QueueFull("dev1".into()))
    );
    assert!(q.enqueue(msg("dev2", "other device", Ack::None)).is_ok());
    assert_eq!(
        q.enqueue(msg("nobody", "x", Ack::None)),
        Err(C2dRefusal::DeviceNotFound("nobody".into()))
    );
    let mut big = msg("dev2", "big", Ack::None);
    big.body = Bytes::from(vec![0; MAX_MESSAGE_BYTES]);
    assert!(matches!(q.enqueue(big), Err(C2dRefusal::TooLarge(_))));
}

#[test]
fn expiry_delivery_and_feedback() {
    let q = queues();
    let mut old = msg("dev1", "old", Ack::Negative);
    old.expiry_ms = Some(now_ms() - 1);
    q.enqueue(old).unwrap();
    q.enqueue(msg("dev1", "a", Ack::Positive)).unwrap();
    q.enqueue(msg("dev1", "b", Ack::Full)).unwrap();
    assert_eq!(q.pending("dev1"), 2, "the expired one is gone");

    let a = q.next_for_delivery("dev1").unwrap();
    assert_eq!(a.message_id.as_deref(), Some("a"));
    assert_eq!(a.properties[1], ("flag".into(), None));
    let b = q.next_for_delivery("dev1").unwrap();
    assert!(q.next_for_delivery("dev1").is_none(), "both in flight");
    q.abandon_in_flight("dev1");
    assert_eq!(
        q.next_for_delivery("dev1").unwrap().message_id,
        a.message_id
    );
    q.next_for_delivery("dev1");
    assert!(q.settle("dev1", Some("a"), FeedbackStatus::Success));
    assert!(q.settle("dev1", b.message_id.as_deref(), FeedbackStatus::Rejected));
    assert!(!q.settle("dev1", Some("a"), FeedbackStatus::Success));
    assert_eq!(q.pending("dev1"), 0);

    let statuses: Vec<_> = q
        .drain_feedback()
        .into_iter()
        .map(|f| (f.original_message_id.unwrap(), f.status))
        .collect();
    assert_eq!(
        statuses,
        [
            ("old".to_string(), FeedbackStatus::Expired),
            ("a".to_string(), FeedbackStatus::Success),
            ("b".to_string(), FeedbackStatus::Rejected),
        ]
    );
}

#[test]
fn purge_and_throttle() {
    let q = C2dQueues::new(
        C2dLimits {
            sends_per_minute: Some(1.0),
            ..Default::default()
        },
        |_| true,
    );
    q.enqueue(msg("d", "1", Ack::Full)).unwrap();
    assert_eq!(
        q.enqueue(msg("d", "2", Ack::None)),
        Err(C2dRefusal::Throttled)
    );
    q.purge("d");
    assert_eq!(q.pending("d"), 0);
    assert_eq!(q.drain_feedback()[0].status, FeedbackStatus::Purged);
}

#[test]
fn refusals_carry_the_hubs_conditions() {
    assert_eq!(
        C2dRefusal::QueueFull("d".into()).condition(),
        "amqp:resource-limit-exceeded"
    );
    assert!(
        C2dRefusal::QueueFull("d".into())
            .description()
            .starts_with("DeviceMaximumQueueDepthExceeded")
    );
}

#[test]
fn a_connection_puts_back_only_what_it_held_and_the_hub_hears_of_it() {
    let q = queues();
    let woken = std::sync::Arc::new(Mutex::new(Vec::<String>::new()));
    let seen = woken.clone();
    q.on_ready(move |id| lock(&seen).push(id.to_string()));
    q.enqueue(msg("dev1", "a", Ack::Positive)).unwrap();
    q.enqueue(msg("dev1", "b", Ack::None)).unwrap();
    assert_eq!(lock(&woken).len(), 2, "each new message wakes the hub");

    let a = q.next_for("dev1", 7).unwrap();
    let b = q.next_for("dev1", 8).unwrap();
    assert_eq!(b.deliveries, 1);
    let (a_token, b_token) = (a.token, b.token);
    let (a, b) = (a.msg, b.msg);
    assert_eq!(
        (a.message_id.as_deref(), b.message_id.as_deref()),
        (Some("a"), Some("b"))
    );
    // Connection 9 held nothing: nothing comes back, nobody is woken.
    q.release("dev1", 9);
    assert_eq!(lock(&woken).len(), 2);
    assert!(q.next_for("dev1", 9).is_none());
    // Connection 8 went away: its message is up for delivery again.
    q.release("dev1", 8);
    assert_eq!(lock(&woken).len(), 3);
    let again = q.next_for("dev1", 10).unwrap();
    assert_eq!(
        (again.msg.message_id.as_deref(), again.deliveries),
        (Some("b"), 2)
    );
    assert_eq!(again.token, b_token, "the same message");

    let done = q
        .settle_token("dev1", a_token, FeedbackStatus::Success)
        .unwrap();
    assert_eq!(done.message_id.as_deref(), Some("a"));
    assert!(
        q.settle_token("dev1", a_token, FeedbackStatus::Success)
            .is_none(),
        "settled once"
    );
    assert!(
        q.settle_token("dev1", b_token, FeedbackStatus::Success)
            .is_some()
    );
    assert_eq!(q.pending("dev1"), 0);
    let stats = q.stats();
    assert_eq!(
        (stats.enqueued, stats.deliveries, stats.completed),
        (2, 3, 2)
    );
    assert_eq!(
        q.drain_feedback().len(),
        1,
        "only a asked for positive feedback"
    );
}

#[test]
fn a_message_put_back_max_deliveries_times_is_dead_lettered() {
    let q = C2dQueues::new(
        C2dLimits {
            max_deliveries: 3,
            ..Default::default()
        },
        |_| true,
    );
    q.enqueue(msg("d", "poison", Ack::Negative)).unwrap();
    for n in 1..=3 {
        let out = q.next_for("d", n).expect("delivered again");
        assert_eq!(out.deliveries, n as u32);
        q.release("d", n);
    }
    assert!(q.next_for("d", 4).is_none());
    assert_eq!(q.pending("d"), 0);
    let feedback = q.drain_feedback();
    assert_eq!(feedback[0].status, FeedbackStatus::DeliveryCountExceeded);
    assert_eq!(q.stats().dead_lettered, 1);
}
