//! SAS tokens as the hub and DPS read them from a password or an Authorization header: parsed,
//! then checked against a key and a resource.
#![no_main]

use fleetsim::iothub::sas;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Some(token) = sas::parse(&text) {
        let _ = sas::verify(&token, "c2VjcmV0", "hub.example/devices/d1", 1_700_000_000);
        let _ = sas::verify(&token, "", "", u64::MAX);
    }
});
