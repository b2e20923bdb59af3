//! Payload sizes: `4KB`, `512B`, `1.5KB` (1 KB = 1024 bytes, as IoT Hub's 4 KB meter counts),
//! and the raw payload's size model: fixed, or log-normal by its median and 99th percentile.

use std::borrow::Cow;
use std::fmt;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

/// The largest device-to-cloud message IoT Hub takes: 256 KB (body and properties).
pub const MAX_MESSAGE_BYTES: u64 = 256 * 1024;

/// The size of raw payloads: fixed, or a log-normal distribution given by its median and 99th
/// percentile (draws are kept within 0..=256 KB).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum SizeModel {
    Fixed(u64),
    LogNormal { p50: u64, p99: u64 },
}

impl SizeModel {
    /// The mean size in bytes (for planning: the hub's meter per message).
    pub fn mean_bytes(&self) -> f64 {
        match *self {
            SizeModel::Fixed(n) => n as f64,
            SizeModel::LogNormal { p50, p99 } => {
                let (mu, sigma) = super::draw::lognormal_parameters(p50 as f64, p99 as f64);
                (mu + sigma * sigma / 2.0)
                    .exp()
                    .min(MAX_MESSAGE_BYTES as f64)
            }
        }
    }
}

/// Parses `4KB`, `512B`, `1.5 KB`, `16KiB`, `1MB` or a plain number of bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let bad = || format!("invalid size {s:?}: expected bytes such as 512B, 4KB or 1.5KB");
    let t = s.trim();
    let end = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let value: f64 = t[..end].parse().map_err(|_| bad())?;
    let unit = match t[end..].trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1.0,
        "KB" | "KIB" | "K" => 1024.0,
        "MB" | "MIB" | "M" => 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let bytes = (value * unit).round();
    if !bytes.is_finite() || bytes > MAX_MESSAGE_BYTES as f64 {
        return Err(format!(
            "size {s:?} is over 256 KB, the largest message IoT Hub takes"
        ));
    }
    Ok(bytes as u64)
}

/// A size as the parser reads it: a number with B, KB (KiB, K) or MB (MiB, M), any case.
fn byte_size_schema() -> Schema {
    json_schema!({
        "anyOf": [
            {"type": "integer", "minimum": 0, "maximum": MAX_MESSAGE_BYTES},
            {
                "type": "string",
                "pattern": format!(
                    r"^\s*{}\s*([bB]|[kKmM]([iI]?[bB])?)?\s*$",
                    super::units::NUMBER_PATTERN
                ),
            },
        ],
    })
}

impl JsonSchema for SizeModel {
    fn schema_name() -> Cow<'static, str> {
        "Size".into()
    }
    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "description": "A payload size (1 KB = 1024 bytes, at most 256 KB): fixed, such as \
                            4KB, 512B or 1.5KB, or log-normal through its median and 99th \
                            percentile, such as {dist: lognormal, p50: 1KB, p99: 16KB}.",
            "anyOf": [
                byte_size_schema(),
                {
                    "type": "object",
                    "properties": {
                        "dist": {"enum": ["lognormal"], "description": "The distribution."},
                        "p50": {"allOf": [byte_size_schema()], "description": "The median size."},
                        "p99": {
                            "allOf": [byte_size_schema()],
                            "description": "The 99th percentile (above p50).",
                        },
                    },
                    "required": ["dist", "p50", "p99"],
                    "additionalProperties": false,
                },
            ],
        })
    }
}

impl<'de> Deserialize<'de> for SizeModel {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SizeVisitor)
    }
}

struct SizeVisitor;

impl<'de> Visitor<'de> for SizeVisitor {
    type Value = SizeModel;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a size such as 4KB, or {dist: lognormal, p50: 1KB, p99: 16KB}")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<SizeModel, E> {
        self.visit_str(&v.to_string())
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<SizeModel, E> {
        parse_bytes(v).map(SizeModel::Fixed).map_err(E::custom)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SizeModel, A::Error> {
        let (mut dist, mut p50, mut p99) = (None, None, None);
        while let Some(key) = map.next_key::<String>()? {
            let bytes = |s: String| parse_bytes(&s).map_err(de::Error::custom);
            match key.as_str() {
                "dist" => dist = Some(map.next_value::<String>()?),
                "p50" => p50 = Some(bytes(map.next_value::<ByteText>()?.0)?),
                "p99" => p99 = Some(bytes(map.next_value::<ByteText>()?.0)?),
                other => {
                    return Err(de::Error::custom(format!(
                        "unknown field `{other}`, expected one of dist, p50, p99"
                    )));
                }
            }
        }
        match (dist.as_deref(), p50, p99) {
            (Some("lognormal"), Some(p50), Some(p99)) if 1 <= p50 && p50 < p99 => {
                Ok(SizeModel::LogNormal { p50, p99 })
            }
            (Some("lognormal"), Some(_), Some(_)) => Err(de::Error::custom(
                "size: p50 must be at least 1 byte and below p99",
            )),
            (Some("lognormal"), _, _) => Err(de::Error::custom(
                "size: a lognormal needs p50 and p99, e.g. {dist: lognormal, p50: 1KB, p99: 16KB}",
            )),
            (other, _, _) => Err(de::Error::custom(format!(
                "size: unknown dist {other:?}; expected lognormal"
            ))),
        }
    }
}

/// A size as written: text (`1KB`) or a number of bytes.
struct ByteText(String);

impl<'de> Deserialize<'de> for ByteText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = ByteText;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a size such as 1KB")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<ByteText, E> {
                Ok(ByteText(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<ByteText, E> {
                Ok(ByteText(v.to_string()))
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for SizeModel {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        match *self {
            SizeModel::Fixed(n) => s.serialize_str(&format!("{n}B")),
            SizeModel::LogNormal { p50, p99 } => {
                let mut m = s.serialize_map(Some(3))?;
                m.serialize_entry("dist", "lognormal")?;
                m.serialize_entry("p50", &format!("{p50}B"))?;
                m.serialize_entry("p99", &format!("{p99}B"))?;
                m.end()
            }
        }
    }
}
