//! Units and figures shown to people: byte sizes, durations, and the
//! capacity of a store's geometry (the CLI's `calc` and the console's
//! create page print the same figures).

use crate::store::format;

pub fn human_bytes(n: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Objects one block holds, or blocks one object needs (negative).
pub fn per_block(data_size: u32, object_size: u32) -> (u64, u64) {
    let payload = (data_size as u64).saturating_sub(format::BLOCK_HEADER_LEN as u64);
    let rec = format::RECORD_HEADER_LEN as u64 + object_size as u64;
    if rec <= payload {
        (payload / rec, 1)
    } else {
        (1, rec.div_ceil(payload.max(1)))
    }
}

pub fn human_duration(secs: f64) -> String {
    if !secs.is_finite() {
        return "forever".into();
    }
    let s = secs as u64;
    let (d, h, m) = (s / 86_400, s % 86_400 / 3600, s % 3600 / 60);
    match (d, h, m) {
        (0, 0, 0) => format!("{secs:.1}s"),
        (0, 0, m) => format!("{m}m {}s", s % 60),
        (0, h, m) => format!("{h}h {m}m"),
        (d, h, _) => format!("{d}d {h}h"),
    }
}

/// Capacity figures of a ring: `blocks` data blocks of `data_size`
/// bytes holding objects of `object_size` bytes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Capacity {
    /// Objects one block holds (1 when an object spans blocks).
    pub objects_per_block: u64,
    /// Blocks one object needs (1 when it fits in one).
    pub blocks_per_object: u64,
    /// Objects the ring holds.
    pub capacity: u64,
    /// Bytes of the data file.
    pub data_bytes: u64,
}

/// The figures `tsstore calc` prints (and the console's create form shows).
pub fn capacity(blocks: u64, data_size: u32, object_size: u32) -> Capacity {
    let (objs, span) = per_block(data_size, object_size);
    Capacity {
        objects_per_block: objs,
        blocks_per_object: span,
        // One block is the one being filled: capacity counts the others whole.
        capacity: if span == 1 {
            blocks * objs
        } else {
            blocks / span
        },
        data_bytes: blocks * data_size as u64,
    }
}
