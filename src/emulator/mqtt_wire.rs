//! MQTT 3.1.1 framing shared by the emulators' MQTT endpoints (the hub's and DPS's): one packet
//! read from, or written to, a byte stream with rumqttc's codec.

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PingResp, SubAck, Subscribe, SubscribeReasonCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest packet the emulators send; what they accept is each endpoint's own limit.
const MAX_OUTGOING: usize = 1024 * 1024;

/// Reads the next packet of at most `max` bytes. A closed stream is `InsufficientBytes`, a
/// malformed or oversize packet the codec's error.
pub async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, CodecError> {
    loop {
        match Packet::read(buf, max) {
            Err(CodecError::InsufficientBytes(_)) => {}
            other => return other,
        }
        if stream.read_buf(buf).await? == 0 {
            return Err(CodecError::InsufficientBytes(1));
        }
    }
}

/// Writes one packet and flushes it.
pub async fn write_packet<S: AsyncWrite + Unpin>(
    stream: &mut S,
    packet: Packet,
) -> std::io::Result<()> {
    let mut out = BytesMut::with_capacity(16);
    match packet {
        // rumqttc's `Packet::write` has no arm for PINGRESP (a client never sends one).
        Packet::PingResp => PingResp.write(&mut out),
        other => other.write(&mut out, MAX_OUTGOING),
    }
    .map_err(|e| std::io::Error::other(e.to_string()))?;
    stream.write_all(&out).await?;
    stream.flush().await
}

/// The SUBACK IoT Hub and DPS answer an allowed SUBSCRIBE with: each filter granted the QoS it
/// asked for, but never 2 (they have no QoS 2).
pub fn suback(subscribe: &Subscribe) -> Packet {
    let codes = subscribe
        .filters
        .iter()
        .map(|f| match f.qos {
            QoS::AtMostOnce => SubscribeReasonCode::Success(QoS::AtMostOnce),
            _ => SubscribeReasonCode::Success(QoS::AtLeastOnce),
        })
        .collect();
    Packet::SubAck(SubAck::new(subscribe.pkid, codes))
}
