//! A filesystem tree as data, to compare unpacked images.
//!
//! [`tree_of`] walks a directory (an unpacked rootfs) without following
//! symlinks and records, for every path below it (the root itself is left
//! out), what the squash invariant in DESIGN.md promises to keep: type, mode
//! with setuid/setgid/sticky bits, uid, gid, symlink target, device numbers,
//! sha256 of file contents, xattrs (`llistxattr`/`lgetxattr`, so
//! `security.capability` too), and hard links as the *set of paths* sharing an
//! inode (inode numbers differ between two unpacks; the grouping does not).
//! mtimes are recorded but [`assert_same_tree`] ignores them.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::CString;
use std::fmt::Write as _;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::Path;

use sha2::{Digest as _, Sha256};

/// What kind of filesystem object a path is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

/// Everything recorded about one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub kind: Kind,
    /// Permission bits including setuid (0o4000), setgid and sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Size in bytes for files, 0 otherwise.
    pub size: u64,
    /// `sha256:HEX` of the contents, for files.
    pub sha256: Option<String>,
    /// Link target, for symlinks.
    pub target: Option<String>,
    /// `(major, minor)`, for char and block devices.
    pub rdev: Option<(u32, u32)>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
    /// For an inode with more than one name in the tree: all those names
    /// (this path included). Empty otherwise.
    pub hardlinks: BTreeSet<String>,
    /// Seconds since the epoch; not compared by default.
    pub mtime: i64,
}

/// Path (`/app/run.sh`) -> node, sorted.
pub type Tree = BTreeMap<String, Node>;

/// What [`diff_trees`] compares besides the always-compared fields.
#[derive(Clone, Copy, Debug, Default)]
pub struct CompareOptions {
    pub mtime: bool,
}

/// Walk `root` and record every path below it. Panics on I/O errors.
pub fn tree_of(root: &Path) -> Tree {
    let mut tree = Tree::new();
    let mut inodes: HashMap<(u64, u64), Vec<String>> = HashMap::new();
    walk(root, "", &mut tree, &mut inodes)
        .unwrap_or_else(|e| panic!("walking {}: {e}", root.display()));
    for paths in inodes.into_values().filter(|p| p.len() > 1) {
        let set: BTreeSet<String> = paths.iter().cloned().collect();
        for p in &paths {
            tree.get_mut(p)
                .expect("hard-linked path is in the tree")
                .hardlinks = set.clone();
        }
    }
    tree
}

fn walk(
    dir: &Path,
    prefix: &str,
    tree: &mut Tree,
    inodes: &mut HashMap<(u64, u64), Vec<String>>,
) -> io::Result<()> {
    let mut entries: Vec<_> = fs::read_dir(dir)?.collect::<Result<_, _>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = format!("{prefix}/{}", entry.file_name().to_string_lossy());
        let meta = fs::symlink_metadata(&path)?;
        let ft = meta.file_type();
        let kind = if ft.is_file() {
            Kind::File
        } else if ft.is_dir() {
            Kind::Dir
        } else if ft.is_symlink() {
            Kind::Symlink
        } else if ft.is_char_device() {
            Kind::Char
        } else if ft.is_block_device() {
            Kind::Block
        } else if ft.is_fifo() {
            Kind::Fifo
        } else {
            Kind::Socket
        };
        let node = Node {
            kind,
            mode: meta.mode() & 0o7777,
            uid: meta.uid(),
            gid: meta.gid(),
            size: if kind == Kind::File { meta.len() } else { 0 },
            sha256: if kind == Kind::File {
                Some(file_sha256(&path)?)
            } else {
                None
            },
            target: if kind == Kind::Symlink {
                Some(fs::read_link(&path)?.to_string_lossy().into_owned())
            } else {
                None
            },
            rdev: matches!(kind, Kind::Char | Kind::Block)
                .then(|| (libc::major(meta.rdev()), libc::minor(meta.rdev()))),
            xattrs: xattrs_of(&path)?,
            hardlinks: BTreeSet::new(),
            mtime: meta.mtime(),
        };
        if kind != Kind::Dir && meta.nlink() > 1 {
            inodes
                .entry((meta.dev(), meta.ino()))
                .or_default()
                .push(name.clone());
        }
        tree.insert(name.clone(), node);
        if kind == Kind::Dir {
            walk(&path, &name, tree, inodes)?;
        }
    }
    Ok(())
}

fn file_sha256(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    io::copy(&mut fs::File::open(path)?, &mut hasher)?;
    Ok(format!("sha256:{}", hex::encode(hasher.finalize())))
}

/// All xattrs of `path` itself (not of a symlink's target).
pub fn xattrs_of(path: &Path) -> io::Result<BTreeMap<String, Vec<u8>>> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let mut out = BTreeMap::new();
    // SAFETY: c is NUL-terminated; a null buffer with size 0 asks for the size.
    let len = unsafe { libc::llistxattr(c.as_ptr(), std::ptr::null_mut(), 0) };
    if len < 0 {
        let e = io::Error::last_os_error();
        // No xattr support on this filesystem: nothing to record.
        return if e.raw_os_error() == Some(libc::ENOTSUP) {
            Ok(out)
        } else {
            Err(e)
        };
    }
    if len == 0 {
        return Ok(out);
    }
    let mut names = vec![0u8; len as usize];
    // SAFETY: the buffer has the size we pass.
    let len = unsafe { libc::llistxattr(c.as_ptr(), names.as_mut_ptr().cast(), names.len()) };
    if len < 0 {
        return Err(io::Error::last_os_error());
    }
    names.truncate(len as usize);
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = CString::new(name).map_err(io::Error::other)?;
        // SAFETY: as above.
        let vlen = unsafe { libc::lgetxattr(c.as_ptr(), cname.as_ptr(), std::ptr::null_mut(), 0) };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut value = vec![0u8; vlen as usize];
        let vlen = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                cname.as_ptr(),
                value.as_mut_ptr().cast(),
                value.len(),
            )
        };
        if vlen < 0 {
            return Err(io::Error::last_os_error());
        }
        value.truncate(vlen as usize);
        out.insert(String::from_utf8_lossy(name).into_owned(), value);
    }
    Ok(out)
}

/// Human description of how `a` and `b` differ; empty when they are equal.
fn node_diff(a: &Node, b: &Node, opts: CompareOptions) -> Vec<String> {
    let mut d = Vec::new();
    let mut field = |name: &str, x: String, y: String| {
        if x != y {
            d.push(format!("{name} {x} != {y}"));
        }
    };
    field("kind", format!("{:?}", a.kind), format!("{:?}", b.kind));
    field("mode", format!("{:04o}", a.mode), format!("{:04o}", b.mode));
    field("uid", a.uid.to_string(), b.uid.to_string());
    field("gid", a.gid.to_string(), b.gid.to_string());
    field("size", a.size.to_string(), b.size.to_string());
    field(
        "sha256",
        format!("{:?}", a.sha256),
        format!("{:?}", b.sha256),
    );
    field(
        "target",
        format!("{:?}", a.target),
        format!("{:?}", b.target),
    );
    field("rdev", format!("{:?}", a.rdev), format!("{:?}", b.rdev));
    field("xattrs", show_xattrs(&a.xattrs), show_xattrs(&b.xattrs));
    field(
        "hardlinks",
        format!("{:?}", a.hardlinks),
        format!("{:?}", b.hardlinks),
    );
    if opts.mtime {
        field("mtime", a.mtime.to_string(), b.mtime.to_string());
    }
    d
}

fn show_xattrs(x: &BTreeMap<String, Vec<u8>>) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in x.iter().enumerate() {
        if i > 0 {
            s.push_str(", ");
        }
        let _ = write!(s, "{k}=0x{}", hex::encode(v));
    }
    s.push('}');
    s
}

fn summary(n: &Node) -> String {
    match n.kind {
        Kind::Symlink => format!("symlink -> {}", n.target.as_deref().unwrap_or("?")),
        Kind::File => format!("file {:04o} {}:{} {} bytes", n.mode, n.uid, n.gid, n.size),
        k => format!("{k:?} {:04o} {}:{}", n.mode, n.uid, n.gid),
    }
}

/// Every difference between `a` (expected) and `b` (actual), one line each:
/// `- PATH` only in `a`, `+ PATH` only in `b`, `~ PATH: …` changed.
pub fn diff_trees(a: &Tree, b: &Tree, opts: CompareOptions) -> Vec<String> {
    let paths: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    let mut out = Vec::new();
    for p in paths {
        match (a.get(p), b.get(p)) {
            (Some(x), None) => out.push(format!("- {p} ({})", summary(x))),
            (None, Some(y)) => out.push(format!("+ {p} ({})", summary(y))),
            (Some(x), Some(y)) => {
                let d = node_diff(x, y, opts);
                if !d.is_empty() {
                    out.push(format!("~ {p}: {}", d.join("; ")));
                }
            }
            (None, None) => unreachable!(),
        }
    }
    out
}

/// Panic with the first 20 differences unless the trees are the same
/// (mtimes ignored). `expected` is usually the original image, `actual`
/// what slim produced.
#[track_caller]
pub fn assert_same_tree(expected: &Tree, actual: &Tree) {
    assert_same_tree_with(expected, actual, CompareOptions::default());
}

/// [`assert_same_tree`] with explicit options.
#[track_caller]
pub fn assert_same_tree_with(expected: &Tree, actual: &Tree, opts: CompareOptions) {
    let diff = diff_trees(expected, actual, opts);
    if diff.is_empty() {
        return;
    }
    let shown = diff.iter().take(20).cloned().collect::<Vec<_>>().join("\n");
    let more = if diff.len() > 20 {
        format!("\n… and {} more", diff.len() - 20)
    } else {
        String::new()
    };
    panic!(
        "trees differ in {} path(s) (- only expected, + only actual, ~ changed):\n{shown}{more}",
        diff.len()
    );
}
