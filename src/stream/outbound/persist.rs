//! The file of a store's outbound connections, `<store>/ws_connections.json`:
//! `{"connections": [spec, ...]}` pretty-printed, replaced atomically (temp
//! file, fsync, rename, fsync of the directory) so that a power cut leaves
//! either the old or the new list. The file is readable by its owner only:
//! it holds the peers' URLs and headers, keys included.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::Spec;

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
    use std::io::Write;
    let mut text = serde_json::to_vec_pretty(file).map_err(std::io::Error::other)?;
    text.push(b'\n');
    let tmp = dir.join(format!("{FILE}.tmp"));
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Owner only: the URLs and headers hold the peers' keys. A left
        // over temp file would keep its old mode.
        let _ = std::fs::remove_file(&tmp);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, dir.join(FILE))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock;
    use crate::stream::outbound::Mode;
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
}
