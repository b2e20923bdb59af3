//! Percentile summaries of the recorder's histograms as they appear in the report, each with the
//! histogram itself, losslessly encoded (HdrHistogram V2 + DEFLATE, base64) in `hdr`, so reports
//! from several shards or runs can be merged exactly.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer as _, V2DeflateSerializer};
use serde::{Deserialize, Serialize};

use super::error::ReportError;
use crate::metrics::{Outcome, Phase, new_histogram};

/// Histograms keyed by phase × outcome, in microseconds.
pub type HistogramMap = BTreeMap<(Phase, Outcome), Histogram<u64>>;

/// One histogram's summary, in milliseconds, and the histogram itself.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LatencyStats {
    pub count: u64,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// The histogram (µs, 1 µs..1 h, 3 significant figures) as base64 of its V2 + DEFLATE form.
    pub hdr: String,
}

/// One phase × outcome of the report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PhaseStats {
    pub phase: String,
    pub outcome: String,
    /// Latency from the intended start (coordinated-omission corrected).
    #[serde(flatten)]
    pub latency: LatencyStats,
    /// Latency from the actual start, for phases that record one (`mqtt.publish`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uncorrected: Option<LatencyStats>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

impl LatencyStats {
    pub fn of(h: &Histogram<u64>) -> Result<Self, ReportError> {
        Ok(Self {
            count: h.len(),
            mean_ms: h.mean() / 1000.0,
            p50_ms: ms(h.value_at_quantile(0.50)),
            p90_ms: ms(h.value_at_quantile(0.90)),
            p99_ms: ms(h.value_at_quantile(0.99)),
            p999_ms: ms(h.value_at_quantile(0.999)),
            // The histogram's max is rounded to its bucket's top; report the highest
            // equivalent value so that max is never below p99.9.
            max_ms: ms(h.highest_equivalent(h.max())),
            hdr: encode(h)?,
        })
    }

    /// The histogram behind these figures.
    pub fn histogram(&self) -> Result<Histogram<u64>, ReportError> {
        decode(&self.hdr)
    }
}

/// Base64 of the V2 + DEFLATE serialisation (the format Java's HdrHistogram and the interval log
/// use).
pub fn encode(h: &Histogram<u64>) -> Result<String, ReportError> {
    let mut bytes = Vec::new();
    V2DeflateSerializer::new()
        .serialize(h, &mut bytes)
        .map_err(|e| ReportError::Histogram(format!("cannot encode: {e:?}")))?;
    Ok(STANDARD.encode(bytes))
}

/// Reverses [`encode`]; the result has the recorder's bounds whatever the encoded ones were, so
/// it can be added to any other histogram of the report.
pub fn decode(text: &str) -> Result<Histogram<u64>, ReportError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| ReportError::Histogram(format!("hdr is not base64: {e}")))?;
    let decoded: Histogram<u64> = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| ReportError::Histogram(format!("hdr does not decode: {e:?}")))?;
    let mut h = new_histogram();
    h.add(&decoded)
        .map_err(|e| ReportError::Histogram(format!("hdr is out of range: {e:?}")))?;
    Ok(h)
}

/// The report's phase table from the recorder's (or merged) histograms, in vocabulary order.
pub fn phase_stats(
    latency: &HistogramMap,
    uncorrected: &HistogramMap,
) -> Result<Vec<PhaseStats>, ReportError> {
    latency
        .iter()
        .map(|((phase, outcome), h)| {
            Ok(PhaseStats {
                phase: phase.name().into(),
                outcome: outcome.name().into(),
                latency: LatencyStats::of(h)?,
                uncorrected: uncorrected
                    .get(&(*phase, *outcome))
                    .map(LatencyStats::of)
                    .transpose()?,
            })
        })
        .collect()
}

/// The histograms of a report's phase table (the reverse of [`phase_stats`]).
pub fn histograms(phases: &[PhaseStats]) -> Result<(HistogramMap, HistogramMap), ReportError> {
    let mut latency = HistogramMap::new();
    let mut uncorrected = HistogramMap::new();
    for p in phases {
        let key = key_of(p)?;
        add_into(&mut latency, key, p.latency.histogram()?)?;
        if let Some(u) = &p.uncorrected {
            add_into(&mut uncorrected, key, u.histogram()?)?;
        }
    }
    Ok((latency, uncorrected))
}

fn key_of(p: &PhaseStats) -> Result<(Phase, Outcome), ReportError> {
    match (Phase::from_name(&p.phase), Outcome::from_name(&p.outcome)) {
        (Some(phase), Some(outcome)) => Ok((phase, outcome)),
        _ => Err(ReportError::Histogram(format!(
            "unknown phase or outcome {}/{}",
            p.phase, p.outcome
        ))),
    }
}

/// Adds `h` to the histogram at `key`, exactly.
pub fn add_into(
    map: &mut HistogramMap,
    key: (Phase, Outcome),
    h: Histogram<u64>,
) -> Result<(), ReportError> {
    match map.get_mut(&key) {
        Some(existing) => existing
            .add(&h)
            .map_err(|e| ReportError::Histogram(format!("cannot add: {e:?}"))),
        None => {
            map.insert(key, h);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histograms_survive_encoding_exactly() {
        let mut h = new_histogram();
        for v in [1u64, 17, 999, 1_000, 123_456, 3_599_999_999] {
            h.record_n(v, v % 7 + 1).unwrap();
        }
        let text = encode(&h).unwrap();
        assert_eq!(decode(&text).unwrap(), h);
        assert!(decode("not base64!").is_err());
        assert!(decode("AAAA").is_err());
    }
}
