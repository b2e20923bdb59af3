//! What the page's parts share: its error and what a hover shows of one device (apart from
//! `mod.rs`, so the live and replayed views can name them without depending on the server).

use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error("web view: {0}")]
    Io(#[from] std::io::Error),
    #[error("the report has no fleet map (written by an older fleetsim, or merged from shards)")]
    NoMap,
    #[error("the report's fleet map is damaged ({0})")]
    BadMap(String),
}

/// What the hover shows about one device.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceInfo {
    pub slot: usize,
    pub id: String,
    pub state: &'static str,
    /// Its certificate's notAfter, Unix seconds; absent when it holds none.
    pub not_after: Option<u32>,
    /// Seconds left at the moment shown (negative: expired).
    pub expires_in_s: Option<i64>,
    pub last_error: Option<String>,
}

impl DeviceInfo {
    pub fn new(
        slot: usize,
        id: String,
        state: &'static str,
        not_after: u32,
        now: u64,
        last_error: Option<String>,
    ) -> Self {
        let not_after = (not_after != 0).then_some(not_after);
        Self {
            slot,
            id,
            state,
            not_after,
            expires_in_s: not_after.map(|n| i64::from(n) - now as i64),
            last_error,
        }
    }
}
