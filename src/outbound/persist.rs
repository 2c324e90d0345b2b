//! The file of a store's outbound connections, `<store>/ws_connections.json`:
//! `{"connections": [spec, ...]}` pretty-printed, replaced atomically (temp
//! file, fsync, rename, fsync of the directory) so that a power cut leaves
//! either the old or the new list. The file is readable by its owner only:
//! it holds the peers' URLs and headers, keys included.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Spec;
use crate::store::fs::{Fs, RealFs};

/// The persisted connections of a store, in its directory.
pub const FILE: &str = "ws_connections.json";

#[derive(Serialize, Deserialize, Default)]
pub(super) struct File {
    pub(super) connections: Vec<Spec>,
}

pub(super) fn load(path: &Path) -> std::io::Result<File> {
    let text = std::fs::read(path)?;
    serde_json::from_slice(&text).map_err(std::io::Error::other)
}

/// Temp file, fsync, rename, fsync of the directory.
pub(super) fn write_atomic(dir: &Path, file: &File) -> std::io::Result<()> {
    write_atomic_with(&RealFs, dir, file)
}

/// [`write_atomic`] through the file-system seam `fs`.
pub(super) fn write_atomic_with(fs: &dyn Fs, dir: &Path, file: &File) -> std::io::Result<()> {
    let mut text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    // Owner only: the URLs and headers hold the peers' keys.
    crate::store::fs::replace(fs, dir, FILE, &text, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::outbound::Mode;
    use std::collections::BTreeMap;

    #[test]
    fn the_file_round_trips_with_two_space_indent() {
        let dir = tempfile::tempdir().unwrap();
        let spec = Spec {
            id: "0123abcd".into(),
            mode: Mode::Push,
            url: "ws://h".into(),
            from: 5,
            format: "full".into(),
            headers: BTreeMap::from([("A".into(), "b".into())]),
            filter: "x".into(),
            filter_ignore_case: true,
            created_at: clock::rfc3339_nanos(1),
            last_timestamp: 42,
            ca_file: None,
            created_by: Default::default(),
            agg: Default::default(),
            rules: Vec::new(),
        };
        write_atomic(
            dir.path(),
            &File {
                connections: vec![spec],
            },
        )
        .unwrap();
        let text = std::fs::read_to_string(dir.path().join(FILE)).unwrap();
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir.path().join(FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(text.starts_with("{\n  \"connections\": [\n    {\n      \"id\""));
        let back = load(&dir.path().join(FILE)).unwrap();
        assert_eq!(back.connections[0].last_timestamp, 42);
        assert_eq!(back.connections[0].mode, Mode::Push);
        assert!(!dir.path().join(format!("{FILE}.tmp")).exists());
    }

    #[test]
    fn a_write_leaves_the_old_or_the_new_list_at_every_cut() {
        use crate::store::simfs::for_every_cut;
        let scratch = tempfile::tempdir().unwrap();
        let list = |n: usize| File {
            connections: (0..n)
                .map(|i| Spec {
                    id: format!("{i:08x}"),
                    mode: Mode::Push,
                    url: "ws://h".into(),
                    from: 0,
                    format: "full".into(),
                    headers: BTreeMap::new(),
                    filter: String::new(),
                    filter_ignore_case: false,
                    created_at: clock::rfc3339_nanos(1),
                    last_timestamp: i as i64,
                    ca_file: None,
                    created_by: Default::default(),
                    agg: Default::default(),
                    rules: Vec::new(),
                })
                .collect(),
        };
        let ok = std::cell::Cell::new(false);
        let cuts = for_every_cut(
            scratch.path(),
            4,
            &|dir| write_atomic(dir, &list(1)).unwrap(),
            &|fs: &dyn Fs, dir| ok.set(write_atomic_with(fs, dir, &list(2)).is_ok()),
            &|dir, cut| {
                let got = load(&dir.join(FILE))
                    .unwrap_or_else(|e| panic!("load: {e}\n{cut}"))
                    .connections
                    .len();
                let want: &[usize] = if ok.get() { &[2] } else { &[1, 2] };
                assert!(want.contains(&got), "{got} connections\n{cut}");
            },
        )
        .unwrap();
        assert!(cuts > 0);
    }
}
