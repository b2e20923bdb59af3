//! The query's syntax tree, its error and its limits, shared by the tokenizer, the parser and
//! the evaluation.

use serde_json::Value;

/// The longest query text accepted.
pub const MAX_QUERY_CHARS: usize = 8192;
/// How deeply conditions may nest (parentheses and NOTs).
pub(super) const MAX_NESTING: usize = 64;

/// Why a query does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("at column {column}: {message}")]
pub struct QueryError {
    pub column: usize,
    pub message: String,
}

/// A parsed query.
#[derive(Debug, Clone, PartialEq)]
pub struct Query {
    pub selection: Selection,
    pub condition: Option<Condition>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection {
    /// `SELECT *`: whole twins.
    All,
    /// `SELECT COUNT() AS name`: one row `{name: count}`.
    Count { alias: String },
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
    Compare(Operand, Op, Operand),
    In {
        operand: Operand,
        list: Vec<Value>,
        negated: bool,
    },
    IsDefined(Vec<String>),
    StartsWith(Vec<String>, String),
    EndsWith(Vec<String>, String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Path(Vec<String>),
    Literal(Value),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}
