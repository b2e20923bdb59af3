//! The performatives (part 2.7), SASL frames (part 5.3) and delivery outcomes (part 3.4) this
//! server reads and writes, as plain structs over [`Value`]. Decoding takes the fields it needs by
//! position and ignores the rest; a missing mandatory field is an error.

use super::codec::{DecodeError, Decoder, Value, encode};

pub const OPEN: u64 = 0x10;
pub const BEGIN: u64 = 0x11;
pub const ATTACH: u64 = 0x12;
pub const FLOW: u64 = 0x13;
pub const TRANSFER: u64 = 0x14;
pub const DISPOSITION: u64 = 0x15;
pub const DETACH: u64 = 0x16;
pub const END: u64 = 0x17;
pub const CLOSE: u64 = 0x18;
pub const ERROR: u64 = 0x1d;
pub const ACCEPTED: u64 = 0x24;
pub const REJECTED: u64 = 0x25;
pub const SOURCE: u64 = 0x28;
pub const TARGET: u64 = 0x29;
pub const SASL_MECHANISMS: u64 = 0x40;
pub const SASL_INIT: u64 = 0x41;
pub const SASL_OUTCOME: u64 = 0x44;

/// The fields of a described list, by position; an absent field and `null` read the same.
pub struct Fields(Vec<Value>);

impl Fields {
    fn from(v: Value) -> Result<(u64, Fields), DecodeError> {
        match v {
            Value::Described(d, inner) => {
                let code = d.as_u64().ok_or(DecodeError::Invalid(
                    "symbolic descriptors are not supported",
                ))?;
                match *inner {
                    Value::List(items) => Ok((code, Fields(items))),
                    _ => Err(DecodeError::Invalid("composite is not a list")),
                }
            }
            _ => Err(DecodeError::Invalid("performative is not a described list")),
        }
    }

    pub fn get(&self, i: usize) -> Option<&Value> {
        self.0.get(i).filter(|v| !v.is_null())
    }

    fn take(&mut self, i: usize) -> Value {
        self.0
            .get_mut(i)
            .map(|v| std::mem::replace(v, Value::Null))
            .unwrap_or(Value::Null)
    }

    fn u32(&self, i: usize) -> Option<u32> {
        self.get(i)?.as_u64().and_then(|v| u32::try_from(v).ok())
    }

    fn text(&self, i: usize) -> Option<String> {
        self.get(i)?.as_text().map(str::to_string)
    }

    fn bool(&self, i: usize) -> bool {
        self.get(i).and_then(Value::as_bool).unwrap_or(false)
    }

    fn need_u32(&self, i: usize, what: &'static str) -> Result<u32, DecodeError> {
        self.u32(i).ok_or(DecodeError::Invalid(what))
    }
}

#[derive(Debug, Clone, Default)]
pub struct Open {
    pub container_id: String,
    pub hostname: Option<String>,
    pub max_frame_size: Option<u32>,
    pub channel_max: Option<u32>,
    pub idle_timeout_ms: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct Begin {
    pub remote_channel: Option<u32>,
    pub next_outgoing_id: u32,
    pub incoming_window: u32,
    pub outgoing_window: u32,
}

#[derive(Debug, Clone)]
pub struct Attach {
    pub name: String,
    pub handle: u32,
    /// true: the peer is the receiver.
    pub role_receiver: bool,
    pub snd_settle_mode: Option<u8>,
    pub rcv_settle_mode: Option<u8>,
    pub source: Value,
    pub target: Value,
    pub initial_delivery_count: Option<u32>,
}

#[derive(Debug, Clone, Default)]
pub struct Flow {
    pub next_incoming_id: Option<u32>,
    pub incoming_window: u32,
    pub next_outgoing_id: u32,
    pub outgoing_window: u32,
    pub handle: Option<u32>,
    pub delivery_count: Option<u32>,
    pub link_credit: Option<u32>,
    pub drain: bool,
    pub echo: bool,
}

#[derive(Debug, Clone)]
pub struct Transfer {
    pub handle: u32,
    pub delivery_id: Option<u32>,
    pub delivery_tag: Option<Vec<u8>>,
    pub settled: bool,
    pub more: bool,
    pub aborted: bool,
}

#[derive(Debug, Clone)]
pub struct Detach {
    pub handle: u32,
    pub closed: bool,
}

#[derive(Debug)]
pub enum Performative {
    Open(Open),
    Begin(Begin),
    Attach(Attach),
    Flow(Flow),
    Transfer(Transfer),
    /// Dispositions from peers only settle what this server sent; it needs none of their fields.
    Disposition,
    Detach(Detach),
    End,
    Close,
}

/// Decodes the performative at the start of an AMQP frame body; returns it and where the
/// payload starts.
pub fn decode_performative(body: &[u8]) -> Result<(Performative, usize), DecodeError> {
    let mut d = Decoder::new(body);
    let (code, mut f) = Fields::from(d.value()?)?;
    let p = match code {
        OPEN => Performative::Open(Open {
            container_id: f
                .text(0)
                .ok_or(DecodeError::Invalid("open without container-id"))?,
            hostname: f.text(1),
            max_frame_size: f.u32(2),
            channel_max: f.u32(3),
            idle_timeout_ms: f.u32(4),
        }),
        BEGIN => Performative::Begin(Begin {
            remote_channel: f.u32(0),
            next_outgoing_id: f.need_u32(1, "begin without next-outgoing-id")?,
            incoming_window: f.need_u32(2, "begin without incoming-window")?,
            outgoing_window: f.need_u32(3, "begin without outgoing-window")?,
        }),
        ATTACH => Performative::Attach(Attach {
            name: f
                .text(0)
                .ok_or(DecodeError::Invalid("attach without name"))?,
            handle: f.need_u32(1, "attach without handle")?,
            role_receiver: f
                .get(2)
                .and_then(Value::as_bool)
                .ok_or(DecodeError::Invalid("attach without role"))?,
            snd_settle_mode: f.u32(3).and_then(|v| u8::try_from(v).ok()),
            rcv_settle_mode: f.u32(4).and_then(|v| u8::try_from(v).ok()),
            source: f.take(5),
            target: f.take(6),
            initial_delivery_count: f.u32(9),
        }),
        FLOW => Performative::Flow(Flow {
            next_incoming_id: f.u32(0),
            incoming_window: f.need_u32(1, "flow without incoming-window")?,
            next_outgoing_id: f.need_u32(2, "flow without next-outgoing-id")?,
            outgoing_window: f.need_u32(3, "flow without outgoing-window")?,
            handle: f.u32(4),
            delivery_count: f.u32(5),
            link_credit: f.u32(6),
            drain: f.bool(8),
            echo: f.bool(9),
        }),
        TRANSFER => Performative::Transfer(Transfer {
            handle: f.need_u32(0, "transfer without handle")?,
            delivery_id: f.u32(1),
            delivery_tag: match f.get(2) {
                Some(Value::Binary(b)) => Some(b.clone()),
                _ => None,
            },
            settled: f.bool(4),
            more: f.bool(5),
            aborted: f.bool(9),
        }),
        DISPOSITION => Performative::Disposition,
        DETACH => Performative::Detach(Detach {
            handle: f.need_u32(0, "detach without handle")?,
            closed: f.bool(1),
        }),
        END => Performative::End,
        CLOSE => Performative::Close,
        _ => return Err(DecodeError::Invalid("unknown performative")),
    };
    Ok((p, d.position()))
}

/// The address of a source or target terminus.
pub fn terminus_address(t: &Value) -> Option<&str> {
    match t {
        Value::Described(_, inner) => match inner.as_ref() {
            Value::List(items) => items.first().and_then(Value::as_text),
            _ => None,
        },
        _ => None,
    }
}

/// The filter set (field 7) of a source terminus.
pub fn source_filter(t: &Value) -> Option<&Value> {
    match t {
        Value::Described(_, inner) => match inner.as_ref() {
            Value::List(items) => items.get(7).filter(|v| !v.is_null()),
            _ => None,
        },
        _ => None,
    }
}

/// A composite with every field present: trailing nulls may be omitted by the spec, but pyamqp
/// (azure-eventhub's AMQP stack) indexes fields by position and fails on short lists.
fn full(code: u64, mut fields: Vec<Value>, arity: usize) -> Value {
    fields.resize(arity.max(fields.len()), Value::Null);
    Value::described(code, fields)
}

/// `amqp:error:list`.
pub fn error(condition: &str, description: &str) -> Value {
    full(
        ERROR,
        vec![Value::sym(condition), Value::str(description)],
        3,
    )
}

pub fn encode_value(v: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    encode(v, &mut out);
    out
}

/// The server's open: `max_frame_size`, one channel range, idle timeout in milliseconds.
pub fn open(container_id: &str, max_frame_size: u32, channel_max: u16, idle_ms: u32) -> Value {
    full(
        OPEN,
        vec![
            Value::str(container_id),
            Value::Null,
            Value::Uint(max_frame_size),
            Value::Ushort(channel_max),
            Value::Uint(idle_ms),
        ],
        10,
    )
}

pub fn begin(remote_channel: u16, next_outgoing_id: u32, incoming_window: u32) -> Value {
    full(
        BEGIN,
        vec![
            Value::Ushort(remote_channel),
            Value::Uint(next_outgoing_id),
            Value::Uint(incoming_window),
            Value::Uint(u32::MAX >> 1),
            Value::Uint(u32::MAX >> 1),
        ],
        8,
    )
}

/// The answer to `peer`'s attach: same name and handle, opposite role. `accept` false answers
/// with a null terminus on the side the server would own, the spec's way to refuse a link before
/// detaching it.
pub fn attach_reply(peer: &Attach, accept: bool, initial_delivery_count: u32) -> Value {
    // A null or empty terminus from the peer is echoed as one naming the link: pyamqp treats a
    // null or empty source or target in the answer as a refusal.
    let or_named = |t: &Value, code: u64| match terminus_address(t) {
        None => Value::described(code, vec![Value::str(&peer.name)]),
        Some(_) => t.clone(),
    };
    let (source, target) = match (accept, peer.role_receiver) {
        (true, _) => (
            or_named(&peer.source, SOURCE),
            or_named(&peer.target, TARGET),
        ),
        // We would be the sender: the source is ours to give.
        (false, true) => (Value::Null, peer.target.clone()),
        (false, false) => (peer.source.clone(), Value::Null),
    };
    let mut fields = vec![
        Value::str(&peer.name),
        Value::Uint(peer.handle),
        Value::Bool(!peer.role_receiver),
        peer.snd_settle_mode.map_or(Value::Null, Value::Ubyte),
        peer.rcv_settle_mode.map_or(Value::Null, Value::Ubyte),
        source,
        target,
        Value::Null,
        Value::Null,
    ];
    fields.push(match peer.role_receiver {
        true => Value::Uint(initial_delivery_count),
        false => Value::Null,
    });
    full(ATTACH, fields, 14)
}

pub struct LinkFlow {
    pub next_incoming_id: u32,
    pub incoming_window: u32,
    pub next_outgoing_id: u32,
    pub handle: Option<u32>,
    pub delivery_count: u32,
    pub link_credit: u32,
    pub drain: bool,
}

pub fn flow(f: &LinkFlow) -> Value {
    let mut fields = vec![
        Value::Uint(f.next_incoming_id),
        Value::Uint(f.incoming_window),
        Value::Uint(f.next_outgoing_id),
        Value::Uint(u32::MAX >> 1),
    ];
    if let Some(h) = f.handle {
        fields.extend([
            Value::Uint(h),
            Value::Uint(f.delivery_count),
            Value::Uint(f.link_credit),
            Value::Uint(0),
            Value::Bool(f.drain),
        ]);
    }
    full(FLOW, fields, 11)
}

pub fn transfer(handle: u32, delivery_id: u32, settled: bool, more: bool) -> Value {
    full(
        TRANSFER,
        vec![
            Value::Uint(handle),
            Value::Uint(delivery_id),
            Value::Binary(delivery_id.to_be_bytes().to_vec()),
            Value::Uint(0),
            Value::Bool(settled),
            Value::Bool(more),
        ],
        11,
    )
}

/// A settled disposition from the receiver's side: Accepted, or Rejected with `error`.
pub fn disposition(delivery_id: u32, rejected: Option<Value>) -> Value {
    let state = match rejected {
        None => Value::described(ACCEPTED, vec![]),
        Some(e) => Value::described(REJECTED, vec![e]),
    };
    full(
        DISPOSITION,
        vec![
            Value::Bool(true),
            Value::Uint(delivery_id),
            Value::Uint(delivery_id),
            Value::Bool(true),
            state,
        ],
        6,
    )
}

pub fn detach(handle: u32, error: Option<Value>) -> Value {
    Value::described(
        DETACH,
        vec![
            Value::Uint(handle),
            Value::Bool(true),
            error.unwrap_or(Value::Null),
        ],
    )
}

pub fn end(error: Option<Value>) -> Value {
    Value::described(END, vec![error.unwrap_or(Value::Null)])
}

pub fn close(error: Option<Value>) -> Value {
    Value::described(CLOSE, vec![error.unwrap_or(Value::Null)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_decodes_and_a_refusal_nulls_our_terminus() {
        let source = Value::described(SOURCE, vec![Value::str("$cbs")]);
        let target = Value::described(TARGET, vec![Value::str("cbs")]);
        let bytes = encode_value(&Value::described(
            ATTACH,
            vec![
                Value::str("l1"),
                Value::Uint(4),
                Value::Bool(true),
                Value::Null,
                Value::Ubyte(0),
                source.clone(),
                target.clone(),
            ],
        ));
        let (p, used) = decode_performative(&bytes).unwrap();
        assert_eq!(used, bytes.len());
        let Performative::Attach(a) = p else {
            panic!("attach")
        };
        assert_eq!(
            (a.name.as_str(), a.handle, a.role_receiver),
            ("l1", 4, true)
        );
        assert_eq!(terminus_address(&a.source), Some("$cbs"));
        let reply = attach_reply(&a, false, 0);
        let Value::Described(_, fields) = reply else {
            panic!("described")
        };
        let Value::List(fields) = *fields else {
            panic!("list")
        };
        assert_eq!((&fields[5], &fields[6]), (&Value::Null, &target));
    }

    #[test]
    fn malformed_performatives_are_errors() {
        assert!(decode_performative(&encode_value(&Value::described(OPEN, vec![]))).is_err());
        assert!(decode_performative(&encode_value(&Value::described(0x99, vec![]))).is_err());
        assert!(decode_performative(&encode_value(&Value::Uint(3))).is_err());
        assert!(decode_performative(&[]).is_err());
    }
}
