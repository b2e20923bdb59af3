//! The recursive-descent parser over the tokens (grammar in the parent module's docs).

use serde_json::Value;

use super::lex::{Tok, Token};
use super::syntax::{Condition, MAX_NESTING, Op, Operand, Query, QueryError, Selection};

pub(super) struct Parser {
    tokens: Vec<Token>,
    next: usize,
    /// The column just past the text, for errors at the end.
    end_column: usize,
    depth: usize,
}

impl Parser {
    pub(super) fn new(tokens: Vec<Token>, chars: usize) -> Self {
        Self {
            tokens,
            next: 0,
            end_column: chars + 1,
            depth: 0,
        }
    }

    pub(super) fn query(mut self) -> Result<Query, QueryError> {
        self.keyword("SELECT")?;
        let selection = self.selection()?;
        self.keyword("FROM")?;
        self.collection()?;
        let condition = match self.peek_keyword("WHERE") {
            true => {
                self.next += 1;
                Some(self.condition()?)
            }
            false => None,
        };
        if let Some(t) = self.tokens.get(self.next) {
            return Err(self.error_at(t.column, format!("unexpected {}", describe(&t.tok))));
        }
        Ok(Query {
            selection,
            condition,
        })
    }

    fn selection(&mut self) -> Result<Selection, QueryError> {
        if self.eat(&Tok::Star) {
            return Ok(Selection::All);
        }
        if self.peek_keyword("COUNT") {
            self.next += 1;
            self.expect(&Tok::LParen, "'(' after COUNT")?;
            self.expect(&Tok::RParen, "')': COUNT takes no argument")?;
            let alias = match self.peek_keyword("AS") {
                true => {
                    self.next += 1;
                    self.name("a name after AS")?
                }
                false => "$1".to_string(),
            };
            return Ok(Selection::Count { alias });
        }
        Err(self.error_here("expected '*' or COUNT() (projections are not supported)"))
    }

    fn collection(&mut self) -> Result<(), QueryError> {
        let column = self.column();
        let name = self.name("a collection after FROM")?;
        if !name.eq_ignore_ascii_case("devices")
            || self
                .tokens
                .get(self.next)
                .is_some_and(|t| t.tok == Tok::Dot)
        {
            return Err(self.error_at(column, "only the collection 'devices' can be queried"));
        }
        Ok(())
    }

    pub(super) fn condition(&mut self) -> Result<Condition, QueryError> {
        self.depth += 1;
        if self.depth > MAX_NESTING {
            return Err(self.error_here(format!("conditions nest deeper than {MAX_NESTING}")));
        }
        let mut left = self.and()?;
        while self.peek_keyword("OR") {
            self.next += 1;
            let right = self.and()?;
            left = Condition::Or(Box::new(left), Box::new(right));
        }
        self.depth -= 1;
        Ok(left)
    }

    fn and(&mut self) -> Result<Condition, QueryError> {
        let mut left = self.not()?;
        while self.peek_keyword("AND") {
            self.next += 1;
            let right = self.not()?;
            left = Condition::And(Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    fn not(&mut self) -> Result<Condition, QueryError> {
        if self.peek_keyword("NOT") {
            self.next += 1;
            self.depth += 1;
            if self.depth > MAX_NESTING {
                return Err(self.error_here(format!("conditions nest deeper than {MAX_NESTING}")));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Condition::Not(Box::new(inner)));
        }
        if self.eat(&Tok::LParen) {
            let inner = self.condition()?;
            self.expect(&Tok::RParen, "')'")?;
            return Ok(inner);
        }
        if let Some(f) = self.function()? {
            return Ok(f);
        }
        self.comparison()
    }

    /// `IS_DEFINED(path)`, `STARTSWITH(path, 'x')`, `ENDSWITH(path, 'x')`, when next.
    fn function(&mut self) -> Result<Option<Condition>, QueryError> {
        let Some(Tok::Name(name)) = self.tokens.get(self.next).map(|t| &t.tok) else {
            return Ok(None);
        };
        let name = name.to_ascii_uppercase();
        let is_call = self
            .tokens
            .get(self.next + 1)
            .is_some_and(|t| t.tok == Tok::LParen);
        if !is_call || !matches!(name.as_str(), "IS_DEFINED" | "STARTSWITH" | "ENDSWITH") {
            return Ok(None);
        }
        self.next += 2;
        let path = self.path()?;
        let condition = match name.as_str() {
            "IS_DEFINED" => Condition::IsDefined(path),
            _ => {
                self.expect(&Tok::Comma, "',' and a string")?;
                let column = self.column();
                let Some(Tok::Str(s)) = self.advance().map(|t| t.tok) else {
                    return Err(self.error_at(column, format!("{name} takes a string")));
                };
                match name.as_str() {
                    "STARTSWITH" => Condition::StartsWith(path, s),
                    _ => Condition::EndsWith(path, s),
                }
            }
        };
        self.expect(&Tok::RParen, "')'")?;
        Ok(Some(condition))
    }

    fn comparison(&mut self) -> Result<Condition, QueryError> {
        let operand = self.operand()?;
        let negated_in = self.peek_keyword("NOT")
            && self
                .tokens
                .get(self.next + 1)
                .is_some_and(|t| is_keyword(&t.tok, "IN"));
        if negated_in || self.peek_keyword("IN") || self.peek_keyword("NIN") {
            let negated = negated_in || self.peek_keyword("NIN");
            self.next += if negated_in { 2 } else { 1 };
            let list = self.list()?;
            return Ok(Condition::In {
                operand,
                list,
                negated,
            });
        }
        let column = self.column();
        let op = match self.advance().map(|t| t.tok) {
            Some(Tok::Op("=")) => Op::Eq,
            Some(Tok::Op("!=" | "<>")) => Op::Ne,
            Some(Tok::Op("<")) => Op::Lt,
            Some(Tok::Op("<=")) => Op::Le,
            Some(Tok::Op(">")) => Op::Gt,
            Some(Tok::Op(">=")) => Op::Ge,
            Some(other) => {
                return Err(self.error_at(
                    column,
                    format!("expected a comparison, found {}", describe(&other)),
                ));
            }
            None => return Err(self.error_at(column, "expected a comparison, found the end")),
        };
        let right = self.operand()?;
        Ok(Condition::Compare(operand, op, right))
    }

    fn operand(&mut self) -> Result<Operand, QueryError> {
        if let Some(value) = self.literal() {
            return Ok(Operand::Literal(value));
        }
        Ok(Operand::Path(self.path()?))
    }

    /// A literal, consumed, when the next token is one.
    fn literal(&mut self) -> Option<Value> {
        let value = match &self.tokens.get(self.next)?.tok {
            Tok::Str(s) => Value::String(s.clone()),
            Tok::Number(n) => number(*n),
            Tok::Name(n) if n.eq_ignore_ascii_case("true") => Value::Bool(true),
            Tok::Name(n) if n.eq_ignore_ascii_case("false") => Value::Bool(false),
            Tok::Name(n) if n.eq_ignore_ascii_case("null") => Value::Null,
            _ => return None,
        };
        self.next += 1;
        Some(value)
    }

    fn list(&mut self) -> Result<Vec<Value>, QueryError> {
        self.expect(&Tok::LBracket, "'[' to start the list")?;
        let mut list = Vec::new();
        if self.eat(&Tok::RBracket) {
            return Ok(list);
        }
        loop {
            let Some(v) = self.literal() else {
                return Err(self.error_here("expected a literal in the list"));
            };
            list.push(v);
            if self.eat(&Tok::RBracket) {
                return Ok(list);
            }
            self.expect(&Tok::Comma, "',' or ']'")?;
        }
    }

    fn path(&mut self) -> Result<Vec<String>, QueryError> {
        let mut path = vec![self.name("a property path")?];
        while self.eat(&Tok::Dot) {
            path.push(self.name("a name after '.'")?);
        }
        Ok(path)
    }

    fn name(&mut self, what: &str) -> Result<String, QueryError> {
        let column = self.column();
        match self.advance().map(|t| t.tok) {
            Some(Tok::Name(n)) if !is_reserved(&n) => Ok(n),
            Some(other) => Err(self.error_at(
                column,
                format!("expected {what}, found {}", describe(&other)),
            )),
            None => Err(self.error_at(column, format!("expected {what}, found the end"))),
        }
    }

    fn keyword(&mut self, word: &str) -> Result<(), QueryError> {
        if self.peek_keyword(word) {
            self.next += 1;
            return Ok(());
        }
        Err(self.error_here(format!("expected {word}")))
    }

    fn peek_keyword(&self, word: &str) -> bool {
        self.tokens
            .get(self.next)
            .is_some_and(|t| is_keyword(&t.tok, word))
    }

    fn expect(&mut self, tok: &Tok, what: &str) -> Result<(), QueryError> {
        if self.eat(tok) {
            return Ok(());
        }
        Err(self.error_here(format!("expected {what}")))
    }

    fn eat(&mut self, tok: &Tok) -> bool {
        let matched = self.tokens.get(self.next).is_some_and(|t| &t.tok == tok);
        self.next += usize::from(matched);
        matched
    }

    fn advance(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.next).cloned();
        self.next += usize::from(t.is_some());
        t
    }

    fn column(&self) -> usize {
        self.tokens
            .get(self.next)
            .map_or(self.end_column, |t| t.column)
    }

    fn error_here(&self, message: impl Into<String>) -> QueryError {
        let message = message.into();
        let found = self
            .tokens
            .get(self.next)
            .map_or("the end".to_string(), |t| describe(&t.tok));
        self.error_at(self.column(), format!("{message}, found {found}"))
    }

    fn error_at(&self, column: usize, message: impl Into<String>) -> QueryError {
        QueryError {
            column,
            message: message.into(),
        }
    }
}

fn is_keyword(tok: &Tok, word: &str) -> bool {
    matches!(tok, Tok::Name(n) if n.eq_ignore_ascii_case(word))
}

/// Keywords that cannot name a property.
fn is_reserved(name: &str) -> bool {
    [
        "SELECT", "FROM", "WHERE", "AND", "OR", "NOT", "IN", "NIN", "AS",
    ]
    .iter()
    .any(|k| name.eq_ignore_ascii_case(k))
}

/// Whole numbers stay integers so they compare and print as the twin's own do.
fn number(n: f64) -> Value {
    if n.fract() == 0.0 && n.abs() < 9.0e15 {
        Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(Value::Null, Value::Number)
    }
}

fn describe(tok: &Tok) -> String {
    match tok {
        Tok::Name(n) => format!("'{n}'"),
        Tok::Str(s) => format!("the string {s:?}"),
        Tok::Number(n) => format!("the number {n}"),
        Tok::Star => "'*'".into(),
        Tok::Comma => "','".into(),
        Tok::Dot => "'.'".into(),
        Tok::LParen => "'('".into(),
        Tok::RParen => "')'".into(),
        Tok::LBracket => "'['".into(),
        Tok::RBracket => "']'".into(),
        Tok::Op(op) => format!("'{op}'"),
    }
}
