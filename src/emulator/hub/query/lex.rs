//! The query tokenizer: names (keywords among them), string and number literals, punctuation
//! and comparison operators, each with the column it starts at.

use super::syntax::QueryError;

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Tok {
    /// A name or keyword, as written.
    Name(String),
    Str(String),
    Number(f64),
    Star,
    Comma,
    Dot,
    LParen,
    RParen,
    LBracket,
    RBracket,
    Op(&'static str),
}

#[derive(Debug, Clone, PartialEq)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 1-based, in characters.
    pub(super) column: usize,
}

fn error(column: usize, message: impl Into<String>) -> QueryError {
    QueryError {
        column,
        message: message.into(),
    }
}

/// Splits `text` into tokens.
pub(super) fn tokenize(text: &str) -> Result<Vec<Token>, QueryError> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let column = i + 1;
        if c.is_whitespace() {
            i += 1;
            continue;
        }
        let (tok, next) = match c {
            '*' => (Tok::Star, i + 1),
            ',' => (Tok::Comma, i + 1),
            '.' if !chars.get(i + 1).is_some_and(char::is_ascii_digit) => (Tok::Dot, i + 1),
            '(' => (Tok::LParen, i + 1),
            ')' => (Tok::RParen, i + 1),
            '[' => (Tok::LBracket, i + 1),
            ']' => (Tok::RBracket, i + 1),
            '=' | '!' | '<' | '>' => operator(&chars, i)?,
            '\'' | '"' => string(&chars, i)?,
            c if c.is_ascii_digit() || c == '-' || c == '.' => number(&chars, i)?,
            c if c.is_alphabetic() || c == '_' || c == '$' => name(&chars, i),
            other => return Err(error(column, format!("unexpected character {other:?}"))),
        };
        tokens.push(Token { tok, column });
        i = next;
    }
    Ok(tokens)
}

fn operator(chars: &[char], i: usize) -> Result<(Tok, usize), QueryError> {
    let two: String = chars[i..chars.len().min(i + 2)].iter().collect();
    Ok(match two.as_str() {
        "!=" => (Tok::Op("!="), i + 2),
        "<>" => (Tok::Op("<>"), i + 2),
        "<=" => (Tok::Op("<="), i + 2),
        ">=" => (Tok::Op(">="), i + 2),
        _ => match chars[i] {
            '=' => (Tok::Op("="), i + 1),
            '<' => (Tok::Op("<"), i + 1),
            '>' => (Tok::Op(">"), i + 1),
            _ => return Err(error(i + 1, "'!' must be followed by '='")),
        },
    })
}

/// A string in single or double quotes; a backslash escapes the next character.
fn string(chars: &[char], start: usize) -> Result<(Tok, usize), QueryError> {
    let quote = chars[start];
    let mut value = String::new();
    let mut i = start + 1;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                let Some(&next) = chars.get(i + 1) else {
                    break;
                };
                value.push(match next {
                    'n' => '\n',
                    't' => '\t',
                    other => other,
                });
                i += 2;
            }
            c if c == quote => return Ok((Tok::Str(value), i + 1)),
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
    Err(error(start + 1, "unterminated string"))
}

fn number(chars: &[char], start: usize) -> Result<(Tok, usize), QueryError> {
    let mut end = start;
    if chars[end] == '-' {
        end += 1;
    }
    while end < chars.len() {
        let c = chars[end];
        let exponent_sign = (c == '-' || c == '+') && matches!(chars[end - 1], 'e' | 'E');
        if c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || exponent_sign {
            end += 1;
        } else {
            break;
        }
    }
    let text: String = chars[start..end].iter().collect();
    match text.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok((Tok::Number(n), end)),
        _ => Err(error(start + 1, format!("{text:?} is not a number"))),
    }
}

fn name(chars: &[char], start: usize) -> (Tok, usize) {
    let mut end = start + 1;
    while end < chars.len()
        && (chars[end].is_alphanumeric()
            || chars[end] == '_'
            || chars[end] == '$'
            || chars[end] == '-')
    {
        end += 1;
    }
    (Tok::Name(chars[start..end].iter().collect()), end)
}
