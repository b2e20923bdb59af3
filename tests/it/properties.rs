//! Property tests of the parsers that see outside input: whatever the bytes, each returns a
//! value or an error, never panics; and what fleetsim writes, its readers read back. Bounded
//! (1,000 cases each, small inputs), so the module runs in seconds.

use proptest::prelude::*;

use fleetsim::emulator::ca::names::Subject;
use fleetsim::iothub::{sas, topics};
use fleetsim::scenario::{Percent, Rate, Span, units};

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Strings near what the unit parsers expect: digits, dots, units, slashes, signs, spaces.
fn unit_like() -> impl Strategy<Value = String> {
    "[0-9.eE+ -]{0,40}(ms|s|m|min|h|d|/s|/min|/h|%|x|)"
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn units_never_panic_and_stay_in_bounds(text in unit_like()) {
        if let Ok(Span(d)) = text.parse::<Span>() {
            prop_assert!(d >= units::MIN_SPAN && d <= units::MAX_SPAN, "{text}: {d:?}");
        }
        if let Ok(Rate(r)) = text.parse::<Rate>() {
            prop_assert!((units::MIN_RATE..=units::MAX_RATE).contains(&r), "{text}: {r}");
            prop_assert!(std::time::Duration::try_from_secs_f64(1.0 / r).is_ok());
        }
        if let Ok(Percent(p)) = text.parse::<Percent>() {
            prop_assert!(p > 0.0 && p <= 100.0, "{text}: {p}");
        }
    }

    #[test]
    fn units_take_any_string(text in "\\PC{0,30}") {
        let _ = text.parse::<Span>();
        let _ = text.parse::<Rate>();
        let _ = text.parse::<Percent>();
    }

    #[test]
    fn scenario_yaml_never_panics(text in "(name: |duration: |fleet:\\n  |devices: |arrival_rate: |[a-z_:{}\\[\\],&*!|>\\- \\n0-9./%]){0,30}") {
        let _ = fleetsim::scenario::parse(&text, std::path::Path::new("p.yaml"));
    }

    #[test]
    fn sas_tokens_parse_without_panic(text in "(SharedAccessSignature )?(sr=|sig=|se=|skn=|&|%[0-9A-F]{2}|[a-z0-9./=%])*") {
        if let Some(t) = sas::parse(&text) {
            let _ = sas::verify(&t, "a2V5", "hub.example/devices/d1", 0);
        }
    }

    #[test]
    fn sas_tokens_round_trip(resource in "[a-z0-9.-]{1,20}(/devices/[a-zA-Z0-9-]{1,20})?", expiry in 1u64..4_000_000_000) {
        let key = "c2VjcmV0LWtleS1mb3ItcHJvcGVydHktdGVzdHM=";
        let token = sas::token(&resource, key, Some("iothubowner"), expiry).unwrap();
        let parsed = sas::parse(&token).expect("our own token parses");
        prop_assert_eq!(parsed.expiry, expiry);
        prop_assert!(sas::verify(&parsed, key, &resource, expiry).is_ok());
    }

    #[test]
    fn subjects_parse_without_panic(text in "(CN=|O=|OU=|C=|L=|ST=|E=|\\+|,|\\\\|\"|#[0-9a-f]{0,6}|\\PC){0,40}") {
        let _ = Subject::parse(&text);
    }

    /// Whatever a device id is, the EZCA client's SubjectName for it is one CN of exactly it.
    #[test]
    fn subject_names_we_write_read_back(id in "[a-zA-Z0-9\\-:.+%_#*?!(),=@;$' \"<>\\\\]{1,64}") {
        let written = fleetsim::ezca::models::subject_name_for(&id);
        let subject = Subject::parse(&written);
        prop_assert!(subject.is_ok(), "{written}: {subject:?}");
        let subject = subject.unwrap();
        prop_assert_eq!(subject.common_name(), id.as_str());
    }

    #[test]
    fn certificate_jwts_parse_without_panic(text in "([A-Za-z0-9_=-]{0,30}\\.?){0,4}") {
        let _ = fleetsim::crypto::jwt::parse(&text);
    }

    #[test]
    fn topics_parse_without_panic(
        topic in "(devices/d1/messages/events/|\\$iothub/|methods/POST/|twin/|res/|\\?\\$rid=|[a-z0-9%&=./$?])*"
    ) {
        let _ = topics::parse_telemetry(&topic, "d1");
        let _ = topics::parse_cloud_message(&topic, "d1");
        let _ = topics::parse_property_bag(&topic);
    }

    #[test]
    fn property_bags_round_trip(pairs in proptest::collection::vec(("[a-zA-Z0-9$.]{1,10}", "\\PC{0,10}"), 0..5)) {
        let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let bag = topics::property_bag(&borrowed);
        let parsed = topics::parse_property_bag(&bag).expect("our own bag parses");
        prop_assert_eq!(parsed, pairs);
    }

    #[test]
    fn queries_parse_without_panic(
        text in "(SELECT |\\* |FROM |devices|devices\\.modules |WHERE |AND |OR |NOT |GROUP BY |AS |properties\\.reported\\.|tags\\.|status|=|<>|<|>=|\\(|\\)|,|'[a-z]{0,4}'|[0-9]{1,4}|IS_DEFINED|COUNT|\\[|\\]| )*"
    ) {
        let _ = fleetsim::emulator::hub::query::parse(&text);
    }

    #[test]
    fn mqtt_packets_never_panic_the_hub_reader(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let mut input = bytes.as_slice();
        let mut buf = bytes::BytesMut::new();
        let _ = runtime.block_on(fleetsim::emulator::mqtt_wire::read_packet(&mut input, &mut buf, 16 * 1024));
    }

    #[test]
    fn ezca_json_models_never_panic(text in "(\\{|\\}|\\[|\\]|\"[A-Za-z]{0,12}\"|:|,|null|true|-?[0-9]{1,5}| )*") {
        let _ = serde_json::from_str::<fleetsim::ezca::models::CertificateCreateRequest>(&text);
        let _ = serde_json::from_str::<fleetsim::ezca::models::ApiResult>(&text);
    }
}
