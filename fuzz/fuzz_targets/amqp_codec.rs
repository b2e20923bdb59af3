//! AMQP 1.0 as the hub's AMQP endpoint and fleetsim's clients read it: frames off the wire,
//! then performatives, values and messages decoded from their bodies.
#![no_main]

use fleetsim::amqp::{codec, frames::FrameReader, message, performatives};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = codec::decode(data);
    let _ = message::decode(data);
    let _ = performatives::decode_performative(data);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        let mut reader = FrameReader::new(data, 64 * 1024);
        if reader.protocol_header().await.is_err() {
            return;
        }
        for _ in 0..32 {
            let Ok(frame) = reader.next_frame().await else {
                break;
            };
            if let Ok((_, used)) = performatives::decode_performative(&frame.body) {
                let _ = message::decode(&frame.body[used.min(frame.body.len())..]);
            }
        }
    });
});
