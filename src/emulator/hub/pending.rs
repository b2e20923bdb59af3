//! Direct-method invocations waiting for their device's answer, by request id (`$rid`): the REST
//! call registers one and waits; the device's `$iothub/methods/res/{status}/?$rid={rid}` resolves
//! it. An id is answered once, and only by the device it was sent to.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tokio::sync::oneshot;

use crate::sync::lock;

/// What the device answered.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DeviceAnswer {
    /// A status and a JSON payload (`null` for an empty one).
    Answered { status: i32, payload: Value },
    /// Not something the hub can pass on (payload not JSON, status not a number, too large).
    Malformed(String),
}

#[derive(Default)]
pub(super) struct Pending {
    next_rid: AtomicU64,
    waiting: Mutex<HashMap<u64, (String, oneshot::Sender<DeviceAnswer>)>>,
}

impl Pending {
    /// A fresh request id for a call to `device`, and where its answer will arrive.
    pub(super) fn register(&self, device: &str) -> (String, oneshot::Receiver<DeviceAnswer>) {
        let rid = self.next_rid.fetch_add(1, Ordering::Relaxed) + 1;
        let (send, receive) = oneshot::channel();
        lock(&self.waiting).insert(rid, (device.to_string(), send));
        (rid.to_string(), receive)
    }

    /// Hands `answer` to the call `rid` if `device` owes it; false for an unknown, answered or
    /// abandoned id, or another device's.
    pub(super) fn resolve(&self, device: &str, rid: &str, answer: DeviceAnswer) -> bool {
        let Ok(id) = rid.parse::<u64>() else {
            return false;
        };
        let mut waiting = lock(&self.waiting);
        if waiting.get(&id).is_none_or(|(owner, _)| owner != device) {
            return false;
        }
        let Some((_, send)) = waiting.remove(&id) else {
            return false;
        };
        drop(waiting);
        send.send(answer).is_ok()
    }

    /// Gives up on `rid` (the call timed out or failed).
    pub(super) fn forget(&self, rid: &str) {
        if let Ok(id) = rid.parse::<u64>() {
            lock(&self.waiting).remove(&id);
        }
    }

    pub(super) fn len(&self) -> usize {
        lock(&self.waiting).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_id_is_answered_once_and_only_by_its_device() {
        let pending = Pending::default();
        let (rid, answer) = pending.register("d1");
        let ok = DeviceAnswer::Answered {
            status: 200,
            payload: Value::Null,
        };
        assert!(!pending.resolve("d2", &rid, ok.clone()), "another device");
        assert!(!pending.resolve("d1", "999", ok.clone()), "unknown id");
        assert!(!pending.resolve("d1", "x", ok.clone()), "not an id");
        assert!(pending.resolve("d1", &rid, ok.clone()));
        assert!(!pending.resolve("d1", &rid, ok.clone()), "answered already");
        assert_eq!(answer.await.unwrap(), ok);

        let (rid, _) = pending.register("d1");
        pending.forget(&rid);
        assert!(!pending.resolve("d1", &rid, ok), "abandoned");
        assert_eq!(pending.len(), 0);
    }
}
