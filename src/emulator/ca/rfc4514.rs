//! RFC 4514 distinguished-name strings taken apart into RDNs of `(type, value)` pairs, with
//! escapes (`\,`, `\2C`) and quoted values (`"a,b"`) resolved, so a separator inside a value can
//! never start another attribute. Only syntax is checked here; what a subject may contain is
//! [`super::names`]'s business.
//!
//! Refused: `;` as a separator (RFC 4514 dropped it; accepting it would give one string two
//! readings), `#`-prefixed BER values, unescaped `"`, `<`, `>`, `;` in values, a `\` not followed
//! by a special character or two hex digits, and values that are not UTF-8 once unescaped.

/// Why a distinguished-name string does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SubjectName is not a valid distinguished name: {0}")]
pub struct SyntaxError(String);

fn fail<T>(why: impl Into<String>) -> Result<T, SyntaxError> {
    Err(SyntaxError(why.into()))
}

/// One RDN: its attribute type and value pairs (more than one: a multi-valued RDN).
pub type Rdn = Vec<(String, String)>;

/// The RDNs of `input`, in the order written.
pub fn parse(input: &str) -> Result<Vec<Rdn>, SyntaxError> {
    let mut reader = Reader {
        bytes: input.as_bytes(),
        at: 0,
    };
    let mut rdns = Vec::new();
    let mut rdn = Vec::new();
    reader.skip_spaces();
    if reader.peek().is_none() {
        return fail("it is empty");
    }
    loop {
        let key = reader.key()?;
        let value = reader.value()?;
        rdn.push((key, value));
        match reader.next() {
            None => break,
            Some(b'+') => {}
            Some(b',') => rdns.push(std::mem::take(&mut rdn)),
            Some(b';') => return fail("';' is not a separator; use ','"),
            Some(other) => return fail(format!("unexpected {:?}", other as char)),
        }
        reader.skip_spaces();
    }
    rdns.push(rdn);
    Ok(rdns)
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let b = self.peek()?;
        self.at += 1;
        Some(b)
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.at += 1;
        }
    }

    /// `type =`: a name or a dotted OID, then `=`.
    fn key(&mut self) -> Result<String, SyntaxError> {
        let start = self.at;
        while self
            .peek()
            .is_some_and(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-')
        {
            self.at += 1;
        }
        let key = String::from_utf8_lossy(&self.bytes[start..self.at]).into_owned();
        self.skip_spaces();
        if key.is_empty() || self.next() != Some(b'=') {
            return fail("expected type=value");
        }
        self.skip_spaces();
        Ok(key)
    }

    /// A value up to the next unescaped `,`, `+` or `;` (or the end), spaces around it dropped.
    fn value(&mut self) -> Result<String, SyntaxError> {
        let bytes = match self.peek() {
            Some(b'"') => self.quoted()?,
            Some(b'#') => return fail("'#'-encoded values are not supported"),
            _ => self.plain()?,
        };
        String::from_utf8(bytes).or_else(|_| fail("a value is not UTF-8"))
    }

    fn plain(&mut self) -> Result<Vec<u8>, SyntaxError> {
        let mut out = Vec::new();
        // Length of `out` up to its last escaped byte: escaped spaces are kept at the end.
        let mut kept = 0;
        while let Some(b) = self.peek() {
            match b {
                b',' | b'+' | b';' => break,
                b'"' | b'<' | b'>' => {
                    return fail(format!("{:?} must be escaped in a value", b as char));
                }
                b'\\' => {
                    self.at += 1;
                    out.push(self.escaped()?);
                    kept = out.len();
                }
                _ => {
                    self.at += 1;
                    out.push(b);
                    if b != b' ' {
                        kept = out.len();
                    }
                }
            }
        }
        out.truncate(kept);
        Ok(out)
    }

    fn quoted(&mut self) -> Result<Vec<u8>, SyntaxError> {
        self.at += 1;
        let mut out = Vec::new();
        loop {
            match self.next() {
                None => return fail("a quoted value is not closed"),
                Some(b'"') => break,
                Some(b'\\') => out.push(self.escaped()?),
                Some(b) => out.push(b),
            }
        }
        self.skip_spaces();
        if self.peek().is_some_and(|b| !b",+;".contains(&b)) {
            return fail("text after a quoted value");
        }
        Ok(out)
    }

    /// What follows a `\`: a special character, or two hex digits (one byte of UTF-8).
    fn escaped(&mut self) -> Result<u8, SyntaxError> {
        const SPECIAL: &[u8] = b",+\"\\<>;=# ";
        match self.next() {
            Some(b) if SPECIAL.contains(&b) => Ok(b),
            Some(hi) if hi.is_ascii_hexdigit() => match self.next() {
                Some(lo) if lo.is_ascii_hexdigit() => {
                    let hex = [hi, lo];
                    let text = std::str::from_utf8(&hex).unwrap_or("00");
                    u8::from_str_radix(text, 16).or_else(|_| fail("bad hex escape"))
                }
                _ => fail("'\\' must be followed by a special character or two hex digits"),
            },
            _ => fail("'\\' must be followed by a special character or two hex digits"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(s: &str) -> Vec<Vec<(String, String)>> {
        parse(s).unwrap()
    }

    fn p(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn separators_inside_values_stay_there() {
        assert_eq!(pairs("CN=a\\, CN=b"), vec![vec![p("CN", "a, CN=b")]]);
        assert_eq!(pairs("CN=\"a, CN=b\""), vec![vec![p("CN", "a, CN=b")]]);
        assert_eq!(
            pairs("CN=a+O=b, OU=c"),
            vec![vec![p("CN", "a"), p("O", "b")], vec![p("OU", "c")]]
        );
        assert_eq!(pairs("CN=a\\ "), vec![vec![p("CN", "a ")]]);
        assert_eq!(
            pairs("CN=  a b  ,O=c"),
            vec![vec![p("CN", "a b")], vec![p("O", "c")]]
        );
        assert_eq!(pairs("2.5.4.3=a"), vec![vec![p("2.5.4.3", "a")]]);
        for bad in [
            "",
            "  ",
            "CN",
            "=a",
            "CN=a;O=b",
            "CN=a<b",
            "CN=\"a\" b",
            "CN=a\\",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }
}
