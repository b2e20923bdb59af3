//! IoT Hub's query language as the hub emulator parses it.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = fleetsim::emulator::hub::query::parse(&text);
});
