//! The store behind the Event Hub-compatible endpoint: every accepted device-to-cloud message,
//! in N partitions (IoT Hub's default 4; a device always lands in the same one), each with
//! sequence numbers, byte offsets and enqueued times as Event Hubs numbers them. Retention is
//! bounded by count, bytes and age per partition so memory stays flat in soaks; a reader whose
//! position fell out of retention continues at the oldest event kept, as Event Hubs does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch;

use super::c2d::now_ms;
use crate::sync::{lock, read, write};

/// One stored device-to-cloud message.
#[derive(Debug, Clone)]
pub struct Event {
    pub sequence_number: i64,
    /// Bytes appended to the partition before this event (Event Hubs' offset).
    pub offset: u64,
    pub enqueued_ms: i64,
    pub device_id: Arc<str>,
    /// The MQTT property bag as the device sent it, decoded (`$.`-prefixed system properties
    /// included).
    pub properties: Vec<(String, String)>,
    pub body: Bytes,
}

/// How much each partition keeps.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub max_events: usize,
    pub max_bytes: usize,
    pub max_age: Duration,
}

impl Default for Retention {
    /// IoT Hub keeps a day by default; the count and byte caps keep a soak's memory flat.
    fn default() -> Self {
        Self {
            max_events: 100_000,
            max_bytes: 64 * 1024 * 1024,
            max_age: Duration::from_secs(86_400),
        }
    }
}

#[derive(Debug, Clone)]
pub struct EventLogConfig {
    pub partitions: u32,
    /// Consumer groups besides `$Default`.
    pub consumer_groups: Vec<String>,
    pub retention: Retention,
}

impl Default for EventLogConfig {
    fn default() -> Self {
        Self {
            partitions: 4,
            consumer_groups: Vec::new(),
            retention: Retention::default(),
        }
    }
}

#[derive(Default)]
struct Partition {
    events: VecDeque<Event>,
    bytes: usize,
    next_sequence: i64,
    next_offset: u64,
}

/// A summary of one partition for `$management` reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionInfo {
    pub begin_sequence_number: i64,
    pub last_sequence_number: i64,
    pub last_offset: String,
    pub last_enqueued_ms: i64,
    pub is_empty: bool,
}

/// Where a reader starts (from the link's selector filter).
#[derive(Debug, Clone, PartialEq)]
pub enum StartAt {
    /// Offset `-1`: the oldest event kept.
    Beginning,
    /// `@latest`: only events appended from now on.
    Latest,
    Offset {
        offset: u64,
        inclusive: bool,
    },
    Sequence {
        number: i64,
        inclusive: bool,
    },
    EnqueuedTime {
        ms: i64,
        inclusive: bool,
    },
}

pub struct EventLog {
    config: EventLogConfig,
    /// Events kept per partition: the retention's count, or less ([`EventLog::keep_at_most`]).
    kept_events: std::sync::atomic::AtomicUsize,
    consumer_groups: RwLock<Vec<String>>,
    partitions: Vec<Mutex<Partition>>,
    /// Bumped on every append; readers wait on it.
    appended: watch::Sender<u64>,
    created_ms: i64,
    /// Receivers attached now, by (consumer group lower-cased, partition).
    readers: Mutex<HashMap<(String, u32), usize>>,
}

/// One attached receiver, counted in [`EventLog::readers`] until dropped (the link detaches or
/// its connection ends).
pub struct ReaderGuard {
    log: Arc<EventLog>,
    key: (String, u32),
}

impl Drop for ReaderGuard {
    fn drop(&mut self) {
        let mut readers = lock(&self.log.readers);
        if let Some(n) = readers.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                readers.remove(&self.key);
            }
        }
    }
}

impl EventLog {
    pub fn new(config: EventLogConfig) -> Self {
        let n = config.partitions.clamp(1, 32);
        Self {
            partitions: (0..n).map(|_| Mutex::new(Partition::default())).collect(),
            consumer_groups: RwLock::new(config.consumer_groups.clone()),
            kept_events: std::sync::atomic::AtomicUsize::new(config.retention.max_events),
            config: EventLogConfig {
                partitions: n,
                ..config
            },
            appended: watch::channel(0).0,
            created_ms: now_ms(),
            readers: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a receiver on `partition` of `group` while the guard lives.
    pub fn attach_reader(self: &Arc<Self>, group: &str, partition: u32) -> ReaderGuard {
        let key = (group.to_ascii_lowercase(), partition);
        *lock(&self.readers).entry(key.clone()).or_default() += 1;
        ReaderGuard {
            log: self.clone(),
            key,
        }
    }

    /// Receivers attached now to any partition of consumer group `group`.
    pub fn readers(&self, group: &str) -> usize {
        let group = group.to_ascii_lowercase();
        lock(&self.readers)
            .iter()
            .filter(|((g, _), _)| *g == group)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn partition_count(&self) -> u32 {
        self.config.partitions
    }

    pub fn created_ms(&self) -> i64 {
        self.created_ms
    }

    /// `$Default` (case-insensitive, as Event Hubs compares names) or a configured group.
    pub fn has_consumer_group(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case("$Default")
            || read(&self.consumer_groups)
                .iter()
                .any(|g| g.eq_ignore_ascii_case(name))
    }

    /// Adds a consumer group (as creating one in the portal does).
    pub fn add_consumer_group(&self, name: &str) {
        if !self.has_consumer_group(name) {
            write(&self.consumer_groups).push(name.to_string());
        }
    }

    /// The partition of `device_id`: a stable hash (FNV-1a), the same in every run.
    pub fn partition_of(&self, device_id: &str) -> u32 {
        let mut h: u32 = 0x811c_9dc5;
        for b in device_id.bytes() {
            h = (h ^ u32::from(b)).wrapping_mul(0x0100_0193);
        }
        h % self.config.partitions
    }

    /// Stores one device-to-cloud message and wakes the readers.
    pub fn append(&self, device_id: &str, properties: Vec<(String, String)>, body: Bytes) {
        let p = self.partition_of(device_id) as usize;
        let now = now_ms();
        if let Some(partition) = self.partitions.get(p) {
            let mut part = lock(partition);
            let event = Event {
                sequence_number: part.next_sequence,
                offset: part.next_offset,
                enqueued_ms: now,
                device_id: device_id.into(),
                properties,
                body,
            };
            part.next_sequence += 1;
            part.next_offset += event.body.len().max(1) as u64;
            part.bytes += event.body.len();
            part.events.push_back(event);
            self.trim(&mut part, now);
        }
        self.appended.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Keeps at most `events` per partition from now on (fewer than the retention's count): an
    /// embedded run that nobody reads from needs only the latest few, not a day of telemetry.
    pub fn keep_at_most(&self, events: usize) {
        let kept = events.min(self.config.retention.max_events);
        self.kept_events
            .store(kept, std::sync::atomic::Ordering::Relaxed);
    }

    fn trim(&self, part: &mut Partition, now: i64) {
        let r = self.config.retention;
        let max_events = self.kept_events.load(std::sync::atomic::Ordering::Relaxed);
        let oldest_kept = now - r.max_age.as_millis() as i64;
        while let Some(first) = part.events.front() {
            let over = part.events.len() > max_events
                || part.bytes > r.max_bytes
                || first.enqueued_ms < oldest_kept;
            if !over {
                break;
            }
            part.bytes -= first.body.len();
            part.events.pop_front();
        }
    }

    /// A receiver that learns of appends (coalesced).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.appended.subscribe()
    }

    /// The sequence number a reader starting at `start` in `partition` reads first.
    pub fn start_sequence(&self, partition: u32, start: &StartAt) -> Option<i64> {
        let part = lock(self.partitions.get(partition as usize)?);
        let after_all = part.next_sequence;
        let first = |pred: &dyn Fn(&Event) -> bool| {
            part.events
                .iter()
                .find(|e| pred(e))
                .map_or(after_all, |e| e.sequence_number)
        };
        Some(match start {
            StartAt::Beginning => part.events.front().map_or(after_all, |e| e.sequence_number),
            StartAt::Latest => after_all,
            StartAt::Offset { offset, inclusive } => {
                first(&|e| e.offset > *offset || (*inclusive && e.offset == *offset))
            }
            StartAt::Sequence { number, inclusive } => first(&|e| {
                e.sequence_number > *number || (*inclusive && e.sequence_number == *number)
            }),
            StartAt::EnqueuedTime { ms, inclusive } => {
                first(&|e| e.enqueued_ms > *ms || (*inclusive && e.enqueued_ms == *ms))
            }
        })
    }

    /// Up to `max` events of `partition` from sequence number `from` on (or from the oldest kept
    /// if `from` fell out of retention).
    pub fn read(&self, partition: u32, from: i64, max: usize) -> Vec<Event> {
        let Some(part) = self.partitions.get(partition as usize) else {
            return Vec::new();
        };
        let part = lock(part);
        let Some(first) = part.events.front().map(|e| e.sequence_number) else {
            return Vec::new();
        };
        let skip = usize::try_from(from.saturating_sub(first)).unwrap_or(0);
        part.events.iter().skip(skip).take(max).cloned().collect()
    }

    pub fn partition_info(&self, partition: u32) -> Option<PartitionInfo> {
        let part = lock(self.partitions.get(partition as usize)?);
        let last = part.events.back();
        Some(PartitionInfo {
            begin_sequence_number: part
                .events
                .front()
                .map_or(part.next_sequence, |e| e.sequence_number),
            last_sequence_number: last.map_or(-1, |e| e.sequence_number),
            last_offset: last.map_or("-1".into(), |e| e.offset.to_string()),
            last_enqueued_ms: last.map_or(0, |e| e.enqueued_ms),
            is_empty: part.events.is_empty(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(retention: Retention) -> EventLog {
        EventLog::new(EventLogConfig {
            partitions: 4,
            consumer_groups: vec!["backend".into()],
            retention,
        })
    }

    #[test]
    fn devices_stick_to_a_partition_and_numbers_grow() {
        let l = log(Retention::default());
        let p = l.partition_of("dev-1");
        assert_eq!(p, l.partition_of("dev-1"));
        let spread: std::collections::HashSet<_> = (0..64)
            .map(|i| l.partition_of(&format!("dev-{i}")))
            .collect();
        assert_eq!(spread.len(), 4, "64 devices use every partition");
        for i in 0..3 {
            l.append(
                "dev-1",
                vec![("k".into(), i.to_string())],
                Bytes::from_static(b"abcd"),
            );
        }
        let events = l.read(p, 0, 10);
        let seqs: Vec<_> = events
            .iter()
            .map(|e| (e.sequence_number, e.offset))
            .collect();
        assert_eq!(seqs, [(0, 0), (1, 4), (2, 8)]);
        assert!(l.has_consumer_group("$default") && l.has_consumer_group("backend"));
        assert!(!l.has_consumer_group("other"));
        let info = l.partition_info(p).unwrap();
        assert_eq!(
            (info.last_sequence_number, info.last_offset.as_str()),
            (2, "8")
        );
    }

    #[test]
    fn readers_are_counted_while_attached() {
        let l = Arc::new(log(Retention::default()));
        let a = l.attach_reader("$Default", 0);
        let b = l.attach_reader("$default", 1);
        let c = l.attach_reader("backend", 1);
        assert_eq!((l.readers("$DEFAULT"), l.readers("backend")), (2, 1));
        drop(a);
        drop(c);
        assert_eq!((l.readers("$Default"), l.readers("backend")), (1, 0));
        drop(b);
        assert_eq!(l.readers("$Default"), 0);
    }

    #[test]
    fn start_positions() {
        let l = log(Retention::default());
        let p = l.partition_of("d");
        for _ in 0..4 {
            l.append("d", vec![], Bytes::from_static(b"xx"));
        }
        let at = |s: StartAt| l.start_sequence(p, &s).unwrap();
        assert_eq!(at(StartAt::Beginning), 0);
        assert_eq!(at(StartAt::Latest), 4);
        assert_eq!(
            at(StartAt::Offset {
                offset: 2,
                inclusive: false
            }),
            2
        );
        assert_eq!(
            at(StartAt::Offset {
                offset: 2,
                inclusive: true
            }),
            1
        );
        assert_eq!(
            at(StartAt::Sequence {
                number: 1,
                inclusive: false
            }),
            2
        );
        assert_eq!(
            at(StartAt::Sequence {
                number: 1,
                inclusive: true
            }),
            1
        );
        assert_eq!(
            at(StartAt::EnqueuedTime {
                ms: now_ms() + 60_000,
                inclusive: false
            }),
            4
        );
        assert_eq!(
            at(StartAt::EnqueuedTime {
                ms: 0,
                inclusive: false
            }),
            0
        );
    }

    #[test]
    fn retention_bounds_memory() {
        let l = log(Retention {
            max_events: 10,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
        });
        let p = l.partition_of("d");
        for _ in 0..1000 {
            l.append("d", vec![], Bytes::from_static(b"x"));
        }
        let kept = l.read(p, 0, usize::MAX);
        assert_eq!(kept.len(), 10);
        assert_eq!(
            kept[0].sequence_number, 990,
            "a reader behind retention starts at the oldest kept"
        );
        let by_bytes = log(Retention {
            max_events: 1000,
            max_bytes: 100,
            max_age: Duration::from_secs(60),
        });
        for _ in 0..50 {
            by_bytes.append("d", vec![], Bytes::from(vec![0; 30]));
        }
        assert_eq!(by_bytes.read(p, 0, usize::MAX).len(), 3);
    }

    #[test]
    fn an_unread_log_keeps_only_the_latest_and_never_more_than_retention() {
        let l = log(Retention {
            max_events: 100,
            max_bytes: 1 << 20,
            max_age: Duration::from_secs(60),
        });
        let p = l.partition_of("d");
        l.keep_at_most(5);
        for _ in 0..50 {
            l.append("d", vec![], Bytes::from_static(b"x"));
        }
        let kept = l.read(p, 0, usize::MAX);
        assert_eq!(kept.len(), 5);
        assert_eq!(kept[0].sequence_number, 45);
        // A larger cap than the retention's is the retention's.
        l.keep_at_most(1_000_000);
        for _ in 0..200 {
            l.append("d", vec![], Bytes::from_static(b"x"));
        }
        assert_eq!(l.read(p, 0, usize::MAX).len(), 100);
    }
}
