//! The line protocol of the Unix socket as pure functions, with no I/O:
//! [`Framer`] cuts a byte stream into lines and tells "incomplete" (more
//! bytes needed) from "invalid" (a line over the length limit, discarded up
//! to its newline without being buffered whole); [`parse_auth`] reads the
//! first line; [`parse_line`] reads every later one. Both parsers take
//! `&[u8] -> Result<_, _>` and never panic, whatever the bytes (the
//! `ingest_line` fuzz target checks that).
//!
//! The grammar (see the module docs of [`crate::ingest`] for the replies):
//! lines end with `\n`; each is trimmed of ASCII whitespace (so `\r\n`
//! works) before it is read.

use serde::Deserialize;
use serde_json::value::RawValue;

/// Longest line accepted, in bytes, without its `\n` (1 MiB).
pub const MAX_LINE: usize = 1 << 20;

/// Bytes asked of the socket per read.
const READ_CHUNK: usize = 64 * 1024;

/// A complete line, or the mark of one that was too long.
#[derive(Debug, PartialEq, Eq)]
pub enum Frame<'a> {
    /// The line's bytes, without the `\n`.
    Line(&'a [u8]),
    /// A line longer than the limit; its bytes were dropped.
    TooLong,
}

/// Cuts a byte stream into lines of at most `max` bytes.
///
/// Invariants: `buf[start..]` holds the bytes not yet handed out;
/// `buf[start..start + scanned]` is known to hold no `\n`, so a line that
/// arrives in many reads is scanned once. While `discarding`, the bytes of
/// an overlong line are dropped as they arrive, until its `\n`: memory stays
/// below `max` plus one read.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    start: usize,
    scanned: usize,
    discarding: bool,
    /// The stream ended: what is left is the last line.
    eof: bool,
    max: usize,
}

impl Framer {
    pub fn new(max: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            start: 0,
            scanned: 0,
            discarding: false,
            eof: false,
            max,
        }
    }

    /// The buffer to read more bytes into (append to its end): consumed
    /// bytes are dropped first, and at least one read's worth of space is
    /// reserved.
    pub fn read_buf(&mut self) -> &mut Vec<u8> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        // A long line grew the buffer; give the memory back once it is gone.
        if self.buf.is_empty() && self.buf.capacity() > 4 * READ_CHUNK {
            self.buf = Vec::new();
        }
        self.buf.reserve(READ_CHUNK);
        &mut self.buf
    }

    /// Appends bytes (as a read into [`Framer::read_buf`] does).
    pub fn push(&mut self, bytes: &[u8]) {
        self.read_buf().extend_from_slice(bytes);
    }

    /// The next complete line, or `None` if more bytes are needed.
    pub fn next_frame(&mut self) -> Option<Frame<'_>> {
        let pending = &self.buf[self.start..];
        match memchr::memchr(b'\n', &pending[self.scanned..]) {
            Some(i) => {
                let len = self.scanned + i;
                let line = self.start..self.start + len;
                self.start += len + 1;
                self.scanned = 0;
                if std::mem::take(&mut self.discarding) || len > self.max {
                    return Some(Frame::TooLong);
                }
                Some(Frame::Line(&self.buf[line]))
            }
            None if self.eof => {
                // The stream ended: the rest is the last line.
                let rest = self.start..self.buf.len();
                self.start = self.buf.len();
                self.scanned = 0;
                if std::mem::take(&mut self.discarding) || rest.len() > self.max {
                    return Some(Frame::TooLong);
                }
                (!rest.is_empty()).then(|| Frame::Line(&self.buf[rest]))
            }
            None => {
                self.scanned = pending.len();
                if self.discarding || pending.len() > self.max {
                    self.discarding = true;
                    self.start = self.buf.len();
                    self.scanned = 0;
                }
                None
            }
        }
    }

    /// Marks the end of the stream: [`Framer::next_frame`] then hands out
    /// an unterminated last line too.
    pub fn end(&mut self) {
        self.eof = true;
    }

    /// True once the end of the stream was marked.
    pub fn is_ended(&self) -> bool {
        self.eof
    }

    /// True once the stream ended and every line was handed out.
    pub fn is_done(&self) -> bool {
        self.eof && self.start == self.buf.len() && !self.discarding
    }
}

/// The first line of a session: `AUTH <store> <api-key>`.
#[derive(Debug, PartialEq, Eq)]
pub struct Auth<'a> {
    pub store: &'a str,
    pub key: &'a str,
}

/// The first line is not `AUTH <store> <api-key>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid auth format, expected: AUTH <store> <api-key>")]
pub struct AuthFormatError;

/// Reads the first line: after trimming it must split on single spaces
/// into exactly three parts, the first `AUTH` in any case (as the
/// original: `AUTH  s k`, with two spaces, has four parts).
pub fn parse_auth(line: &[u8]) -> Result<Auth<'_>, AuthFormatError> {
    let text = std::str::from_utf8(line.trim_ascii()).map_err(|_| AuthFormatError)?;
    let mut parts = text.split(' ');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(cmd), Some(store), Some(key), None) if cmd.eq_ignore_ascii_case("AUTH") => {
            Ok(Auth { store, key })
        }
        _ => Err(AuthFormatError),
    }
}

/// A line after a successful `AUTH`.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// Blank: ignored, no reply.
    Empty,
    /// `QUIT` in any case: reply `OK bye` and close.
    Quit,
    /// Store `data` (valid JSON text, exactly as sent) at `timestamp`
    /// (`None`: now, assigned by the store).
    Insert {
        timestamp: Option<i64>,
        data: &'a str,
    },
}

/// Why a line cannot be stored. The `Display` text is the reply after
/// `ERROR `.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    #[error("invalid JSON: line is not valid UTF-8 (byte {at})")]
    NotUtf8 { at: usize },
    #[error("invalid JSON: {reason}")]
    InvalidJson { reason: String },
    #[error("invalid timestamp: expected a non-negative integer of Unix nanoseconds")]
    InvalidTimestamp,
    #[error("line too long: the limit is {limit} bytes")]
    TooLong { limit: usize },
}

/// The optional wrapper: an object with exactly the keys `data` and
/// (optionally) `timestamp`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wrapper<'a> {
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow)]
    data: &'a RawValue,
}

/// Reads a line after `AUTH` (see [`Line`]).
///
/// The timestamp rule: a JSON object whose keys are exactly `data`, or
/// exactly `data` and `timestamp`, is a wrapper: `data` is stored, at
/// `timestamp` if that is a positive integer, at now if it is `0`, `null`
/// or absent; any other `timestamp` is an error. Every other JSON value
/// (an object with any other key included) is stored whole, at now.
pub fn parse_line(line: &[u8]) -> Result<Line<'_>, ParseError> {
    let line = line.trim_ascii();
    if line.is_empty() {
        return Ok(Line::Empty);
    }
    if line.eq_ignore_ascii_case(b"QUIT") {
        return Ok(Line::Quit);
    }
    let text = std::str::from_utf8(line).map_err(|e| ParseError::NotUtf8 {
        at: e.valid_up_to(),
    })?;
    // Only an object that names `data` can be a wrapper; an escaped key
    // (`"d\u0061ta"`) might, so a backslash also takes the slow path.
    if line[0] == b'{'
        && (memchr::memmem::find(line, b"\"data\"").is_some()
            || memchr::memchr(b'\\', line).is_some())
    {
        if let Ok(w) = serde_json::from_str::<Wrapper<'_>>(text) {
            let timestamp = match w.timestamp.map(|t| t.get().parse::<i64>()) {
                None | Some(Ok(0)) => None,
                Some(Ok(t)) if t > 0 => Some(t),
                Some(_) => return Err(ParseError::InvalidTimestamp),
            };
            return Ok(Line::Insert {
                timestamp,
                data: w.data.get(),
            });
        }
    }
    serde_json::from_str::<serde::de::IgnoredAny>(text).map_err(|e| ParseError::InvalidJson {
        reason: e.to_string(),
    })?;
    Ok(Line::Insert {
        timestamp: None,
        data: text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(f: &mut Framer) -> Vec<Option<Vec<u8>>> {
        let mut out = Vec::new();
        while let Some(fr) = f.next_frame() {
            out.push(match fr {
                Frame::Line(l) => Some(l.to_vec()),
                Frame::TooLong => None,
            });
        }
        out
    }

    #[test]
    fn framing_tells_incomplete_from_complete() {
        let mut f = Framer::new(16);
        f.push(b"ab");
        assert_eq!(frames(&mut f), Vec::<Option<Vec<u8>>>::new());
        f.push(b"c\nde\n\nf");
        assert_eq!(
            frames(&mut f),
            vec![Some(b"abc".to_vec()), Some(b"de".to_vec()), Some(vec![])]
        );
        assert!(!f.is_done());
        f.end();
        assert_eq!(f.next_frame(), Some(Frame::Line(b"f")));
        assert_eq!(f.next_frame(), None);
        assert!(f.is_done());
    }

    #[test]
    fn an_overlong_line_is_dropped_up_to_its_newline() {
        let mut f = Framer::new(8);
        f.push(b"ok\n0123456");
        assert_eq!(frames(&mut f), vec![Some(b"ok".to_vec())]);
        // Over the limit without a newline: dropped as it arrives.
        f.push(b"789abcdef");
        assert_eq!(frames(&mut f), vec![]);
        assert!(f.buf.len() - f.start == 0, "overlong bytes kept");
        for _ in 0..100 {
            f.push(&[b'x'; 1000]);
            assert_eq!(frames(&mut f), vec![]);
            assert!(f.buf.len() - f.start == 0);
        }
        f.push(b"tail\nnext\n");
        assert_eq!(frames(&mut f), vec![None, Some(b"next".to_vec())]);
        // Exactly the limit is fine; one more byte is not.
        f.push(b"12345678\n123456789\n");
        assert_eq!(frames(&mut f), vec![Some(b"12345678".to_vec()), None]);
        f.push(b"123456789");
        assert_eq!(frames(&mut f), vec![]);
        f.end();
        assert_eq!(f.next_frame(), Some(Frame::TooLong));
        assert_eq!(f.next_frame(), None);
        assert!(f.is_done());
    }

    #[test]
    fn auth_lines() {
        let a = parse_auth(b"AUTH s1 tsstore_k\r").unwrap();
        assert_eq!((a.store, a.key), ("s1", "tsstore_k"));
        assert!(parse_auth(b"auth s k").is_ok());
        assert!(parse_auth(b"  AuTh s k  ").is_ok());
        for bad in [
            &b"AUTH s"[..],
            b"AUTH s k extra",
            b"AUTH  s k",
            b"LOGIN s k",
            b"",
            b"AUTH s \xff",
        ] {
            assert_eq!(parse_auth(bad), Err(AuthFormatError), "{bad:?}");
        }
        assert_eq!(
            AuthFormatError.to_string(),
            "invalid auth format, expected: AUTH <store> <api-key>"
        );
    }

    fn insert(line: &str) -> (Option<i64>, String) {
        match parse_line(line.as_bytes()) {
            Ok(Line::Insert { timestamp, data }) => (timestamp, data.to_string()),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn data_lines() {
        assert_eq!(parse_line(b"  \r"), Ok(Line::Empty));
        assert_eq!(parse_line(b"quit\r"), Ok(Line::Quit));
        assert_eq!(parse_line(b"QuIt"), Ok(Line::Quit));
        assert_eq!(
            insert(" {\"temp\": 22.5} \r"),
            (None, "{\"temp\": 22.5}".into())
        );
        assert_eq!(insert("42"), (None, "42".into()));
        assert_eq!(insert("\"text\""), (None, "\"text\"".into()));
        assert!(matches!(
            parse_line(b"{\"temp\":"),
            Err(ParseError::InvalidJson { .. })
        ));
        assert!(matches!(
            parse_line(b"hello"),
            Err(ParseError::InvalidJson { .. })
        ));
        assert_eq!(
            parse_line(b"{\"a\":\"\xff\"}"),
            Err(ParseError::NotUtf8 { at: 6 })
        );
    }

    #[test]
    fn the_timestamp_wrapper_and_its_ambiguity_rule() {
        assert_eq!(
            insert(r#"{"timestamp": 1700000000000000000, "data": {"t": 1}}"#),
            (Some(1_700_000_000_000_000_000), r#"{"t": 1}"#.into())
        );
        assert_eq!(insert(r#"{"data": [1, 2]}"#), (None, "[1, 2]".into()));
        assert_eq!(insert(r#"{"data":null}"#), (None, "null".into()));
        assert_eq!(insert(r#"{"timestamp":0,"data":1}"#), (None, "1".into()));
        assert_eq!(insert(r#"{"timestamp":null,"data":1}"#), (None, "1".into()));
        assert_eq!(insert(r#"{"d\u0061ta":5}"#), (None, "5".into()));
        for bad in [
            r#"{"timestamp":-1,"data":1}"#,
            r#"{"timestamp":1.5,"data":1}"#,
            r#"{"timestamp":"5","data":1}"#,
            r#"{"timestamp":99999999999999999999,"data":1}"#,
        ] {
            assert_eq!(
                parse_line(bad.as_bytes()),
                Err(ParseError::InvalidTimestamp),
                "{bad}"
            );
        }
        // Any other key, or no `data`: the whole object is the data.
        for whole in [
            r#"{"data":1,"unit":"C"}"#,
            r#"{"timestamp":5}"#,
            r#"{"datum":1}"#,
            r#"{"data":1,"data":2}"#,
            r#"{"x":"\"data\""}"#,
        ] {
            assert_eq!(insert(whole), (None, whole.into()), "{whole}");
        }
        // A broken wrapper is a JSON error, not data.
        assert!(matches!(
            parse_line(br#"{"data": [1,}"#),
            Err(ParseError::InvalidJson { .. })
        ));
    }

    #[test]
    fn parsers_never_panic_on_garbage() {
        const ALPHABET: &[u8] = b"{}[]\":,0123 data timestamp\\\xff\n";
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for len in 0..2000 {
            let bytes: Vec<u8> = (0..len % 97)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    ALPHABET[(seed % ALPHABET.len() as u64) as usize]
                })
                .collect();
            let _ = parse_line(&bytes);
            let _ = parse_auth(&bytes);
            let mut f = Framer::new(16);
            f.push(&bytes);
            while f.next_frame().is_some() {}
            f.end();
            while f.next_frame().is_some() {}
            assert!(f.is_done());
        }
    }
}
