//! The AMQP 1.0 type system (OASIS AMQP 1.0 part 1): one [`Value`] enum, a decoder that checks
//! every length against the bytes it was given and stops at [`MAX_DEPTH`] levels of nesting, and
//! an encoder. Nothing here trusts the peer: a length past the end, a count larger than the bytes
//! that could hold it or an unknown format code is a [`DecodeError`], never a panic or a large
//! allocation. (serde_amqp, the codec of fe2o3-amqp, has no depth limit: a 50 KB list of lists
//! overflows the stack and aborts the process; see [`crate::emulator::amqp`].)

use std::fmt;

/// Deeper nesting than any AMQP message or performative needs; the limit keeps recursion bounded.
pub const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Ubyte(u8),
    Ushort(u16),
    Uint(u32),
    Ulong(u64),
    Byte(i8),
    Short(i16),
    Int(i32),
    Long(i64),
    Float(f32),
    Double(f64),
    /// decimal32/64/128, kept as their raw bytes (nothing here computes with them).
    Decimal(Vec<u8>),
    Char(char),
    /// Milliseconds since the Unix epoch.
    Timestamp(i64),
    Uuid([u8; 16]),
    Binary(Vec<u8>),
    String(String),
    Symbol(String),
    List(Vec<Value>),
    Map(Vec<(Value, Value)>),
    Array(Vec<Value>),
    Described(Box<Value>, Box<Value>),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("value runs past the end of its frame")]
    Truncated,
    #[error("unknown format code 0x{0:02x}")]
    UnknownFormat(u8),
    #[error("nesting deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("invalid UTF-8 or char")]
    BadText,
    #[error("{0}")]
    Invalid(&'static str),
}

impl Value {
    pub fn sym(s: &str) -> Value {
        Value::Symbol(s.to_string())
    }

    pub fn str(s: &str) -> Value {
        Value::String(s.to_string())
    }

    /// A described list: how performatives, sections and outcomes are encoded.
    pub fn described(code: u64, fields: Vec<Value>) -> Value {
        Value::Described(Box::new(Value::Ulong(code)), Box::new(Value::List(fields)))
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    /// The text of a string or symbol.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::String(s) | Value::Symbol(s) => Some(s),
            _ => None,
        }
    }

    /// Any unsigned or non-negative signed integer.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::Ubyte(v) => Some(v.into()),
            Value::Ushort(v) => Some(v.into()),
            Value::Uint(v) => Some(v.into()),
            Value::Ulong(v) => Some(v),
            Value::Byte(v) => u64::try_from(v).ok(),
            Value::Short(v) => u64::try_from(v).ok(),
            Value::Int(v) => u64::try_from(v).ok(),
            Value::Long(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self {
            Value::Bool(b) => Some(*b),
            _ => None,
        }
    }

    /// The descriptor code of a described value with a numeric descriptor.
    pub fn descriptor(&self) -> Option<u64> {
        match self {
            Value::Described(d, _) => d.as_u64(),
            _ => None,
        }
    }

    /// The entry of a map under a string or symbol key.
    pub fn map_get(&self, key: &str) -> Option<&Value> {
        match self {
            Value::Map(entries) => entries
                .iter()
                .find(|(k, _)| k.as_text() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Renders a scalar the way IoT Hub shows application properties (numbers in decimal, text as is).
impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Null => Ok(()),
            Value::Bool(b) => write!(f, "{b}"),
            Value::String(s) | Value::Symbol(s) => f.write_str(s),
            Value::Char(c) => write!(f, "{c}"),
            Value::Float(v) => write!(f, "{v}"),
            Value::Double(v) => write!(f, "{v}"),
            Value::Timestamp(ms) => write!(f, "{ms}"),
            Value::Uuid(u) => write!(f, "{}", uuid::Uuid::from_bytes(*u)),
            Value::Binary(b) => f.write_str(&String::from_utf8_lossy(b)),
            other => match other.as_u64() {
                Some(v) => write!(f, "{v}"),
                None => match other {
                    Value::Byte(v) => write!(f, "{v}"),
                    Value::Short(v) => write!(f, "{v}"),
                    Value::Int(v) => write!(f, "{v}"),
                    Value::Long(v) => write!(f, "{v}"),
                    _ => write!(f, "{other:?}"),
                },
            },
        }
    }
}

/// Reads values from a byte slice.
pub struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Decoder<'a> {
    pub fn new(buf: &'a [u8]) -> Self {
        Self { buf, pos: 0 }
    }

    pub fn position(&self) -> usize {
        self.pos
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::Truncated)?;
        let s = self.buf.get(self.pos..end).ok_or(DecodeError::Truncated)?;
        self.pos = end;
        Ok(s)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    /// One value, constructor included.
    pub fn value(&mut self) -> Result<Value, DecodeError> {
        self.value_at(0)
    }

    fn value_at(&mut self, depth: usize) -> Result<Value, DecodeError> {
        if depth > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let code = self.u8()?;
        if code == 0x00 {
            let descriptor = self.value_at(depth + 1)?;
            let value = self.value_at(depth + 1)?;
            return Ok(Value::Described(Box::new(descriptor), Box::new(value)));
        }
        self.body(code, depth)
    }

    /// The value of format `code` whose constructor was already read (arrays share one).
    fn body(&mut self, code: u8, depth: usize) -> Result<Value, DecodeError> {
        Ok(match code {
            0x40 => Value::Null,
            0x41 => Value::Bool(true),
            0x42 => Value::Bool(false),
            0x56 => Value::Bool(self.u8()? != 0),
            0x50 => Value::Ubyte(self.u8()?),
            0x60 => Value::Ushort(u16::from_be_bytes(self.array()?)),
            0x70 => Value::Uint(self.u32()?),
            0x52 => Value::Uint(self.u8()?.into()),
            0x43 => Value::Uint(0),
            0x80 => Value::Ulong(u64::from_be_bytes(self.array()?)),
            0x53 => Value::Ulong(self.u8()?.into()),
            0x44 => Value::Ulong(0),
            0x51 => Value::Byte(self.u8()? as i8),
            0x61 => Value::Short(i16::from_be_bytes(self.array()?)),
            0x71 => Value::Int(i32::from_be_bytes(self.array()?)),
            0x54 => Value::Int((self.u8()? as i8).into()),
            0x81 => Value::Long(i64::from_be_bytes(self.array()?)),
            0x55 => Value::Long((self.u8()? as i8).into()),
            0x72 => Value::Float(f32::from_be_bytes(self.array()?)),
            0x82 => Value::Double(f64::from_be_bytes(self.array()?)),
            0x74 => Value::Decimal(self.take(4)?.to_vec()),
            0x84 => Value::Decimal(self.take(8)?.to_vec()),
            0x94 => Value::Decimal(self.take(16)?.to_vec()),
            0x73 => Value::Char(char::from_u32(self.u32()?).ok_or(DecodeError::BadText)?),
            0x83 => Value::Timestamp(i64::from_be_bytes(self.array()?)),
            0x98 => Value::Uuid(self.array()?),
            0xa0 | 0xb0 | 0xa1 | 0xb1 | 0xa3 | 0xb3 => self.variable(code)?,
            0x45 => Value::List(Vec::new()),
            0xc0 | 0xd0 | 0xc1 | 0xd1 => self.compound(code, depth)?,
            0xe0 | 0xf0 => self.array_value(code, depth)?,
            other => return Err(DecodeError::UnknownFormat(other)),
        })
    }

    fn variable(&mut self, code: u8) -> Result<Value, DecodeError> {
        let len = if code & 0xf0 == 0xa0 {
            self.u8()? as usize
        } else {
            self.u32()? as usize
        };
        let bytes = self.take(len)?;
        let text = || {
            std::str::from_utf8(bytes)
                .map(str::to_string)
                .map_err(|_| DecodeError::BadText)
        };
        Ok(match code {
            0xa0 | 0xb0 => Value::Binary(bytes.to_vec()),
            0xa1 | 0xb1 => Value::String(text()?),
            _ => Value::Symbol(text()?),
        })
    }

    /// Reads `size` and `count` of a compound or array and returns a decoder over its content.
    fn sized(&mut self, wide: bool) -> Result<(Decoder<'a>, usize), DecodeError> {
        let (inner, count) = if wide {
            let size = self.u32()? as usize;
            if size < 4 {
                return Err(DecodeError::Invalid("compound size smaller than its count"));
            }
            let content = self.take(size)?;
            let count = u32::from_be_bytes([content[0], content[1], content[2], content[3]]);
            (Decoder::new(&content[4..]), count as usize)
        } else {
            let size = self.u8()? as usize;
            if size < 1 {
                return Err(DecodeError::Invalid("compound size smaller than its count"));
            }
            let content = self.take(size)?;
            (Decoder::new(&content[1..]), content[0] as usize)
        };
        // Every element takes at least one byte (arrays: see array_value), so a count above the
        // byte count is a lie; refusing it bounds the allocation by the frame size.
        if count > inner.buf.len() + 1 {
            return Err(DecodeError::Invalid("element count larger than its bytes"));
        }
        Ok((inner, count))
    }

    fn compound(&mut self, code: u8, depth: usize) -> Result<Value, DecodeError> {
        let (mut inner, count) = self.sized(code & 0xf0 == 0xd0)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(inner.value_at(depth + 1)?);
        }
        if code & 0x0f == 0x01 {
            if count % 2 != 0 {
                return Err(DecodeError::Invalid("map with an odd element count"));
            }
            let mut entries = Vec::with_capacity(count / 2);
            let mut it = items.into_iter();
            while let (Some(k), Some(v)) = (it.next(), it.next()) {
                entries.push((k, v));
            }
            return Ok(Value::Map(entries));
        }
        Ok(Value::List(items))
    }

    fn array_value(&mut self, code: u8, depth: usize) -> Result<Value, DecodeError> {
        let (mut inner, count) = self.sized(code == 0xf0)?;
        if depth + 1 > MAX_DEPTH {
            return Err(DecodeError::TooDeep);
        }
        let mut element_code = inner.u8()?;
        let mut descriptor = None;
        if element_code == 0x00 {
            descriptor = Some(inner.value_at(depth + 1)?);
            element_code = inner.u8()?;
        }
        if matches!(element_code, 0x40..=0x45) && count > 0 {
            // Zero-width elements: nothing in the bytes bounds how many there are.
            return Err(DecodeError::Invalid("array of zero-width elements"));
        }
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            let v = inner.body(element_code, depth + 1)?;
            items.push(match &descriptor {
                Some(d) => Value::Described(Box::new(d.clone()), Box::new(v)),
                None => v,
            });
        }
        Ok(Value::Array(items))
    }
}

/// Decodes exactly one value from `bytes`.
pub fn decode(bytes: &[u8]) -> Result<Value, DecodeError> {
    Decoder::new(bytes).value()
}

/// Appends the encoding of `v` to `out`.
pub fn encode(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.push(0x40),
        Value::Bool(true) => out.push(0x41),
        Value::Bool(false) => out.push(0x42),
        Value::Ubyte(x) => out.extend([0x50, *x]),
        Value::Ushort(x) => push(out, 0x60, &x.to_be_bytes()),
        Value::Uint(0) => out.push(0x43),
        Value::Uint(x) if *x < 256 => out.extend([0x52, *x as u8]),
        Value::Uint(x) => push(out, 0x70, &x.to_be_bytes()),
        Value::Ulong(0) => out.push(0x44),
        Value::Ulong(x) if *x < 256 => out.extend([0x53, *x as u8]),
        Value::Ulong(x) => push(out, 0x80, &x.to_be_bytes()),
        Value::Byte(x) => out.extend([0x51, *x as u8]),
        Value::Short(x) => push(out, 0x61, &x.to_be_bytes()),
        Value::Int(x) => push(out, 0x71, &x.to_be_bytes()),
        Value::Long(x) => push(out, 0x81, &x.to_be_bytes()),
        Value::Float(x) => push(out, 0x72, &x.to_be_bytes()),
        Value::Double(x) => push(out, 0x82, &x.to_be_bytes()),
        Value::Decimal(b) => push(
            out,
            match b.len() {
                4 => 0x74,
                8 => 0x84,
                _ => 0x94,
            },
            b,
        ),
        Value::Char(c) => push(out, 0x73, &u32::from(*c).to_be_bytes()),
        Value::Timestamp(ms) => push(out, 0x83, &ms.to_be_bytes()),
        Value::Uuid(u) => push(out, 0x98, u),
        Value::Binary(b) => variable(out, 0xa0, b),
        Value::String(s) => variable(out, 0xa1, s.as_bytes()),
        Value::Symbol(s) => variable(out, 0xa3, s.as_bytes()),
        Value::List(items) if items.is_empty() => out.push(0x45),
        Value::List(items) => compound(out, 0xd0, items.iter()),
        Value::Map(entries) => compound(out, 0xd1, entries.iter().flat_map(|(k, v)| [k, v])),
        Value::Array(items) => array(out, items),
        Value::Described(d, inner) => {
            out.push(0x00);
            encode(d, out);
            encode(inner, out);
        }
    }
}

fn push(out: &mut Vec<u8>, code: u8, bytes: &[u8]) {
    out.push(code);
    out.extend_from_slice(bytes);
}

fn variable(out: &mut Vec<u8>, short_code: u8, bytes: &[u8]) {
    match u8::try_from(bytes.len()) {
        Ok(len) => out.extend([short_code, len]),
        Err(_) => push(out, short_code | 0x10, &(bytes.len() as u32).to_be_bytes()),
    }
    out.extend_from_slice(bytes);
}

/// A list or map in its 32-bit form (simple; the sizes are patched in after the content).
fn compound<'v>(out: &mut Vec<u8>, code: u8, items: impl Iterator<Item = &'v Value>) {
    out.push(code);
    let size_at = out.len();
    out.extend([0u8; 8]);
    let mut count = 0u32;
    for item in items {
        encode(item, out);
        count += 1;
    }
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out[size_at + 4..size_at + 8].copy_from_slice(&count.to_be_bytes());
}

/// An array in its 32-bit form. The element constructor comes from the first element; every
/// element is written in that type's wide form (the types this server sends in arrays).
fn array(out: &mut Vec<u8>, items: &[Value]) {
    let code = match items.first() {
        Some(Value::String(_)) => 0xb1,
        Some(Value::Binary(_)) => 0xb0,
        Some(Value::Ulong(_)) => 0x80,
        Some(Value::Uint(_)) => 0x70,
        Some(Value::Long(_)) => 0x81,
        Some(Value::Int(_)) => 0x71,
        _ => 0xb3,
    };
    out.push(0xf0);
    let size_at = out.len();
    out.extend([0u8; 8]);
    out.push(code);
    for item in items {
        match item {
            Value::String(s) | Value::Symbol(s) => {
                out.extend((s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
            Value::Binary(b) => {
                out.extend((b.len() as u32).to_be_bytes());
                out.extend_from_slice(b);
            }
            Value::Ulong(x) => out.extend(x.to_be_bytes()),
            Value::Uint(x) => out.extend(x.to_be_bytes()),
            Value::Long(x) => out.extend(x.to_be_bytes()),
            Value::Int(x) => out.extend(x.to_be_bytes()),
            other => {
                // Mixed arrays are not sent by this server; write the text form as a symbol.
                let s = other.to_string();
                out.extend((s.len() as u32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
    }
    let size = (out.len() - size_at - 4) as u32;
    out[size_at..size_at + 4].copy_from_slice(&size.to_be_bytes());
    out[size_at + 4..size_at + 8].copy_from_slice(&(items.len() as u32).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(v: Value) {
        let mut out = Vec::new();
        encode(&v, &mut out);
        assert_eq!(decode(&out).unwrap(), v, "bytes {out:02x?}");
    }

    #[test]
    fn values_round_trip() {
        for v in [
            Value::Null,
            Value::Bool(true),
            Value::Uint(7),
            Value::Uint(70_000),
            Value::Ulong(0),
            Value::Ulong(1 << 40),
            Value::Int(-5),
            Value::Long(-1),
            Value::Double(1.5),
            Value::Timestamp(1_700_000_000_000),
            Value::Uuid([7; 16]),
            Value::str("héllo"),
            Value::sym("amqp:accepted:list"),
            Value::Binary(vec![1; 300]),
            Value::List(vec![]),
            Value::described(0x24, vec![]),
            Value::Map(vec![(Value::str("k"), Value::Int(1))]),
            Value::Array(vec![Value::sym("MSSBCBS"), Value::sym("PLAIN")]),
            Value::Array(vec![Value::str("0"), Value::str("1")]),
        ] {
            round_trip(v);
        }
    }

    #[test]
    fn short_forms_decode() {
        // list8 of [smallulong 3, str8 "ab", true]
        let bytes = [0xc0, 0x08, 0x03, 0x53, 0x03, 0xa1, 0x02, b'a', b'b', 0x41];
        assert_eq!(
            decode(&bytes).unwrap(),
            Value::List(vec![Value::Ulong(3), Value::str("ab"), Value::Bool(true)])
        );
        // array8 of two sym8 elements
        let bytes = [0xe0, 0x06, 0x02, 0xa3, 0x01, b'x', 0x01, b'y'];
        assert_eq!(
            decode(&bytes).unwrap(),
            Value::Array(vec![Value::sym("x"), Value::sym("y")])
        );
    }

    #[test]
    fn hostile_input_is_an_error_not_a_panic() {
        // Lengths past the end.
        assert_eq!(
            decode(&[0xb1, 0, 0, 0, 9, b'a']),
            Err(DecodeError::Truncated)
        );
        assert_eq!(
            decode(&[0xd0, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Truncated)
        );
        // A count no bytes could hold.
        assert!(decode(&[0xd0, 0, 0, 0, 4, 0xff, 0xff, 0xff, 0xff]).is_err());
        // Zero-width arrays.
        assert!(decode(&[0xf0, 0, 0, 0, 5, 0, 0, 0x10, 0, 0x40]).is_err());
        // Unknown codes, bad UTF-8, bad chars.
        assert_eq!(decode(&[0x33]), Err(DecodeError::UnknownFormat(0x33)));
        assert_eq!(decode(&[0xa1, 1, 0xff]), Err(DecodeError::BadText));
        assert_eq!(
            decode(&[0x73, 0x00, 0x11, 0x00, 0x00]),
            Err(DecodeError::BadText)
        );
        // A list nested 6000 deep (serde_amqp overflows the stack on this) stops at MAX_DEPTH.
        let mut nested = vec![0x45u8];
        for _ in 0..6000 {
            let mut v = vec![0xd0u8];
            v.extend(((nested.len() + 4) as u32).to_be_bytes());
            v.extend(1u32.to_be_bytes());
            v.extend(nested);
            nested = v;
        }
        assert_eq!(decode(&nested), Err(DecodeError::TooDeep));
        // Described values nest too.
        let described = vec![0x00u8; 100];
        assert!(decode(&described).is_err());
    }

    #[test]
    fn every_truncation_of_a_valid_value_is_an_error() {
        let v = Value::described(
            0x12,
            vec![
                Value::str("link"),
                Value::Uint(1),
                Value::Map(vec![(Value::sym("k"), Value::Array(vec![Value::sym("a")]))]),
            ],
        );
        let mut out = Vec::new();
        encode(&v, &mut out);
        for cut in 0..out.len() {
            assert!(decode(&out[..cut]).is_err(), "cut at {cut}");
        }
    }
}
