//! A single pass over a publish body that checks it is JSON and says what
//! the event builder needs to know of it, without building anything.
//!
//! Most publishes are one line of JSON without keys of ours; those are
//! passed on verbatim with our keys appended (see `event::Payload`). This
//! check replaces UTF-8 validation, a JSON parse and two searches that the
//! publish path used to make, and reads string contents eight bytes at a
//! time. It accepts exactly what `serde_json::from_str::<IgnoredAny>`
//! accepts (tested against it below), except that nesting deeper than
//! serde_json's own limit for building a value is refused here too.

/// Deepest nesting of arrays and objects accepted: serde_json's recursion
/// limit when it builds a value (the path for bodies that are rebuilt).
pub const MAX_DEPTH: u32 = 127;

/// A body that is valid JSON.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The top-level value is an object.
    pub object: bool,
    /// No line break anywhere (outside strings; inside they are invalid).
    pub one_line: bool,
    /// A top-level key starts with `pubsub_` or is written with an escape
    /// (which might spell one): our keys would have to replace it.
    pub own_keys: bool,
}

/// Checks `body`; `None` when it is not JSON (or not UTF-8).
pub fn check(body: &[u8]) -> Option<Shape> {
    let mut s = Scanner {
        b: body,
        i: 0,
        one_line: true,
        own_keys: false,
    };
    s.whitespace();
    let object = s.peek() == Some(b'{');
    s.value()?;
    s.whitespace();
    if s.i != body.len() {
        return None;
    }
    Some(Shape {
        object,
        one_line: s.one_line,
        own_keys: s.own_keys,
    })
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
    one_line: bool,
    own_keys: bool,
}

/// Nesting kept as bits (1 = object), deepest last.
struct Stack {
    bits: u128,
    depth: u32,
}

impl Stack {
    fn push(&mut self, object: bool) -> Option<()> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        self.bits = (self.bits << 1) | u128::from(object);
        self.depth += 1;
        Some(())
    }

    fn pop(&mut self) {
        self.bits >>= 1;
        self.depth -= 1;
    }

    fn in_object(&self) -> bool {
        self.bits & 1 == 1
    }
}

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGH: u64 = 0x8080_8080_8080_8080;

/// Eight bytes at once (SWAR): the high bit of byte k is set where byte k
/// ends or escapes a string, is a control character or is not ASCII. Bits
/// above the first such byte can be wrong (borrows), so only the lowest
/// set bit is meaningful.
fn special_bytes(w: u64) -> u64 {
    let zero_in = |v: u64| v.wrapping_sub(ONES) & !v & HIGH;
    let quote = zero_in(w ^ (ONES * u64::from(b'"')));
    let backslash = zero_in(w ^ (ONES * u64::from(b'\\')));
    let control = w.wrapping_sub(ONES * 0x20) & !w & HIGH;
    quote | backslash | control | (w & HIGH)
}

impl Scanner<'_> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn whitespace(&mut self) {
        while let Some(c) = self.peek() {
            match c {
                b' ' | b'\t' => {}
                b'\n' | b'\r' => self.one_line = false,
                _ => return,
            }
            self.i += 1;
        }
    }

    fn expect(&mut self, c: u8) -> Option<()> {
        self.whitespace();
        if self.peek()? != c {
            return None;
        }
        self.i += 1;
        Some(())
    }

    /// One complete value, nested ones included (iteratively: the depth is
    /// bounded, not the call stack).
    fn value(&mut self) -> Option<()> {
        let mut stack = Stack { bits: 0, depth: 0 };
        loop {
            // A value starts here.
            self.whitespace();
            match self.peek()? {
                open @ (b'{' | b'[') => {
                    self.i += 1;
                    let object = open == b'{';
                    stack.push(object)?;
                    self.whitespace();
                    let close = if object { b'}' } else { b']' };
                    if self.peek() == Some(close) {
                        self.i += 1;
                        stack.pop();
                    } else {
                        if object {
                            self.key(stack.depth == 1)?;
                        }
                        continue;
                    }
                }
                b'"' => {
                    self.i += 1;
                    self.string()?;
                }
                b'-' | b'0'..=b'9' => self.number()?,
                b't' => self.literal(b"true")?,
                b'f' => self.literal(b"false")?,
                b'n' => self.literal(b"null")?,
                _ => return None,
            }
            // After a value: close what ends here, until a comma.
            loop {
                if stack.depth == 0 {
                    return Some(());
                }
                self.whitespace();
                match self.peek()? {
                    b',' => {
                        self.i += 1;
                        if stack.in_object() {
                            self.key(stack.depth == 1)?;
                        }
                        break;
                    }
                    b'}' if stack.in_object() => stack.pop(),
                    b']' if !stack.in_object() => stack.pop(),
                    _ => return None,
                }
                self.i += 1;
            }
        }
    }

    /// An object key and its colon.
    fn key(&mut self, top_level: bool) -> Option<()> {
        self.expect(b'"')?;
        let start = self.i;
        let escaped = self.string()?;
        if top_level && (escaped || self.b[start..].starts_with(b"pubsub_")) {
            self.own_keys = true;
        }
        self.expect(b':')
    }

    /// The rest of a string after its opening quote; whether it has escapes.
    fn string(&mut self) -> Option<bool> {
        let mut escaped = false;
        loop {
            while let Some(word) = self.b.get(self.i..self.i + 8) {
                let mut bytes = [0; 8];
                bytes.copy_from_slice(word);
                let mask = special_bytes(u64::from_le_bytes(bytes));
                if mask != 0 {
                    self.i += mask.trailing_zeros() as usize / 8;
                    break;
                }
                self.i += 8;
            }
            match self.peek()? {
                b'"' => {
                    self.i += 1;
                    return Some(escaped);
                }
                b'\\' => {
                    escaped = true;
                    self.escape()?;
                }
                0..=0x1f => return None,
                0x80.. => self.utf8_char()?,
                _ => self.i += 1,
            }
        }
    }

    /// `\x` or `\uXXXX` (any code unit, as serde_json skips them).
    fn escape(&mut self) -> Option<()> {
        match *self.b.get(self.i + 1)? {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => self.i += 2,
            b'u' => {
                let hex = self.b.get(self.i + 2..self.i + 6)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                self.i += 6;
            }
            _ => return None,
        }
        Some(())
    }

    /// One multi-byte UTF-8 character.
    fn utf8_char(&mut self) -> Option<()> {
        let len = match self.b[self.i] {
            0xc2..=0xdf => 2,
            0xe0..=0xef => 3,
            0xf0..=0xf4 => 4,
            _ => return None,
        };
        let bytes = self.b.get(self.i..self.i + len)?;
        std::str::from_utf8(bytes).ok()?;
        self.i += len;
        Some(())
    }

    fn digits(&mut self) -> usize {
        let start = self.i;
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.i += 1;
        }
        self.i - start
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.peek() == Some(b'-') {
            self.i += 1;
        }
        match self.peek()? {
            b'0' => {
                self.i += 1;
                if self.peek().is_some_and(|c| c.is_ascii_digit()) {
                    return None;
                }
            }
            b'1'..=b'9' => {
                self.digits();
            }
            _ => return None,
        }
        if self.peek() == Some(b'.') {
            self.i += 1;
            if self.digits() == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.peek(), Some(b'+' | b'-')) {
                self.i += 1;
            }
            if self.digits() == 0 {
                return None;
            }
        }
        Some(())
    }

    fn literal(&mut self, word: &[u8]) -> Option<()> {
        if !self.b[self.i..].starts_with(word) {
            return None;
        }
        self.i += word.len();
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// What serde_json says of `body`, in this module's terms.
    fn serde_says(body: &[u8]) -> Option<bool> {
        let text = std::str::from_utf8(body).ok()?;
        serde_json::from_str::<serde::de::IgnoredAny>(text).ok()?;
        Some(text.trim_start().starts_with('{'))
    }

    fn agrees(body: &[u8]) {
        let ours = check(body);
        assert_eq!(
            ours.map(|s| s.object),
            serde_says(body),
            "{:?}",
            String::from_utf8_lossy(body)
        );
        if let Some(shape) = ours {
            let breaks = body.iter().any(|&c| c == b'\n' || c == b'\r');
            assert_eq!(shape.one_line, !breaks);
            if let Ok(serde_json::Value::Object(map)) = serde_json::from_slice(body) {
                if map.keys().any(|k| k.starts_with("pubsub_")) {
                    assert!(shape.own_keys, "{:?}", String::from_utf8_lossy(body));
                }
            }
        }
    }

    #[test]
    fn accepts_and_refuses_like_serde_json() {
        for body in [
            &b"{}"[..],
            b" { } ",
            b"{\"a\":1}",
            b"{\"a\" : [1, -0, 0.5, 1e3, 1E+3, -2.5e-7, true, false, null, \"x\"]}",
            b"{\"a\":{\"b\":{\"c\":[[],{}]}}}",
            b"\t{\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\\u00e9\\uD800\"}\r\n",
            "{\"\u{e9}\u{20ac}\u{1f600}\":\"\u{10ffff}\"}".as_bytes(),
            b"[1]",
            b"\"x\"",
            b"3",
            b"null",
            b"",
            b" ",
            b"{",
            b"}",
            b"{\"a\"}",
            b"{\"a\":}",
            b"{\"a\":1,}",
            b"{,}",
            b"[1,]",
            b"[1 2]",
            b"{\"a\":1 \"b\":2}",
            b"{1:2}",
            b"{} x",
            b"{}{}",
            b"01",
            b"-",
            b"1.",
            b".5",
            b"1e",
            b"1e+",
            b"+1",
            b"-01",
            b"tru",
            b"nul",
            b"truex",
            b"[true false]",
            b"\"\\x\"",
            b"\"\\u12\"",
            b"\"\\u12g4\"",
            b"\"a\x01b\"",
            b"\"a\nb\"",
            b"\"abc",
            b"\"\xff\"",
            b"\"\xc0\xaf\"",
            b"\"\xed\xa0\x80\"",
            b"\"\xf4\x90\x80\x80\"",
            b"\"\xe2\x82\"",
            b"\xef\xbb\xbf{}",
            b"[\"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"]",
            b"[\"aaaaaaaaaaaaaaa\\\"aaaaaaaaaaaaaaaaaaaaaa\"]",
        ] {
            agrees(body);
        }
    }

    #[test]
    fn shape() {
        let s = check(b"{\"a\": \"x\", \"b\": {\"pubsub_path\": 1}}").unwrap();
        assert_eq!(
            s,
            Shape {
                object: true,
                one_line: true,
                own_keys: false
            }
        );
        assert!(check(b"{\"pubsub_path\": 1}").unwrap().own_keys);
        assert!(check(b"{\"a\": 1, \"pubsub_x\": 1}").unwrap().own_keys);
        assert!(check(b"{\"pubsub\\u005fpath\": 1}").unwrap().own_keys);
        assert!(!check(b"{\"a\": \"pubsub_path\"}").unwrap().own_keys);
        assert!(!check(b"{\"a\":\n1}").unwrap().one_line);
        assert!(!check(b"{\"a\":1}\r").unwrap().one_line);
    }

    #[test]
    fn nesting_is_bounded() {
        let ok = format!("{}{}", "[".repeat(127), "]".repeat(127));
        assert!(check(ok.as_bytes()).is_some());
        let deep = format!("{}{}", "[".repeat(128), "]".repeat(128));
        assert!(check(deep.as_bytes()).is_none());
        // serde_json refuses the same when it builds a value.
        assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
        assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
        assert!(check("{\"a\":".repeat(100_000).as_bytes()).is_none());
    }

    /// JSON values with random whitespace, escapes and characters.
    fn json_value() -> impl Strategy<Value = String> {
        let ws = prop_oneof![Just(""), Just(" "), Just("\n"), Just("\t"), Just("\r\n")];
        let string = proptest::collection::vec(
            prop_oneof![
                Just("a".to_string()),
                Just("pubsub_".to_string()),
                Just("\\n".to_string()),
                Just("\\u00e9".to_string()),
                Just("\\\"".to_string()),
                Just("é€😀".to_string()),
                Just("xxxxxxxxxxxxxxxxxx".to_string()),
                any::<char>().prop_map(|c| c.to_string()),
            ],
            0..6,
        )
        .prop_map(|parts| format!("\"{}\"", parts.concat()));
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:e}")),
            Just("-0.0e-0".to_string()),
            string.clone(),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop_oneof![
                (proptest::collection::vec(inner.clone(), 0..5), ws.clone())
                    .prop_map(|(items, w)| format!("[{w}{}{w}]", items.join(&format!("{w},")))),
                (
                    proptest::collection::vec((string.clone(), inner), 0..5),
                    ws.clone()
                )
                    .prop_map(|(entries, w)| {
                        let entries: Vec<String> =
                            entries.iter().map(|(k, v)| format!("{k}{w}:{v}")).collect();
                        format!("{{{w}{}}}", entries.join(","))
                    }),
            ]
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(3000))]

        #[test]
        fn valid_json_agrees(body in json_value()) {
            agrees(body.as_bytes());
        }

        /// Near-valid bodies: one byte changed, removed or added.
        #[test]
        fn mutated_json_agrees(body in json_value(), at in any::<usize>(), byte in any::<u8>(), how in 0..3u8) {
            let mut bytes = body.into_bytes();
            let at = at % (bytes.len() + 1);
            match how {
                0 if at < bytes.len() => bytes[at] = byte,
                1 if at < bytes.len() => { bytes.remove(at); }
                _ => bytes.insert(at, byte),
            }
            agrees(&bytes);
        }

        #[test]
        fn any_bytes_agree(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            agrees(&bytes);
        }
    }
}
