//! EZCA's JSON models as the CA emulator and the client read them: any bytes decode to a
//! model or an error.
#![no_main]

use fleetsim::ezca::models::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = serde_json::from_slice::<ApiResult>(data);
    let _ = serde_json::from_slice::<AvailableCa>(data);
    let _ = serde_json::from_slice::<Vec<AvailableCa>>(data);
    let _ = serde_json::from_slice::<NewDomainRequest>(data);
    let _ = serde_json::from_slice::<CertificateCreateRequest>(data);
    let _ = serde_json::from_slice::<CertificateCreateRequestV2>(data);
    let _ = serde_json::from_slice::<CertRenewRequest>(data);
    let _ = serde_json::from_slice::<CertificateCreatedResponse>(data);
    let _ = serde_json::from_slice::<DomainInformation>(data);
    let _ = serde_json::from_slice::<RevokeRequest>(data);
    let _ = serde_json::from_slice::<SubjectAltValue>(data);
});
