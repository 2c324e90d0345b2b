//! Fuzz target: the Unix socket's line protocol (`tsstore::ingest::line`).
//! Arbitrary bytes, fed to the framer in chunks of an arbitrary size, must
//! frame into the same lines as when fed at once; no line is longer than
//! the limit or holds a `\n`; parsing never panics, and what would be
//! stored is valid JSON with no timestamp or a positive one.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tsstore::ingest::line::{parse_auth, parse_line, Frame, Framer, Line};

/// A small limit, so that overlong lines are common.
const MAX: usize = 64;

fn frames(input: &[u8], chunk: usize) -> Vec<Option<Vec<u8>>> {
    let mut f = Framer::new(MAX);
    let mut out = Vec::new();
    let mut take = |f: &mut Framer| {
        while let Some(frame) = f.next_frame() {
            out.push(match frame {
                Frame::Line(l) => Some(l.to_vec()),
                Frame::TooLong => None,
            });
        }
    };
    for part in input.chunks(chunk) {
        f.push(part);
        take(&mut f);
    }
    f.end();
    take(&mut f);
    assert!(f.is_done());
    out
}

fuzz_target!(|input: &[u8]| {
    let Some((first, rest)) = input.split_first() else {
        return;
    };
    let chunked = frames(rest, usize::from(*first % 64) + 1);
    assert_eq!(chunked, frames(rest, rest.len().max(1)));
    for line in chunked.iter().flatten() {
        assert!(line.len() <= MAX && !line.contains(&b'\n'));
        let _ = parse_auth(line);
        if let Ok(Line::Insert { timestamp, data }) = parse_line(line) {
            // Valid as the store checks JSON (numbers are not range-checked).
            serde_json::from_str::<&serde_json::value::RawValue>(data)
                .expect("stored data is JSON");
            assert!(timestamp.is_none_or(|t| t > 0));
        }
    }
});
