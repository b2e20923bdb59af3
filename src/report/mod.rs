//! The run's results: a text table for the terminal (`text`), a versioned JSON file for machines
//! that carries every histogram losslessly, so the reports of several shards merge exactly
//! ([`mod@merge`]), an interval log ([`hlog`]), the run over time ([`timeline`], sampled every
//! `report.interval` whether or not the log is written), the operator's counts ([`operator`]:
//! direct methods, desired properties, queries), a self-contained HTML page ([`html`],
//! its time charts in [`timecharts`], the charts' shared drawing in `svg`) and the thresholds'
//! verdicts ([`thresholds`]). Sections of their own: [`certificates`] and [`provisioning`].
//!
//! The report's data lives in `model` (re-exported here) and its errors in `error`; the
//! writers and the merge import those one way, never this file.

pub mod backend;
pub mod certificates;
mod error;
pub mod faults;
pub mod hlog;
pub mod html;
pub mod merge;
mod model;
pub mod operator;
pub mod provisioning;
pub mod qos1;
pub mod stats;
mod svg;
mod text;
pub mod thresholds;
pub mod timecharts;
pub mod timeline;

pub use error::{ReportError, SCHEMA};
pub use merge::{merge, merge_files, read_json};
pub use model::{
    CohortCounts, DeviceCounts, HubCounts, KeyPoolCounts, MessageCounts, Report, StartBarrier,
    ThresholdResult,
};
pub use stats::{HistogramMap, LatencyStats, PhaseStats};
pub use timeline::Timeline;
