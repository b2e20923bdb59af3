//! Runs beyond one machine: the pieces that turn the shards of a run (`fleetsim run --shard
//! i/n`, e.g. the pods of a Kubernetes Indexed Job, `deploy/kubernetes/`) into one report and one
//! verdict.
//!
//! - [`delivery`]: a shard POSTs its report (or its failure) to the collector
//!   (`fleetsim run --report-to URL`), retrying while the collector is away;
//! - [`collector`]: the collector's HTTP server (`fleetsim collect`), which keeps each arrival
//!   on disk before acknowledging it;
//! - [`verdict`]: which shards arrived, their reports merged exactly, the scenario's thresholds
//!   on the merged histograms, and every reason for failing named (also `fleetsim report
//!   --expect`);
//! - [`sizing`]: `fleetsim plan-shards`, pods and what each needs, from `BENCHMARKS.md`.
//!
//! The start barrier that makes the shards' arrival clocks start together is the fleet's
//! (`fleetsim run --start-at`, `fleet::barrier`).

pub mod collector;
pub mod delivery;
mod error;
pub mod sizing;
pub mod verdict;

pub use collector::Collector;
pub use error::DistributedError;
pub use verdict::{Arrival, Refusal, Shards, Verdict};
