//! EZCA's JSON on the wire: every request and response model round-trips the fixtures in
//! `tests/fixtures/ezca/` (written with the exact names, casing and nesting of the reference,
//! §4) without losing or renaming a field. System.Text.Json on the service is case-sensitive, so
//! a renamed field is a silent bug there.

use fleetsim::ezca::models::*;
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: Serialize + DeserializeOwned>(name: &str) {
    let path = format!("{}/tests/fixtures/ezca/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: serde_json::Value = serde_json::from_str(&text).unwrap();
    let model: T =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{name} does not parse: {e}"));
    let back = serde_json::to_value(&model).unwrap();
    assert_eq!(
        back, fixture,
        "{name}: the model must write exactly the fixture's fields"
    );
}

#[test]
fn every_model_round_trips_its_fixture() {
    round_trip::<Vec<AvailableCa>>("available_cas.json");
    round_trip::<NewDomainRequest>("new_domain_request.json");
    round_trip::<CertificateCreateRequest>("certificate_create_request.json");
    round_trip::<CertificateCreateRequestV2>("certificate_create_request_v2.json");
    round_trip::<ApiResult>("api_result.json");
    round_trip::<CertificateCreatedResponse>("certificate_created_response.json");
    round_trip::<CertificateAuthenticationPayload<CertRenewRequest>>("renew_v2_request.json");
    round_trip::<Vec<DomainInformation>>("domain_information.json");
    round_trip::<RevokeRequest>("revoke_v2_request.json");
}

#[test]
fn the_v3_reply_parses_bare_and_double_encoded() {
    let bare = std::fs::read_to_string(format!(
        "{}/tests/fixtures/ezca/certificate_created_response.json",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let wrapped = serde_json::to_string(&bare).unwrap();
    let a: CertificateCreatedResponse = fleetsim::ezca::parse_maybe_string_wrapped(&bare).unwrap();
    let b: CertificateCreatedResponse =
        fleetsim::ezca::parse_maybe_string_wrapped(&wrapped).unwrap();
    assert_eq!(a, b);
}
