//! MQTT packets as the hub's endpoint reads them: whatever bytes a client sends, the reader
//! returns packets or an error (never a panic, never a read past its limit), and the topics of
//! the PUBLISH packets it returns go through the hub's topic and property-bag parsers.
#![no_main]

use fleetsim::emulator::mqtt_wire::read_packet;
use fleetsim::iothub::topics;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    let mut input = data;
    let mut buf = bytes::BytesMut::new();
    runtime.block_on(async {
        // As the hub's session reads: packet after packet until the bytes end or one is bad.
        for _ in 0..64 {
            match read_packet(&mut input, &mut buf, 16 * 1024).await {
                Ok(rumqttc::mqttbytes::v4::Packet::Publish(p)) => {
                    let _ = topics::parse_telemetry(&p.topic, "d1");
                    let _ = topics::parse_cloud_message(&p.topic, "d1");
                    let _ = topics::parse_property_bag(&p.topic);
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
});
