//! MQTT 3.1.1 framing shared by the emulators' MQTT endpoints (the hub's and DPS's): one packet
//! read from, or written to, a byte stream with rumqttc's codec.

use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::mqttbytes::QoS;
use rumqttc::mqttbytes::v4::{Packet, PingResp, SubAck, Subscribe, SubscribeReasonCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest packet the emulators send; what they accept is each endpoint's own limit.
const MAX_OUTGOING: usize = 1024 * 1024;

/// The largest CONNECT the endpoints read, before the client is authenticated: a client id of
/// 128 bytes, a username and a SAS token take well under 1 KB, so 16 KiB leaves room for a will
/// message of a few KB while a flood of unauthenticated connections holds little memory.
pub const MAX_CONNECT: usize = 16 * 1024;

/// IoT Hub's cap on its server-side keep-alive timeout (29.45 minutes).
pub const MAX_KEEP_ALIVE: Duration = Duration::from_secs(1767);

/// How long a session may stay silent: 1.5 times the client's keep-alive (IoT Hub's rule),
/// capped at [`MAX_KEEP_ALIVE`]. A client that asks for none (0) gets the cap: IoT Hub documents
/// no behaviour for 0, and a session that may idle forever would let silent clients hold
/// connections for good.
pub fn idle_limit(keep_alive_secs: u16) -> Duration {
    match keep_alive_secs {
        0 => MAX_KEEP_ALIVE,
        s => (Duration::from_secs(u64::from(s)) * 3 / 2).min(MAX_KEEP_ALIVE),
    }
}

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

/// Whether a failed read means the peer went away (closed without DISCONNECT or TLS
/// close_notify, or reset the connection) rather than sent something wrong: a device switched
/// off, or a run that ended, is a close, not a protocol error.
pub fn is_peer_gone(e: &CodecError) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    match e {
        CodecError::InsufficientBytes(_) => true,
        CodecError::Io(io) => matches!(
            io.kind(),
            UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe
        ),
        _ => false,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_is_bounded_whatever_the_keep_alive() {
        assert_eq!(idle_limit(60), Duration::from_secs(90));
        assert_eq!(idle_limit(1177), Duration::from_millis(1_765_500));
        assert_eq!(idle_limit(1200), MAX_KEEP_ALIVE);
        assert_eq!(idle_limit(0), MAX_KEEP_ALIVE);
    }

    #[test]
    fn a_peer_that_leaves_is_not_a_protocol_error() {
        use std::io::{Error, ErrorKind};
        assert!(is_peer_gone(&CodecError::InsufficientBytes(1)));
        assert!(is_peer_gone(&Error::from(ErrorKind::UnexpectedEof).into()));
        assert!(is_peer_gone(
            &Error::from(ErrorKind::ConnectionReset).into()
        ));
        assert!(!is_peer_gone(&Error::from(ErrorKind::InvalidData).into()));
        assert!(!is_peer_gone(&CodecError::MalformedPacket));
    }
}
