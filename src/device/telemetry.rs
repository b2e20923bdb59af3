//! The telemetry the EZCA IoT sample sends: `{"deviceId","messageId","temperature","humidity"}`
//! with an application property `temperatureAlert` that is `"true"` above 30 °C.

use rand::Rng;
use rand::rngs::StdRng;
use serde::Serialize;

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample<'a> {
    pub device_id: &'a str,
    pub message_id: u64,
    pub temperature: f64,
    pub humidity: f64,
}

/// The payload bytes and the topic for message `message_id` of `device_id`.
pub fn next_message(device_id: &str, message_id: u64, rng: &mut StdRng) -> (String, Vec<u8>) {
    let sample = Sample {
        device_id,
        message_id,
        temperature: ((20.0 + rng.random_range(0.0f64..15.0)) * 100.0).round() / 100.0,
        humidity: ((60.0 + rng.random_range(0.0f64..20.0)) * 100.0).round() / 100.0,
    };
    let alert = if sample.temperature > 30.0 {
        "true"
    } else {
        "false"
    };
    let topic = crate::iothub::topics::telemetry(
        device_id,
        &[
            ("$.ct", "application/json"),
            ("$.ce", "utf-8"),
            ("temperatureAlert", alert),
        ],
    );
    let payload = serde_json::to_vec(&sample).unwrap_or_default();
    (topic, payload)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn sample_matches_the_seed_sample_shape() {
        let mut rng = StdRng::seed_from_u64(7);
        for id in 0..50 {
            let (topic, payload) = next_message("d1", id, &mut rng);
            let v: serde_json::Value = serde_json::from_slice(&payload).unwrap();
            assert_eq!(v["deviceId"], "d1");
            assert_eq!(v["messageId"], id);
            let t = v["temperature"].as_f64().unwrap();
            assert!((20.0..35.0).contains(&t));
            assert!((60.0..80.0).contains(&v["humidity"].as_f64().unwrap()));
            let alert = if t > 30.0 {
                "temperatureAlert=true"
            } else {
                "temperatureAlert=false"
            };
            assert!(topic.ends_with(alert), "{topic}");
        }
    }
}
