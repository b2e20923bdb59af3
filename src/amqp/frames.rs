//! AMQP framing (part 2.3): protocol headers, the 8-byte frame header, and a reader that never
//! holds more than one frame of the negotiated maximum size. A frame that claims to be larger, a
//! data offset below 2 or a header that is not AMQP's is a [`FrameError`]; the connection logs
//! it and closes.

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

pub const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";
pub const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
pub const TLS_HEADER: [u8; 8] = *b"AMQP\x02\x01\x00\x00";

pub const TYPE_AMQP: u8 = 0;
pub const TYPE_SASL: u8 = 1;

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("peer closed the connection")]
    Closed,
    #[error("connection ended inside a frame")]
    Truncated,
    #[error("not an AMQP protocol header: {0:02x?}")]
    BadHeader([u8; 8]),
    #[error("frame of {size} bytes is larger than the {max}-byte maximum")]
    TooLarge { size: usize, max: usize },
    #[error("malformed frame header: {0}")]
    Malformed(&'static str),
    #[error("I/O failed: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    /// Whether the peer simply went away (closed, reset, or closed before reading our last
    /// frames, as azure-eventhub does after its `close`): a plain close, not bad input.
    pub fn is_peer_gone(&self) -> bool {
        use std::io::ErrorKind::*;
        match self {
            FrameError::Closed => true,
            FrameError::Io(e) => matches!(
                e.kind(),
                BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
            ),
            _ => false,
        }
    }
}

/// One frame: its type, channel and body (performative followed by any payload).
#[derive(Debug)]
pub struct Frame {
    pub kind: u8,
    pub channel: u16,
    pub body: BytesMut,
}

/// Buffers reads from one connection. `next_frame` is cancel-safe: bytes read before a
/// cancellation stay in the buffer.
pub struct FrameReader<R> {
    io: R,
    buf: BytesMut,
    pub max_frame: usize,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(io: R, max_frame: usize) -> Self {
        Self {
            io,
            buf: BytesMut::with_capacity(4096),
            max_frame,
        }
    }

    /// The stream, for closing it or reading past the framing.
    pub fn into_inner(self) -> R {
        self.io
    }

    async fn fill(&mut self, want: usize) -> Result<(), FrameError> {
        while self.buf.len() < want {
            let had = self.buf.len();
            let ended = match self.io.read_buf(&mut self.buf).await {
                Ok(n) => n == 0,
                // A TLS peer that goes away without close_notify has still just gone away.
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => true,
                Err(e) => return Err(e.into()),
            };
            if ended {
                return Err(if had == 0 {
                    FrameError::Closed
                } else {
                    FrameError::Truncated
                });
            }
        }
        Ok(())
    }

    /// The 8-byte protocol header the peer opens with (or switches layers with).
    pub async fn protocol_header(&mut self) -> Result<[u8; 8], FrameError> {
        self.fill(8).await?;
        let mut h = [0u8; 8];
        h.copy_from_slice(&self.buf[..8]);
        self.buf.advance(8);
        Ok(h)
    }

    pub async fn next_frame(&mut self) -> Result<Frame, FrameError> {
        self.fill(8).await?;
        let size =
            u32::from_be_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]) as usize;
        let doff = self.buf[4] as usize * 4;
        if size > self.max_frame {
            return Err(FrameError::TooLarge {
                size,
                max: self.max_frame,
            });
        }
        if doff < 8 || doff > size {
            return Err(FrameError::Malformed("data offset outside the frame"));
        }
        self.fill(size).await?;
        let mut frame = self.buf.split_to(size);
        let kind = frame[5];
        let channel = u16::from_be_bytes([frame[6], frame[7]]);
        frame.advance(doff);
        Ok(Frame {
            kind,
            channel,
            body: frame,
        })
    }
}

/// Encodes one frame: header, `performative` (already encoded) and `payload`.
pub fn frame(kind: u8, channel: u16, performative: &[u8], payload: &[u8]) -> Vec<u8> {
    let size = 8 + performative.len() + payload.len();
    let mut out = Vec::with_capacity(size);
    out.extend((size as u32).to_be_bytes());
    out.extend([2, kind]);
    out.extend(channel.to_be_bytes());
    out.extend_from_slice(performative);
    out.extend_from_slice(payload);
    out
}

/// An empty frame: the heartbeat that keeps an idle connection open.
pub fn heartbeat() -> Vec<u8> {
    frame(TYPE_AMQP, 0, &[], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_split_and_limits_hold() {
        let mut bytes = frame(TYPE_AMQP, 3, &[0x45], b"xy");
        bytes.extend(heartbeat());
        let mut r = FrameReader::new(&bytes[..], 1024);
        let f = r.next_frame().await.unwrap();
        assert_eq!(
            (f.kind, f.channel, &f.body[..]),
            (0, 3, &[0x45, b'x', b'y'][..])
        );
        assert!(r.next_frame().await.unwrap().body.is_empty());
        assert!(matches!(r.next_frame().await, Err(FrameError::Closed)));

        let huge = [0xff, 0xff, 0xff, 0xff, 2, 0, 0, 0];
        let mut r = FrameReader::new(&huge[..], 65_536);
        assert!(matches!(
            r.next_frame().await,
            Err(FrameError::TooLarge { .. })
        ));
        let bad_doff = [0, 0, 0, 8, 1, 0, 0, 0];
        let mut r = FrameReader::new(&bad_doff[..], 65_536);
        assert!(matches!(
            r.next_frame().await,
            Err(FrameError::Malformed(_))
        ));
        let cut = &frame(TYPE_AMQP, 0, &[0x45; 20], &[])[..15];
        let mut r = FrameReader::new(cut, 65_536);
        assert!(matches!(r.next_frame().await, Err(FrameError::Truncated)));
    }
}
