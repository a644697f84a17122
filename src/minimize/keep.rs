//! From a trace to a keep-list, and the keep-list as a profile.
//!
//! Keep = the traced paths that exist in the image (files opened or run,
//! directories listed), the nearest existing directory of each path a
//! process created, the working directory, and every symlink whose chain
//! ends at a kept path or at a directory holding one (what `stat`,
//! `readlink` and path lookups went through, which fanotify does not
//! report). The profile the keep-list becomes removes everything else
//! (`remove = ["**"]`, `dirs = true`: a directory goes when nothing in it
//! stays), and is applied like any profile: its safety keeps add the rest
//! of the static closure on whatever tree it is applied to (the ELF
//! libraries of every kept program and library, `#!` interpreters, the
//! entrypoint, licences, CA certificates, `/etc`).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::layer::entry::{Kind, ancestors};
use crate::transform::tree::{TreeView, resolve};

/// The category of everything a minimization removes.
pub const CATEGORY: &str = "not used at run time";

/// Kind, permission bits, and a symlink's target.
type Node = (Kind, u32, Option<Vec<u8>>);

/// A materialized image tree on disk, read once (kinds, modes, link
/// targets); contents are read on demand.
pub struct DiskTree {
    root: PathBuf,
    nodes: BTreeMap<Vec<u8>, Node>,
}

impl DiskTree {
    /// Walks `root` (symlinks are not followed).
    pub fn read(root: &Path) -> Result<DiskTree> {
        let mut nodes = BTreeMap::new();
        let mut todo: Vec<Vec<u8>> = vec![Vec::new()];
        while let Some(dir) = todo.pop() {
            let on_disk = root.join(std::ffi::OsStr::from_bytes(&dir));
            let entries = std::fs::read_dir(&on_disk)
                .with_context(|| format!("reading {}", on_disk.display()))?;
            for e in entries {
                let e = e.with_context(|| format!("reading {}", on_disk.display()))?;
                let mut rel = dir.clone();
                if !rel.is_empty() {
                    rel.push(b'/');
                }
                rel.extend_from_slice(e.file_name().as_bytes());
                let meta = e.metadata()?;
                let t = meta.file_type();
                let kind = if t.is_dir() {
                    Kind::Dir
                } else if t.is_symlink() {
                    Kind::Symlink
                } else if t.is_file() {
                    Kind::File
                } else if t.is_char_device() {
                    Kind::Char
                } else if t.is_block_device() {
                    Kind::Block
                } else {
                    Kind::Fifo
                };
                let target = t
                    .is_symlink()
                    .then(|| std::fs::read_link(e.path()).ok())
                    .flatten()
                    .map(|p| p.as_os_str().as_bytes().to_vec());
                if kind == Kind::Dir {
                    todo.push(rel.clone());
                }
                nodes.insert(rel, (kind, meta.permissions().mode() & 0o7777, target));
            }
        }
        Ok(DiskTree {
            root: root.to_path_buf(),
            nodes,
        })
    }
}

impl TreeView for DiskTree {
    fn kind(&self, path: &[u8]) -> Option<Kind> {
        if path.is_empty() {
            return Some(Kind::Dir);
        }
        self.nodes.get(path).map(|n| n.0)
    }

    fn mode(&self, path: &[u8]) -> Option<u32> {
        self.nodes.get(path).map(|n| n.1)
    }

    fn link_target(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.nodes.get(path).and_then(|n| n.2.clone())
    }

    fn read_at(&self, path: &[u8], offset: u64, limit: usize) -> Option<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        if self.kind(path) != Some(Kind::File) {
            return None;
        }
        let mut f = std::fs::File::open(self.root.join(std::ffi::OsStr::from_bytes(path))).ok()?;
        f.seek(SeekFrom::Start(offset)).ok()?;
        let mut v = Vec::new();
        f.take(limit as u64).read_to_end(&mut v).ok()?;
        Some(v)
    }

    fn paths(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        Box::new(self.nodes.keys().map(Vec::as_slice))
    }
}

/// The keep-list of a traced image (see the module's doc).
pub fn keep_set(
    tree: &dyn TreeView,
    traced: &BTreeSet<Vec<u8>>,
    workdir: &[u8],
) -> BTreeSet<Vec<u8>> {
    let mut keep: BTreeSet<Vec<u8>> = BTreeSet::new();
    for p in traced.iter().chain(std::iter::once(&workdir.to_vec())) {
        if p.is_empty() {
            continue;
        }
        if tree.kind(p).is_some() {
            keep.insert(p.clone());
        } else if let Some(dir) = ancestors(p).find(|a| tree.kind(a) == Some(Kind::Dir)) {
            // Created by the program (it is not in the image): its
            // directory must be there to create it in.
            if !dir.is_empty() {
                keep.insert(dir.to_vec());
            }
        }
    }
    // Python runs a module's bytecode only next to its source, which it
    // `stat`s (never opens) to check the bytecode is current; and bytecode
    // of a kept source keeps start-up as fast as it was.
    let mut python = Vec::new();
    for p in tree.paths() {
        if let Some(source) = bytecode_source(p)
            && tree.kind(&source) == Some(Kind::File)
            && (keep.contains(p) || keep.contains(&source))
        {
            python.push(source);
            python.push(p.to_vec());
        }
    }
    keep.extend(python);
    let holding: BTreeSet<&[u8]> = keep.iter().flat_map(|p| ancestors(p)).collect();
    let mut links = Vec::new();
    for p in tree.paths() {
        if tree.kind(p) != Some(Kind::Symlink) {
            continue;
        }
        let Some((real, chain)) = resolve(tree, p) else {
            continue;
        };
        if keep.contains(&real) || holding.contains(&real[..]) {
            links.extend(chain);
        }
    }
    keep.extend(links);
    // A directory with something kept in it stays anyway; listing it too
    // would make the keep-list depend on whether this run happened to read
    // the directory (Python lists some `__pycache__` only when it has to
    // write there), and the learned profile (recorded in the image) with it.
    let holding: BTreeSet<Vec<u8>> = keep
        .iter()
        .flat_map(|p| ancestors(p))
        .map(<[u8]>::to_vec)
        .collect();
    keep.retain(|p| !(holding.contains(p) && tree.kind(p) == Some(Kind::Dir)));
    keep
}

/// `dir/__pycache__/mod.cpython-311[.opt-1].pyc` -> `dir/mod.py`.
fn bytecode_source(p: &[u8]) -> Option<Vec<u8>> {
    let (dir, name) = crate::layer::entry::split_parent(p);
    if !name.ends_with(b".pyc") {
        return None;
    }
    let (parent, cache) = crate::layer::entry::split_parent(dir);
    if cache != b"__pycache__" {
        return None;
    }
    let module = name
        .split(|b| *b == b'.')
        .next()
        .filter(|m| !m.is_empty())?;
    let mut source = crate::layer::entry::join(parent, module).into_vec();
    source.extend_from_slice(b".py");
    Some(source)
}

/// A path as a glob that matches only it.
fn literal(path: &str) -> String {
    globset::escape(path).replace('\\', "[\\]")
}

/// Debian's multiarch tuples (`/usr/lib/x86_64-linux-gnu`,
/// `_ssl.cpython-311-x86_64-linux-gnu.so`), longest first where one is a
/// prefix of another.
const MULTIARCH: &[&str] = &[
    "x86_64-linux-gnu",
    "aarch64-linux-gnu",
    "arm-linux-gnueabihf",
    "arm-linux-gnueabi",
    "i386-linux-gnu",
    "powerpc64le-linux-gnu",
    "s390x-linux-gnu",
    "riscv64-linux-gnu",
    "mips64el-linux-gnuabi64",
];

/// [`literal`], with a multiarch tuple matching any platform's, so that a
/// profile learned on one platform keeps the same files on the others of a
/// multi-arch image (each platform's tree has only its own tuple).
fn mapped(path: &str) -> String {
    let glob = literal(path);
    match MULTIARCH.iter().find(|t| glob.contains(*t)) {
        Some(t) => glob.replace(t, &format!("{{{}}}", MULTIARCH.join(","))),
        None => glob,
    }
}

/// A TOML basic string.
fn toml_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if c.is_control() => {
                let _ = write!(o, "\\u{:04X}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// The learned keep-list as a profile (TOML): `--keep` globs and the kept
/// paths stay, everything else goes under [`CATEGORY`]; `--remove` globs
/// go first, under `user`. Returns the text and the paths it cannot hold
/// (names that are not UTF-8), which then are not kept.
pub fn profile_text(
    description: &str,
    keep: &BTreeSet<Vec<u8>>,
    user_keep: &[String],
    user_remove: &[String],
) -> (String, Vec<String>) {
    let mut t = String::new();
    t.push_str(
        "# Learned by `slim --minimize`: what the image used while its probes ran.\n\
         # Apply it with `slim SOURCE -o DEST --profile THIS_FILE` (no tracing, no root).\n\
         # Everything not kept goes; the safety keeps (ELF libraries of kept programs,\n\
         # interpreters, the entrypoint, licences, CA certificates, /etc) still hold.\n",
    );
    let _ = writeln!(t, "name = \"learned\"");
    let _ = writeln!(t, "description = {}", toml_str(description));
    if !user_remove.is_empty() {
        t.push_str("\n[[rule]]\ncategory = \"user\"\nremove = [\n");
        for g in user_remove {
            let _ = writeln!(t, "  {},", toml_str(g.trim_start_matches('/')));
        }
        t.push_str("]\n");
    }
    let _ = write!(
        t,
        "\n[[rule]]\ncategory = {}\ndirs = true\nremove = [\"**\"]\nkeep = [\n",
        toml_str(CATEGORY)
    );
    for g in user_keep {
        let _ = writeln!(t, "  {},", toml_str(g.trim_start_matches('/')));
    }
    let mut skipped = Vec::new();
    for p in keep {
        match std::str::from_utf8(p) {
            Ok(s) => {
                let _ = writeln!(t, "  {},", toml_str(&mapped(s)));
            }
            Err(_) => skipped.push(crate::layer::entry::display(p)),
        }
    }
    t.push_str("]\n");
    (t, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tree::testing::MemTree;

    fn set(v: &[&str]) -> BTreeSet<Vec<u8>> {
        v.iter().map(|s| s.as_bytes().to_vec()).collect()
    }

    #[test]
    fn keeps_traced_paths_their_links_and_created_files_dirs() {
        let tree = MemTree::default()
            .file("usr/lib/libx.so.1.2", 0o644, b"x")
            .link("usr/lib/libx.so.1", "libx.so.1.2")
            .link("usr/lib/libx.so", "libx.so.1")
            .link("lib", "usr/lib")
            .link("usr/bin/gone", "/usr/share/unused")
            .file("usr/share/unused", 0o644, b"x")
            .file("app/main", 0o755, b"x")
            .dir("var/cache/app")
            .dir("srv")
            .file("py/enc/__init__.py", 0o644, b"x")
            .file("py/enc/__pycache__/__init__.cpython-311.pyc", 0o644, b"x")
            .file("py/enc/utf_8.py", 0o644, b"x")
            .file(
                "py/enc/__pycache__/utf_8.cpython-311.opt-1.pyc",
                0o644,
                b"x",
            )
            .file("py/enc/__pycache__/unused.cpython-311.pyc", 0o644, b"x")
            .file("py/enc/unused.py", 0o644, b"x");
        let traced = set(&[
            "usr/lib/libx.so.1.2",
            "app/main",
            "var/cache/app/new/f",
            "",
            "py/enc/__pycache__/__init__.cpython-311.pyc",
            "py/enc/utf_8.py",
        ]);
        let keep = keep_set(&tree, &traced, b"srv");
        assert_eq!(
            keep,
            set(&[
                "app/main",
                "lib",
                "py/enc/__init__.py",
                "py/enc/__pycache__/__init__.cpython-311.pyc",
                "py/enc/__pycache__/utf_8.cpython-311.opt-1.pyc",
                "py/enc/utf_8.py",
                "srv",
                "usr/lib/libx.so",
                "usr/lib/libx.so.1",
                "usr/lib/libx.so.1.2",
                "var/cache/app",
            ])
        );
    }

    #[test]
    fn a_listed_directory_with_kept_children_is_left_to_them() {
        let tree = MemTree::default()
            .file("app/pkg/__pycache__/m.cpython-311.pyc", 0o644, b"x")
            .file("app/pkg/m.py", 0o644, b"x")
            .file("app/pkg/other.txt", 0o644, b"x")
            .dir("app/empty");
        // One run listed the directories, the other did not: same keep-list.
        let listed = set(&[
            "app",
            "app/pkg",
            "app/pkg/__pycache__",
            "app/pkg/m.py",
            "app/empty",
        ]);
        let opened = set(&["app/pkg/m.py", "app/empty"]);
        let a = keep_set(&tree, &listed, b"");
        assert_eq!(a, keep_set(&tree, &opened, b""));
        assert_eq!(
            a,
            set(&[
                "app/empty",
                "app/pkg/__pycache__/m.cpython-311.pyc",
                "app/pkg/m.py",
            ])
        );
    }

    #[test]
    fn the_profile_parses_and_keeps_exactly_its_paths() {
        let keep = set(&[
            "usr/lib/a[1].so",
            "app/x*y",
            "app/back\\slash",
            "etc/q\"uote",
            "usr/lib/x86_64-linux-gnu/libz.so.1",
            "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-x86_64-linux-gnu.so",
        ]);
        let (text, skipped) = profile_text(
            "learned from \"demo\"",
            &keep,
            &["opt/**".into()],
            &["/srv/**".into()],
        );
        assert!(skipped.is_empty());
        let p = crate::profile::Profile::parse(&text, "test").unwrap();
        assert_eq!(p.rules.len(), 2);
        assert_eq!(p.rules[0].category, "user");
        assert_eq!(p.rules[1].category, CATEGORY);
        assert!(p.rules[1].dirs);
        let mut b = globset::GlobSetBuilder::new();
        for g in &p.rules[1].keep {
            b.add(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .backslash_escape(true)
                    .build()
                    .unwrap(),
            );
        }
        let keeps = b.build().unwrap();
        for k in [
            "usr/lib/a[1].so",
            "app/x*y",
            "app/back\\slash",
            "etc/q\"uote",
            "opt/a/b",
            "usr/lib/x86_64-linux-gnu/libz.so.1",
            "usr/lib/aarch64-linux-gnu/libz.so.1",
            "usr/lib/arm-linux-gnueabihf/libz.so.1",
            "usr/lib/python3.11/lib-dynload/_ssl.cpython-311-aarch64-linux-gnu.so",
        ] {
            assert!(keeps.is_match(k), "{k}");
        }
        for not in [
            "usr/lib/a1.so",
            "app/xzy",
            "app/x*y/z",
            "etc",
            "usr/lib/aarch64-linux-gnu/libz.so.2",
        ] {
            assert!(!keeps.is_match(not), "{not}");
        }
    }
}
