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
//!
//! A query runs against a [`Document`]: a twin's JSON, or anything that can answer for the
//! members of one (the hub looks members up in its twin store rather than building every twin's
//! JSON for a query over the whole registry).
//!
//! Files: `syntax` (the tree, the error, the limits), `lex`, `parser`, `eval` (which also gives
//! [`Query::selects`] and [`Document`]); they import `syntax` and never this file.

pub use eval::Document;
pub use syntax::{Condition, MAX_QUERY_CHARS, Op, Operand, Query, QueryError, Selection};

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

mod eval;
mod lex;
mod parser;
mod syntax;

#[cfg(test)]
mod tests;
