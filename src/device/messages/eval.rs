//! Running a compiled [`Program`] for one message of one device: the per-device [`State`]
//! (its random generator, its random walks, the values captured this message) and the
//! [`Context`] of the message, and how values are written as JSON and as property text.

use std::borrow::Cow;

use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};

use super::program::{Gen, Op, Program};
use super::value::{Value, number, write_json};
use crate::scenario::draw;

/// What one device keeps between its messages.
pub struct State {
    pub rng: SmallRng,
    /// The current value of each random walk, by slot.
    walks: Vec<f64>,
    /// The values references read, by capture slot, for the message being built.
    captures: Vec<Value<'static>>,
}

impl State {
    /// A device's state for `program`, seeded with `seed`: each walk starts where its template
    /// says, or at a uniform draw of its own.
    pub fn new(program: &Program, seed: u64) -> Self {
        let mut rng = SmallRng::seed_from_u64(seed);
        let walks = program
            .walks
            .iter()
            .map(|w| {
                w.start
                    .unwrap_or_else(|| draw::uniform(&mut rng, w.min, w.max))
            })
            .collect();
        Self {
            rng,
            walks,
            captures: vec![Value::Null; program.captures],
        }
    }
}

/// What a message's generators may read.
pub struct Context<'a> {
    pub device_id: &'a str,
    pub cohort: &'a str,
    pub index: u64,
    /// The message's number for this device, from 0.
    pub n: u64,
    /// The wall clock, in Unix milliseconds.
    pub now_ms: i64,
}

impl Program {
    /// Writes the payload's JSON into `out`.
    pub fn write_payload(&self, out: &mut String, state: &mut State, ctx: &Context) {
        run(&self.ops, out, state, ctx);
    }
}

fn run(ops: &[Op], out: &mut String, state: &mut State, ctx: &Context) {
    for op in ops {
        match op {
            Op::Lit(text) => out.push_str(text),
            Op::Gen {
                generator: Gen::Text(n),
                capture: None,
            } => {
                out.push('"');
                write_letters(out, *n, &mut state.rng);
                out.push('"');
            }
            Op::Gen {
                generator: Gen::Repeat { count, body },
                ..
            } => {
                out.push('[');
                for i in 0..*count {
                    if i > 0 {
                        out.push(',');
                    }
                    run(body, out, state, ctx);
                }
                out.push(']');
            }
            Op::Gen { generator, capture } => {
                let v = value(generator, state, ctx);
                write_json(out, &v);
                if let Some(slot) = capture {
                    state.captures[*slot] = v.into_owned();
                }
            }
        }
    }
}

/// The value `generator` yields for this message (advancing the device's walks and generator).
pub fn value<'a>(generator: &'a Gen, state: &mut State, ctx: &Context<'a>) -> Value<'a> {
    let rng = &mut state.rng;
    match generator {
        Gen::DeviceId => Value::Str(Cow::Borrowed(ctx.device_id)),
        Gen::DeviceCohort => Value::Str(Cow::Borrowed(ctx.cohort)),
        Gen::DeviceIndex => Value::Int(ctx.index as i64),
        Gen::Counter { start, step } => {
            Value::Int(start.saturating_add(step.saturating_mul(ctx.n as i64)))
        }
        Gen::Timestamp => Value::Str(Cow::Owned(timestamp(ctx.now_ms))),
        Gen::TimestampMs => Value::Int(ctx.now_ms),
        Gen::Uuid => {
            let mut bytes = [0u8; 16];
            rng.fill_bytes(&mut bytes);
            let id = uuid::Builder::from_random_bytes(bytes).into_uuid();
            Value::Str(Cow::Owned(id.hyphenated().to_string()))
        }
        Gen::Uniform(u) => Value::Float(draw::uniform(rng, u.min, u.max), u.decimals),
        Gen::Normal(n) => {
            let x = n.mean + n.stddev * draw::normal(rng);
            let x = x.clamp(n.min.unwrap_or(f64::MIN), n.max.unwrap_or(f64::MAX));
            Value::Float(x, n.decimals)
        }
        Gen::Walk { slot, walk } => {
            let x = state.walks[*slot];
            let step = match walk.step > 0.0 {
                true => walk.step * draw::normal(rng),
                false => 0.0,
            };
            state.walks[*slot] = (x + walk.drift + step).clamp(walk.min, walk.max);
            Value::Float(x, walk.decimals)
        }
        Gen::Choice { values, cumulative } => {
            let total = cumulative.last().copied().unwrap_or(0.0);
            let u = draw::unit(rng) * total;
            let i = cumulative
                .partition_point(|&c| c <= u)
                .min(values.len() - 1);
            Value::Str(Cow::Borrowed(&values[i]))
        }
        Gen::Bool(p) => Value::Bool(draw::unit(rng) < *p),
        Gen::Text(n) => {
            let mut s = String::with_capacity(*n as usize);
            write_letters(&mut s, *n, rng);
            Value::Str(Cow::Owned(s))
        }
        Gen::Const(v) => v.clone(),
        Gen::Field(slot) => state.captures[*slot].clone(),
        Gen::Above { slot, threshold } => {
            Value::Bool(number(&state.captures[*slot]).is_some_and(|x| x > *threshold))
        }
        // Only in payloads, where `run` writes it.
        Gen::Repeat { .. } => Value::Null,
    }
}

/// `n` random lowercase letters.
fn write_letters(out: &mut String, n: u32, rng: &mut SmallRng) {
    let mut left = n as usize;
    out.reserve(left);
    while left > 0 {
        // Eight letters from each 64-bit draw (a byte modulo 26: a bias of under 1%, harmless
        // for filler).
        let bytes = rng.next_u64().to_le_bytes();
        for b in bytes.iter().take(left.min(8)) {
            out.push(char::from(b'a' + b % 26));
        }
        left = left.saturating_sub(8);
    }
}

/// RFC 3339 UTC with milliseconds: `2026-11-30T14:36:46.123Z`.
pub fn timestamp(unix_ms: i64) -> String {
    let secs = unix_ms.div_euclid(1000);
    let ms = unix_ms.rem_euclid(1000);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{ms:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
