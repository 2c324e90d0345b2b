//! A file system that loses power on cue, for the cut tests of create,
//! delete and small-file writes (FORMAT.md, "File-system operations and
//! power cuts").
//!
//! [`SimFs`] performs every [`Fs`] call on a real directory tree (so the
//! code under test, and `Store::open` after it, see real files) and keeps
//! beside it a model of what is durable: per file its contents as of its last
//! `sync_file` plus the writes since; per directory its entries as of its
//! last `sync_dir` plus the creates, renames and removes since. Calls number
//! from 0; with a cut at `k`, calls `0..k` run and every later call fails
//! with [`CUT`]. [`SimFs::power_cut`] then rewrites the tree as a [`Loss`]
//! model says a power cut could leave it.
//!
//! Syncs change only the model (a real fsync would only slow the tests).
//!
//! Invariant: only the tree under the root given to [`SimFs::new`] is
//! modelled; a call outside it, or a rename between two directories (which
//! no sequence here needs), fails without touching the disk.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use super::fs::{Entry, Fs, RealFs};

/// The message of the error every call after the cut fails with.
pub const CUT: &str = "simulated power cut";

/// What a power cut takes of the work not yet made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loss {
    /// Nothing: every call that ran is kept (a crash of the program, or a
    /// kernel that wrote everything back in time).
    Nothing,
    /// Everything: only what an fsync made durable is kept.
    Unsynced,
    /// Any part, chosen by the seed: any subset of each file's unsynced
    /// writes, in order, the last one kept possibly only in part; any
    /// subset of each directory's unsynced entry changes, in order, each
    /// rename whole or not at all.
    Torn(u64),
}

impl std::fmt::Display for Loss {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Loss::Nothing => f.write_str("nothing lost"),
            Loss::Unsynced => f.write_str("unsynced lost"),
            Loss::Torn(seed) => write!(f, "torn, seed {seed}"),
        }
    }
}

#[derive(Debug, Clone)]
enum FileOp {
    SetLen(u64),
    Write(u64, Vec<u8>),
}

#[derive(Debug, Clone)]
enum DirOp {
    Link(OsString, usize),
    Unlink(OsString),
    Rename(OsString, OsString, usize),
}

#[derive(Debug, Clone)]
enum Node {
    File {
        durable: Vec<u8>,
        pending: Vec<FileOp>,
    },
    Dir {
        durable: BTreeMap<OsString, usize>,
        live: BTreeMap<OsString, usize>,
        pending: Vec<DirOp>,
    },
}

struct Inner {
    calls: u64,
    cut_at: Option<u64>,
    log: Vec<String>,
    nodes: Vec<Node>,
}

/// The simulated file system over the tree at `root` (see the module docs).
pub struct SimFs {
    root: PathBuf,
    inner: Mutex<Inner>,
}

fn unsupported(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, what)
}

impl SimFs {
    /// Models the tree now at `root` as durable; cuts the power before call
    /// `cut_at` (never if `None`).
    pub fn new(root: &Path, cut_at: Option<u64>) -> io::Result<SimFs> {
        let mut nodes = Vec::new();
        scan(root, &mut nodes)?;
        Ok(SimFs {
            root: root.to_path_buf(),
            inner: Mutex::new(Inner {
                calls: 0,
                cut_at,
                log: Vec::new(),
                nodes,
            }),
        })
    }

    /// Calls made so far (those that failed at the cut not included).
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// The calls made so far, one line each.
    pub fn log(&self) -> Vec<String> {
        self.lock().log.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Rewrites the tree at the root as a power cut now would leave it
    /// under `loss`. The code under test must have closed its files.
    pub fn power_cut(&self, loss: Loss) -> io::Result<()> {
        let inner = self.lock();
        let mut rng = match loss {
            Loss::Torn(seed) => Some(Rng(seed ^ 0x9e37_79b9_7f4a_7c15)),
            _ => None,
        };
        for e in std::fs::read_dir(&self.root)? {
            let p = e?.path();
            if p.is_dir() {
                std::fs::remove_dir_all(&p)?;
            } else {
                std::fs::remove_file(&p)?;
            }
        }
        write_tree(&inner.nodes, 0, &self.root, loss, &mut rng)
    }

    /// Starts a call: fails it at or after the cut, else counts and logs it.
    fn step(&self, what: &str, path: &Path) -> io::Result<std::sync::MutexGuard<'_, Inner>> {
        let mut inner = self.lock();
        if inner.cut_at.is_some_and(|k| inner.calls >= k) {
            return Err(io::Error::other(CUT));
        }
        let rel = path.strip_prefix(&self.root).unwrap_or(path);
        let line = format!("{} {what} {}", inner.calls, rel.display());
        inner.log.push(line);
        inner.calls += 1;
        Ok(inner)
    }

    /// The node of `path`'s parent directory and `path`'s last name.
    fn parent(&self, inner: &Inner, path: &Path) -> io::Result<(usize, OsString)> {
        let rel = path
            .strip_prefix(&self.root)
            .map_err(|_| unsupported(format!("{} is outside the model", path.display())))?;
        let mut comps: Vec<OsString> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(n) => comps.push(n.to_os_string()),
                _ => return Err(unsupported(format!("{} is not plain", path.display()))),
            }
        }
        let name = comps
            .pop()
            .ok_or_else(|| unsupported("the root itself".to_string()))?;
        let mut at = 0;
        for c in comps {
            at = match &inner.nodes[at] {
                Node::Dir { live, .. } => *live.get(&c).ok_or_else(not_found)?,
                Node::File { .. } => return Err(not_found()),
            };
        }
        Ok((at, name))
    }

    /// A call that removes the entry `path` with `real`.
    fn unlink(
        &self,
        what: &str,
        path: &Path,
        real: impl FnOnce(&Path) -> io::Result<()>,
    ) -> io::Result<()> {
        let mut inner = self.step(what, path)?;
        let (dir, name) = self.parent(&inner, path)?;
        real(path)?;
        dir_op(&mut inner.nodes, dir, DirOp::Unlink(name));
        Ok(())
    }

    fn resolve(&self, inner: &Inner, path: &Path) -> io::Result<usize> {
        if path == self.root {
            return Ok(0);
        }
        let (dir, name) = self.parent(inner, path)?;
        match &inner.nodes[dir] {
            Node::Dir { live, .. } => live.get(&name).copied().ok_or_else(not_found),
            Node::File { .. } => Err(not_found()),
        }
    }
}

fn not_found() -> io::Error {
    io::Error::from(io::ErrorKind::NotFound)
}

fn dir_op(nodes: &mut [Node], dir: usize, op: DirOp) {
    if let Node::Dir { live, pending, .. } = &mut nodes[dir] {
        apply_dir(live, &op);
        pending.push(op);
    }
}

fn file_op(nodes: &mut [Node], file: usize, op: FileOp) {
    if let Node::File { pending, .. } = &mut nodes[file] {
        pending.push(op);
    }
}

fn apply_dir(entries: &mut BTreeMap<OsString, usize>, op: &DirOp) {
    match op {
        DirOp::Link(n, i) => {
            entries.insert(n.clone(), *i);
        }
        DirOp::Unlink(n) => {
            entries.remove(n);
        }
        DirOp::Rename(from, to, i) => {
            if entries.get(from) == Some(i) {
                entries.remove(from);
            }
            entries.insert(to.clone(), *i);
        }
    }
}

fn apply_file(bytes: &mut Vec<u8>, op: &FileOp) {
    match op {
        FileOp::SetLen(n) => bytes.resize(*n as usize, 0),
        FileOp::Write(off, b) => {
            let off = *off as usize;
            if bytes.len() < off + b.len() {
                bytes.resize(off + b.len(), 0);
            }
            bytes[off..off + b.len()].copy_from_slice(b);
        }
    }
}

fn scan(path: &Path, nodes: &mut Vec<Node>) -> io::Result<usize> {
    let me = nodes.len();
    let meta = std::fs::symlink_metadata(path)?;
    if !meta.is_dir() {
        nodes.push(Node::File {
            durable: std::fs::read(path)?,
            pending: Vec::new(),
        });
        return Ok(me);
    }
    nodes.push(Node::Dir {
        durable: BTreeMap::new(),
        live: BTreeMap::new(),
        pending: Vec::new(),
    });
    let mut entries = BTreeMap::new();
    for e in std::fs::read_dir(path)? {
        let e = e?;
        entries.insert(e.file_name(), scan(&e.path(), nodes)?);
    }
    nodes[me] = Node::Dir {
        durable: entries.clone(),
        live: entries,
        pending: Vec::new(),
    };
    Ok(me)
}

/// splitmix64: small, seedable, good enough to pick subsets.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn coin(&mut self) -> bool {
        self.next() & 1 == 1
    }
}

fn write_tree(
    nodes: &[Node],
    at: usize,
    path: &Path,
    loss: Loss,
    rng: &mut Option<Rng>,
) -> io::Result<()> {
    match &nodes[at] {
        Node::File { durable, pending } => {
            let mut bytes = durable.clone();
            for op in pending {
                match (loss, rng.as_mut()) {
                    (Loss::Nothing, _) => apply_file(&mut bytes, op),
                    (Loss::Torn(_), Some(r)) => {
                        if !r.coin() {
                            continue;
                        }
                        match op {
                            FileOp::Write(off, b) if r.coin() => {
                                let keep = (r.next() % (b.len() as u64 + 1)) as usize;
                                apply_file(&mut bytes, &FileOp::Write(*off, b[..keep].to_vec()));
                            }
                            _ => apply_file(&mut bytes, op),
                        }
                    }
                    _ => {}
                }
            }
            std::fs::write(path, bytes)
        }
        Node::Dir {
            durable, pending, ..
        } => {
            if at != 0 {
                std::fs::create_dir(path)?;
            }
            let mut entries = durable.clone();
            for op in pending {
                let keep = match (loss, rng.as_mut()) {
                    (Loss::Nothing, _) => true,
                    (Loss::Torn(_), Some(r)) => r.coin(),
                    _ => false,
                };
                if keep {
                    apply_dir(&mut entries, op);
                }
            }
            for (name, child) in entries {
                write_tree(nodes, child, &path.join(name), loss, rng)?;
            }
            Ok(())
        }
    }
}

impl Fs for SimFs {
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.step("create_dir", path)?;
        let (dir, name) = self.parent(&inner, path)?;
        RealFs.create_dir(path)?;
        let i = inner.nodes.len();
        inner.nodes.push(Node::Dir {
            durable: BTreeMap::new(),
            live: BTreeMap::new(),
            pending: Vec::new(),
        });
        dir_op(&mut inner.nodes, dir, DirOp::Link(name, i));
        Ok(())
    }

    fn create_file(&self, path: &Path, len: u64) -> io::Result<()> {
        let mut inner = self.step("create_file", path)?;
        let (dir, name) = self.parent(&inner, path)?;
        RealFs.create_file(path, len)?;
        let i = inner.nodes.len();
        inner.nodes.push(Node::File {
            durable: Vec::new(),
            pending: vec![FileOp::SetLen(len)],
        });
        dir_op(&mut inner.nodes, dir, DirOp::Link(name, i));
        Ok(())
    }

    fn write_file(&self, path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
        let mut inner = self.step("write_file", path)?;
        let (dir, name) = self.parent(&inner, path)?;
        let existing = self.resolve(&inner, path).ok();
        RealFs.write_file(path, bytes, mode)?;
        let i = match existing {
            Some(i) => {
                file_op(&mut inner.nodes, i, FileOp::SetLen(0));
                i
            }
            None => {
                let i = inner.nodes.len();
                inner.nodes.push(Node::File {
                    durable: Vec::new(),
                    pending: Vec::new(),
                });
                dir_op(&mut inner.nodes, dir, DirOp::Link(name, i));
                i
            }
        };
        file_op(&mut inner.nodes, i, FileOp::Write(0, bytes.to_vec()));
        Ok(())
    }

    fn write_at(&self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        let mut inner = self.step("write_at", path)?;
        let i = self.resolve(&inner, path)?;
        RealFs.write_at(path, offset, bytes)?;
        file_op(&mut inner.nodes, i, FileOp::Write(offset, bytes.to_vec()));
        Ok(())
    }

    fn sync_file(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.step("sync_file", path)?;
        let i = self.resolve(&inner, path)?;
        // The model decides what is durable: a real fsync would only be slow.
        if let Node::File { durable, pending } = &mut inner.nodes[i] {
            for op in pending.drain(..) {
                apply_file(durable, &op);
            }
        }
        Ok(())
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut inner = self.step("rename", from)?;
        let (dir, old) = self.parent(&inner, from)?;
        let (to_dir, new) = self.parent(&inner, to)?;
        if dir != to_dir {
            return Err(unsupported("a rename between directories".to_string()));
        }
        let i = self.resolve(&inner, from)?;
        RealFs.rename(from, to)?;
        dir_op(&mut inner.nodes, dir, DirOp::Rename(old, new, i));
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        self.unlink("remove_file", path, |p| RealFs.remove_file(p))
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        self.unlink("remove_dir", path, |p| RealFs.remove_dir(p))
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut inner = self.step("sync_dir", path)?;
        let i = self.resolve(&inner, path)?;
        // The model decides what is durable: a real fsync would only be slow.
        if let Node::Dir {
            durable,
            live,
            pending,
        } = &mut inner.nodes[i]
        {
            *durable = live.clone();
            pending.clear();
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<Entry>> {
        drop(self.step("read_dir", path)?);
        RealFs.read_dir(path)
    }
}

/// One cut of [`for_every_cut`]: where it fell and what it took.
#[derive(Debug, Clone)]
pub struct Cut {
    /// Calls that ran before the power went.
    pub at: u64,
    /// Calls the operation makes when nothing cuts it.
    pub of: u64,
    pub loss: Loss,
    /// The calls that ran, for the failure message.
    pub log: Vec<String>,
}

impl std::fmt::Display for Cut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "cut after call {} of {} ({}); calls that ran:\n  {}",
            self.at,
            self.of,
            self.loss,
            self.log.join("\n  ")
        )
    }
}

/// Runs `op` once uncut to count its calls `n`, then for every `k` in
/// `0..=n` and every loss model (nothing, unsynced, and `torn_seeds` torn
/// seeds): wipes `scratch`, runs `setup` on it (real file system), runs `op`
/// on a [`SimFs`] over it cut at `k`, applies the power cut and runs `check`
/// on the result. Returns the number of cuts checked. `op`'s result is its
/// own business: after a cut it usually fails.
pub fn for_every_cut(
    scratch: &Path,
    torn_seeds: u64,
    setup: &dyn Fn(&Path),
    op: &dyn Fn(&dyn Fs, &Path),
    check: &dyn Fn(&Path, &Cut),
) -> io::Result<u64> {
    let fresh = || -> io::Result<()> {
        if scratch.exists() {
            std::fs::remove_dir_all(scratch)?;
        }
        std::fs::create_dir_all(scratch)?;
        setup(scratch);
        Ok(())
    };
    fresh()?;
    let whole = SimFs::new(scratch, None)?;
    op(&whole, scratch);
    let of = whole.calls();
    let mut losses = vec![Loss::Nothing, Loss::Unsynced];
    losses.extend((0..torn_seeds).map(Loss::Torn));
    let mut cuts = 0;
    for at in 0..=of {
        for &loss in &losses {
            let loss = match loss {
                // A seed per cut, so that every cut sees other subsets.
                Loss::Torn(s) => Loss::Torn(s.wrapping_mul(1_000_003).wrapping_add(at)),
                l => l,
            };
            fresh()?;
            let fs = SimFs::new(scratch, Some(at))?;
            op(&fs, scratch);
            fs.power_cut(loss)?;
            let cut = Cut {
                at,
                of,
                loss,
                log: fs.log(),
            };
            check(scratch, &cut);
            cuts += 1;
        }
    }
    Ok(cuts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
        let mut out = BTreeMap::new();
        fn walk(root: &Path, p: &Path, out: &mut BTreeMap<String, Vec<u8>>) {
            for e in std::fs::read_dir(p).unwrap() {
                let p = e.unwrap().path();
                let rel = p.strip_prefix(root).unwrap().display().to_string();
                if p.is_dir() {
                    out.insert(format!("{rel}/"), Vec::new());
                    walk(root, &p, out);
                } else {
                    out.insert(rel, std::fs::read(&p).unwrap());
                }
            }
        }
        walk(root, root, &mut out);
        out
    }

    /// `root/d` with one synced and one unsynced file, `d` synced.
    fn synced_dir_d(fs: &SimFs, root: &Path) {
        let d = root.join("d");
        fs.create_dir(&d).unwrap();
        fs.write_file(&d.join("synced"), b"abc", 0o644).unwrap();
        fs.sync_file(&d.join("synced")).unwrap();
        fs.write_file(&d.join("unsynced"), b"xyz", 0o644).unwrap();
        fs.sync_dir(&d).unwrap();
    }

    #[test]
    fn unsynced_work_is_lost_and_synced_work_kept() {
        let root = tempfile::tempdir().unwrap();
        std::fs::write(root.path().join("old"), b"kept").unwrap();
        let fs = SimFs::new(root.path(), None).unwrap();
        synced_dir_d(&fs, root.path());
        fs.remove_file(&root.path().join("old")).unwrap();
        fs.power_cut(Loss::Unsynced).unwrap();
        // `d` itself was never made durable in the root: all of it is gone,
        // and the remove of `old` too.
        assert_eq!(
            tree(root.path()),
            BTreeMap::from([("old".into(), b"kept".to_vec())])
        );
    }

    #[test]
    fn a_synced_directory_keeps_its_entries_and_synced_contents() {
        let root = tempfile::tempdir().unwrap();
        let fs = SimFs::new(root.path(), None).unwrap();
        synced_dir_d(&fs, root.path());
        fs.sync_dir(root.path()).unwrap();
        fs.power_cut(Loss::Unsynced).unwrap();
        assert_eq!(
            tree(root.path()),
            BTreeMap::from([
                ("d/".into(), Vec::new()),
                ("d/synced".into(), b"abc".to_vec()),
                ("d/unsynced".into(), Vec::new()),
            ])
        );
    }

    #[test]
    fn nothing_lost_keeps_every_call_and_calls_after_the_cut_fail() {
        let root = tempfile::tempdir().unwrap();
        let fs = SimFs::new(root.path(), Some(2)).unwrap();
        fs.write_file(&root.path().join("a"), b"1", 0o644).unwrap();
        fs.rename(&root.path().join("a"), &root.path().join("b"))
            .unwrap();
        let e = fs.write_file(&root.path().join("c"), b"2", 0o644);
        assert_eq!(e.unwrap_err().to_string(), CUT);
        assert_eq!(fs.calls(), 2);
        fs.power_cut(Loss::Nothing).unwrap();
        assert_eq!(
            tree(root.path()),
            BTreeMap::from([("b".into(), b"1".to_vec())])
        );
    }

    #[test]
    fn torn_keeps_subsets_and_every_subset_shows_up() {
        let mut seen = std::collections::BTreeSet::new();
        for seed in 0..64 {
            let root = tempfile::tempdir().unwrap();
            let fs = SimFs::new(root.path(), None).unwrap();
            fs.write_file(&root.path().join("a"), b"abcd", 0o644)
                .unwrap();
            fs.write_file(&root.path().join("b"), b"", 0o644).unwrap();
            fs.power_cut(Loss::Torn(seed)).unwrap();
            let t = tree(root.path());
            seen.insert(format!("{t:?}"));
            for (name, bytes) in &t {
                assert!(name == "b" || b"abcd".starts_with(bytes), "{t:?}");
            }
        }
        // Neither, either, both; "a" empty, torn or whole.
        assert!(seen.len() >= 6, "{seen:?}");
    }

    #[test]
    fn outside_the_root_and_across_directories_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let fs = SimFs::new(root.path(), None).unwrap();
        assert!(fs.create_dir(&other.path().join("x")).is_err());
        fs.create_dir(&root.path().join("d")).unwrap();
        fs.write_file(&root.path().join("f"), b"", 0o644).unwrap();
        let e = fs.rename(&root.path().join("f"), &root.path().join("d/f"));
        assert_eq!(e.unwrap_err().kind(), io::ErrorKind::Unsupported);
        assert!(root.path().join("f").exists());
    }
}
