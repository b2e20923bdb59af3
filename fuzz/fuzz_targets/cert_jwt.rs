//! EZCA certificate-JWTs (RS256, `x5c`) as the CA emulator reads them: parsed, then their
//! signature checked against the key in the input's tail.
#![no_main]

use fleetsim::crypto::jwt;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let split = data.iter().position(|b| *b == 0).unwrap_or(data.len());
    let (token, key) = data.split_at(split);
    let token = String::from_utf8_lossy(token);
    if let Some(parsed) = jwt::parse(&token) {
        let _ = jwt::verify_signature(&parsed, key);
        let _ = jwt::verify_signature_spki(&parsed, key);
    }
});
