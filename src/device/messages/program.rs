//! A payload template (and the templated properties) compiled once per cohort for cheap
//! generation: constant parts of the JSON are rendered to text once, and generators become
//! [`Gen`] steps with their state slots (one per random walk) and capture slots (the fields
//! `$field` and `$above` read) numbered. [`super::eval`] runs the steps for each message.

use std::borrow::Cow;
use std::collections::HashMap;

use super::value::{self, Value};
use crate::scenario::telemetry::Property;
use crate::scenario::template::{Generator, Node, Normal, Uniform, Walk};

/// One generator, ready to run.
#[derive(Debug, Clone)]
pub enum Gen {
    DeviceId,
    DeviceCohort,
    DeviceIndex,
    Counter {
        start: i64,
        step: i64,
    },
    Timestamp,
    TimestampMs,
    Uuid,
    Uniform(Uniform),
    Normal(Normal),
    Walk {
        slot: usize,
        walk: Walk,
    },
    /// The values and the running sums of their weights.
    Choice {
        values: Box<[Box<str>]>,
        cumulative: Box<[f64]>,
    },
    Bool(f64),
    Text(u32),
    /// A reference to a field whose value is known when compiling.
    Const(Value<'static>),
    /// The value captured in a slot this message.
    Field(usize),
    /// Whether the number captured in a slot is above the threshold.
    Above {
        slot: usize,
        threshold: f64,
    },
    /// An array of `count` items, each written by `body`.
    Repeat {
        count: u32,
        body: Box<[Op]>,
    },
}

/// One step of writing a payload.
#[derive(Debug, Clone)]
pub enum Op {
    /// JSON text written as it is.
    Lit(Box<str>),
    /// A generated value, kept in capture slot `capture` if a reference reads it.
    Gen {
        generator: Gen,
        capture: Option<usize>,
    },
}

/// One property of every message.
#[derive(Debug, Clone)]
pub struct PropertyOp {
    /// The name as IoT Hub counts it (`$.ct` counts only its value).
    pub name: Box<str>,
    pub value: PropertyValue,
}

#[derive(Debug, Clone)]
pub enum PropertyValue {
    Const(Box<str>),
    Gen(Gen),
}

/// A cohort's template and properties, compiled.
#[derive(Debug, Clone, Default)]
pub struct Program {
    pub ops: Vec<Op>,
    pub properties: Vec<PropertyOp>,
    /// The random walks' settings, by slot.
    pub walks: Vec<Walk>,
    /// How many capture slots a message fills.
    pub captures: usize,
    /// About how long a payload and a property bag are, so building rarely reallocates.
    pub payload_hint: usize,
    pub bag_hint: usize,
}

impl Program {
    /// Compiles `template` (absent for raw payloads) and `properties`. References that do not
    /// resolve (the scenario's validation refuses them) yield `null`.
    pub fn compile(template: Option<&Node>, properties: &[Property]) -> Self {
        let mut c = Compiler {
            template,
            slots: HashMap::new(),
            program: Program::default(),
        };
        c.assign_capture_slots(properties);
        if let Some(t) = template {
            let mut text = String::new();
            c.node(t, "", false, &mut text);
            c.flush(&mut text);
        }
        c.program.properties = properties
            .iter()
            .map(|p| PropertyOp {
                name: p.name.clone().into(),
                value: c.property(&p.value),
            })
            .collect();
        c.program.payload_hint = estimate(&c.program.ops);
        c.program.bag_hint = c
            .program
            .properties
            .iter()
            .map(|p| {
                p.name.len()
                    + 2
                    + match &p.value {
                        PropertyValue::Const(v) => v.len() * 3,
                        PropertyValue::Gen(_) => 40,
                    }
            })
            .sum();
        c.program
    }
}

struct Compiler<'t> {
    template: Option<&'t Node>,
    /// Referenced path → its capture slot (for fields that are generated).
    slots: HashMap<String, usize>,
    program: Program,
}

/// The `$field`/`$above` references in a node.
fn references(node: &Node) -> Vec<String> {
    let mut paths = Vec::new();
    node.walk(false, &mut |n, _| match n {
        Node::Gen(Generator::Field(f)) => paths.push(f.path.clone()),
        Node::Gen(Generator::Above(a)) => paths.push(a.field.path.clone()),
        _ => {}
    });
    paths
}

impl Compiler<'_> {
    fn assign_capture_slots(&mut self, properties: &[Property]) {
        let Some(template) = self.template else {
            return;
        };
        let mut paths = references(template);
        paths.extend(properties.iter().flat_map(|p| references(&p.value)));
        for path in paths {
            let generated = matches!(template.at_path(&path), Some(Node::Gen(_)));
            if generated && !self.slots.contains_key(&path) {
                self.slots.insert(path, self.program.captures);
                self.program.captures += 1;
            }
        }
    }

    /// Appends `node` (at `path`) to `text`, or to the ops when it is generated.
    fn node(&mut self, node: &Node, path: &str, in_repeat: bool, text: &mut String) {
        match node {
            Node::Object(entries) => {
                text.push('{');
                for (i, (k, v)) in entries.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    value::write_json_str(text, k);
                    text.push(':');
                    let child = match path.is_empty() {
                        true => k.clone(),
                        false => format!("{path}.{k}"),
                    };
                    self.node(v, &child, in_repeat, text);
                }
                text.push('}');
            }
            Node::Array(items) => {
                text.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        text.push(',');
                    }
                    // Array items have no path: references cannot name them.
                    self.node(item, "\u{0}", in_repeat, text);
                }
                text.push(']');
            }
            Node::Gen(Generator::Repeat(r)) => {
                self.flush(text);
                let mut inner = Compiler {
                    template: self.template,
                    slots: self.slots.clone(),
                    program: Program {
                        walks: std::mem::take(&mut self.program.walks),
                        ..Program::default()
                    },
                };
                let mut item_text = String::new();
                inner.node(&r.item, "\u{0}", true, &mut item_text);
                inner.flush(&mut item_text);
                self.program.walks = inner.program.walks;
                let body = inner.program.ops.into_boxed_slice();
                self.push(
                    Gen::Repeat {
                        count: r.count,
                        body,
                    },
                    None,
                );
            }
            Node::Gen(g) => {
                self.flush(text);
                let capture = match in_repeat {
                    true => None,
                    false => self.slots.get(path).copied(),
                };
                let generator = self.generator(g);
                self.push(generator, capture);
            }
            scalar => match constant(scalar) {
                Some(v) => value::write_json(text, &v),
                None => text.push_str("null"),
            },
        }
    }

    fn push(&mut self, generator: Gen, capture: Option<usize>) {
        self.program.ops.push(Op::Gen { generator, capture });
    }

    fn flush(&mut self, text: &mut String) {
        if !text.is_empty() {
            self.program.ops.push(Op::Lit(std::mem::take(text).into()));
        }
    }

    fn generator(&mut self, g: &Generator) -> Gen {
        match g {
            Generator::DeviceId => Gen::DeviceId,
            Generator::DeviceCohort => Gen::DeviceCohort,
            Generator::DeviceIndex => Gen::DeviceIndex,
            Generator::Counter(c) => Gen::Counter {
                start: c.start,
                step: c.step,
            },
            Generator::Timestamp => Gen::Timestamp,
            Generator::TimestampMs => Gen::TimestampMs,
            Generator::Uuid => Gen::Uuid,
            Generator::Uniform(u) => Gen::Uniform(*u),
            Generator::Normal(n) => Gen::Normal(*n),
            Generator::Walk(w) => {
                self.program.walks.push(*w);
                Gen::Walk {
                    slot: self.program.walks.len() - 1,
                    walk: *w,
                }
            }
            Generator::Choice(c) => choice(&c.0),
            Generator::Bool(p) => Gen::Bool(p.0),
            Generator::Text(t) => Gen::Text(t.0),
            Generator::Field(f) => self.reference(&f.path, |v| v),
            Generator::Above(a) => {
                let threshold = a.threshold;
                match self.slots.get(&a.field.path) {
                    Some(&slot) => Gen::Above { slot, threshold },
                    None => self.reference(&a.field.path, |v| {
                        Value::Bool(value::number(&v).is_some_and(|x| x > threshold))
                    }),
                }
            }
            // Handled by `node`; a `$repeat` in a property is refused by validation.
            Generator::Repeat(_) => Gen::Const(Value::Null),
        }
    }

    /// A reference to `path`: its capture slot, or its constant value through `f`.
    fn reference(&self, path: &str, f: impl Fn(Value<'static>) -> Value<'static>) -> Gen {
        if let Some(&slot) = self.slots.get(path) {
            return Gen::Field(slot);
        }
        let value = self
            .template
            .and_then(|t| t.at_path(path))
            .and_then(constant)
            .unwrap_or(Value::Null);
        Gen::Const(f(value))
    }

    fn property(&mut self, node: &Node) -> PropertyValue {
        match node {
            Node::Gen(g) => match self.generator(g) {
                Gen::Const(v) => PropertyValue::Const(value::text(&v).into()),
                generator => PropertyValue::Gen(generator),
            },
            other => {
                let v = constant(other).unwrap_or(Value::Null);
                PropertyValue::Const(value::text(&v).into())
            }
        }
    }
}

/// About how many bytes `ops` write.
fn estimate(ops: &[Op]) -> usize {
    ops.iter()
        .map(|op| match op {
            Op::Lit(text) => text.len(),
            Op::Gen {
                generator: Gen::Text(n),
                ..
            } => *n as usize + 2,
            Op::Gen {
                generator: Gen::Repeat { count, body },
                ..
            } => (estimate(body) + 1) * *count as usize + 2,
            Op::Gen { .. } => 24,
        })
        .sum()
}

/// The value of a constant scalar node.
fn constant(node: &Node) -> Option<Value<'static>> {
    Some(match node {
        Node::Null => Value::Null,
        Node::Bool(b) => Value::Bool(*b),
        Node::Number(n) => match n.as_i64() {
            Some(i) => Value::Int(i),
            None => Value::Float(n.as_f64()?, None),
        },
        Node::String(s) => Value::Str(Cow::Owned(s.clone())),
        _ => return None,
    })
}

fn choice(weights: &[(String, f64)]) -> Gen {
    let mut sum = 0.0;
    let cumulative = weights
        .iter()
        .map(|(_, w)| {
            sum += w;
            sum
        })
        .collect();
    let values = weights.iter().map(|(v, _)| v.as_str().into()).collect();
    Gen::Choice { values, cumulative }
}
