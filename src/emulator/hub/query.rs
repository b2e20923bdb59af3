//! IoT Hub's query language for device twins, as far as the hub emulator serves it: a tokenizer
//! and a recursive-descent parser into a small syntax tree, and its evaluation against a twin's
//! JSON document.
//!
//! ```text
//! query      := SELECT selection FROM devices [WHERE condition]
//! selection  := '*' | COUNT '(' ')' [AS name]
//! condition  := and (OR and)*
//! and        := not (AND not)*
//! not        := NOT not | '(' condition ')' | function | comparison
//! comparison := operand op operand | operand [NOT] IN list | operand NIN list
//! op         := '=' | '!=' | '<>' | '<' | '<=' | '>' | '>='
//! operand    := path | literal            path := name ('.' name)*
//! literal    := 'string' | "string" | number | TRUE | FALSE | NULL
//! list       := '[' [literal (',' literal)*] ']'
//! function   := IS_DEFINED '(' path ')' | STARTSWITH '(' path ',' string ')'
//!             | ENDSWITH '(' path ',' string ')'
//! ```
//!
//! Keywords are case-insensitive; paths name members of the twin (`deviceId`, `status`,
//! `connectionState`, `tags.site.room`, `properties.reported.fw`, ...). Comparisons follow the
//! document-database semantics IoT Hub's language comes from: a missing member or operands of
//! different types make a comparison *undefined*, which `NOT` keeps undefined and `AND`/`OR`
//! treat as neither true nor false; a twin is selected only when the condition is true.
//!
//! Whatever the input, parsing ends in a syntax tree or a [`QueryError`] naming the column
//! (1-based, in characters) where it went wrong; input length and nesting are bounded.

use serde_json::Value;

/// The longest query text accepted.
pub const MAX_QUERY_CHARS: usize = 8192;
/// How deeply conditions may nest (parentheses and NOTs).
const MAX_NESTING: usize = 64;

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

/// Parses `text`.
pub fn parse(text: &str) -> Result<Query, QueryError> {
    let chars = text.chars().count();
    if chars > MAX_QUERY_CHARS {
        return Err(QueryError {
            column: MAX_QUERY_CHARS + 1,
            message: format!("the query is {chars} characters long, over {MAX_QUERY_CHARS}"),
        });
    }
    let tokens = lex::tokenize(text)?;
    parser::Parser::new(tokens, chars).query()
}

impl Query {
    /// Whether the twin document `twin` is selected.
    pub fn selects(&self, twin: &Value) -> bool {
        self.condition
            .as_ref()
            .is_none_or(|c| eval::condition(c, twin) == Some(true))
    }
}

mod eval;
mod lex;
mod parser;

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
