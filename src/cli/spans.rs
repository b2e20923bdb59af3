//! Option values the commands share.

use std::time::Duration;

use crate::scenario;

/// Parses a duration option (`30s`, `2m`).
pub fn parse_span(text: &str) -> Result<Duration, String> {
    text.parse::<scenario::Span>().map(|s| s.0)
}
