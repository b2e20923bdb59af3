//! What the cloud side has for a live device connection: publishes the REST side hands over
//! (desired-property notifications, direct-method requests), which the connection's session
//! writes out between the device's own packets, and what the device subscribed to (the hub
//! delivers a notification or a method only to a device subscribed to its topic).
//!
//! A queue under a lock and a [`Notify`] rather than a channel: an idle connection's outbox holds
//! no buffer, which matters at tens of thousands of connections. It is bounded: a device that
//! stops reading does not make the hub hold an unbounded backlog for it.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rumqttc::mqttbytes::v4::Publish;
use tokio::sync::Notify;

use crate::sync::lock;

/// The most publishes waiting for one connection.
pub(super) const MAX_QUEUED: usize = 64;

/// The topic filters that decide what the cloud may push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Subscription {
    /// `$iothub/twin/PATCH/properties/desired/#`
    Desired,
    /// `$iothub/methods/POST/#`
    Methods,
}

#[derive(Default)]
pub(super) struct Outbox {
    queue: Mutex<VecDeque<Publish>>,
    ready: Notify,
    desired: AtomicBool,
    methods: AtomicBool,
}

impl Outbox {
    /// Queues `publish` for the connection; false if the queue is full.
    pub(super) fn push(&self, publish: Publish) -> bool {
        let mut queue = lock(&self.queue);
        if queue.len() >= MAX_QUEUED {
            return false;
        }
        queue.push_back(publish);
        drop(queue);
        // A stored permit: a session that is not waiting yet still sees it.
        self.ready.notify_one();
        true
    }

    /// Wakes the session without a publish: a cloud-to-device message is waiting for it in the
    /// hub's queues, which the session takes from itself.
    pub(super) fn wake(&self) {
        self.ready.notify_one();
    }

    /// Everything queued so far, oldest first.
    pub(super) fn take(&self) -> VecDeque<Publish> {
        std::mem::take(&mut *lock(&self.queue))
    }

    /// Resolves once something was pushed since the last wait.
    pub(super) async fn ready(&self) {
        self.ready.notified().await;
    }

    pub(super) fn subscribe(&self, to: Subscription) {
        self.flag(to).store(true, Ordering::Relaxed);
    }

    pub(super) fn subscribed(&self, to: Subscription) -> bool {
        self.flag(to).load(Ordering::Relaxed)
    }

    fn flag(&self, to: Subscription) -> &AtomicBool {
        match to {
            Subscription::Desired => &self.desired,
            Subscription::Methods => &self.methods,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;

    #[tokio::test]
    async fn pushes_wake_the_session_and_the_queue_is_bounded() {
        let outbox = Outbox::default();
        assert!(!outbox.subscribed(Subscription::Methods));
        outbox.subscribe(Subscription::Methods);
        assert!(outbox.subscribed(Subscription::Methods));
        assert!(!outbox.subscribed(Subscription::Desired));

        assert!(outbox.push(Publish::new("a", QoS::AtMostOnce, b"1".to_vec())));
        // The permit was stored before anyone waited.
        tokio::time::timeout(std::time::Duration::from_secs(1), outbox.ready())
            .await
            .expect("woken");
        assert_eq!(outbox.take().len(), 1);
        for _ in 0..MAX_QUEUED {
            assert!(outbox.push(Publish::new("b", QoS::AtMostOnce, Vec::new())));
        }
        assert!(!outbox.push(Publish::new("c", QoS::AtMostOnce, Vec::new())));
        assert_eq!(outbox.take().len(), MAX_QUEUED);
    }
}
