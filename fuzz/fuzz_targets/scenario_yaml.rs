//! Scenario files: any text loads into a validated scenario or a located error, and the unit
//! parsers (durations, rates, percentages) take any string.
#![no_main]

use fleetsim::scenario::{Percent, Rate, Span};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = text.parse::<Span>();
    let _ = text.parse::<Rate>();
    let _ = text.parse::<Percent>();
    let _ = fleetsim::scenario::parse(&text, std::path::Path::new("fuzz.yaml"));
});
