//! The squash against a reference model: random layer stacks (files, dirs,
//! symlinks, hard links, whiteouts, opaque dirs, type changes, overwrites,
//! xattrs, devices, long names) are built as tars in memory and applied in
//! order by a simple extractor written here from the OCI spec's rules; the
//! tree from extracting slim's output must be the same (types, modes,
//! owners, times, link targets, xattrs, contents, hard-link groups).
//!
//! The model applies entries in tar order and lets a whiteout remove only
//! what lower layers made ("whiteout files MUST only apply to resources in
//! lower/parent layers"), independently of how `transform::squash` works.
//!
//! Like umoci and containerd it resolves each entry's parent (and each
//! hard-link target's parent) through the symlinks of the tree so far,
//! scoped to the root, the way filepath-securejoin does: component by
//! component, a symlink's target spliced in front of what is left (an
//! absolute one restarting from the root), `..` lexical and never above
//! the root, missing components taken as they are. An entry whose parent
//! is a non-directory, or a parent passing more than 40 symlinks, makes the
//! extraction fail: then slim must refuse the stack too. The generator
//! makes symlinked directories (relative and absolute targets, `..` in
//! targets, chains, links to missing directories, loops, links to files)
//! and writes entries, whiteouts and hard-link targets through them.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::rc::Rc;
use std::sync::Arc;

use slim::layer::read::{IndexOptions, LayerIndex, index_layer};
use slim::layer::write::write_plan;
use slim::transform::filter::KeepAll;
use slim::transform::squash::{self, SquashOptions};

// ---------------------------------------------------------------- PRNG --

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[self.below(xs.len() as u64) as usize]
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

// ---------------------------------------------------------------- model --

#[derive(Clone, Debug, PartialEq, Eq)]
enum NodeKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Char(u32, u32),
    Fifo,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Meta {
    mode: u32,
    uid: u64,
    gid: u64,
    mtime: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Debug)]
struct Inode {
    kind: NodeKind,
    meta: Meta,
}

#[derive(Clone)]
struct Slot {
    inode: Rc<Inode>,
    /// The layer that put this path here (whiteouts act on lower ones).
    layer: usize,
}

/// Per path its kind and metadata, and the hard-link groups.
type View = (
    BTreeMap<String, (NodeKind, Meta)>,
    BTreeSet<BTreeSet<String>>,
);

#[derive(Default, Clone)]
struct Model {
    paths: BTreeMap<String, Slot>,
    /// Entries (and whiteouts) whose parent resolved elsewhere.
    through_links: u64,
}

fn join(dir: &str, name: &str) -> String {
    if dir.is_empty() {
        name.to_string()
    } else {
        format!("{dir}/{name}")
    }
}

/// Go's `filepath.Clean("/" + p)` without the leading slash: `.` and empty
/// components dropped, `..` removes the previous one, never above the root.
fn lexical_clean(p: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            c => out.push(c),
        }
    }
    out.join("/")
}

fn is_under(p: &str, dir: &str) -> bool {
    dir.is_empty() || (p.len() > dir.len() && p.starts_with(dir) && p.as_bytes()[dir.len()] == b'/')
}

impl Model {
    fn remove_lower(&mut self, path: &str, layer: usize, include_self: bool) {
        // What this layer wrote, and every directory above it, stays
        // (umoci's "upper paths").
        let mut upper: BTreeSet<String> = BTreeSet::new();
        for (p, s) in &self.paths {
            if s.layer == layer {
                let mut a = p.as_str();
                while let Some((parent, _)) = a.rsplit_once('/') {
                    upper.insert(parent.to_string());
                    a = parent;
                }
            }
        }
        self.paths.retain(|p, s| {
            let hit = (include_self && p == path) || is_under(p, path);
            !(hit && s.layer < layer && !upper.contains(p))
        });
    }

    /// `dir` resolved through the symlinks of the model, inside the root,
    /// written after Go's `securejoin.SecureJoinVFS`: `resolved` keeps what
    /// is known to hold no symlink, `unsafe_rest` what is left to walk.
    /// Returns the real path and, if some prefix of it is not a directory,
    /// that prefix.
    fn resolve(&self, dir: &str) -> Result<(String, Option<String>), String> {
        let mut resolved = String::new();
        let mut unsafe_rest = dir.to_string();
        let mut links = 0;
        while !unsafe_rest.is_empty() {
            let (p, rest) = match unsafe_rest.split_once('/') {
                Some((p, r)) => (p.to_string(), r.to_string()),
                None => (unsafe_rest.clone(), String::new()),
            };
            unsafe_rest = rest;
            let clean = lexical_clean(&format!("{resolved}/{p}"));
            if clean.is_empty() {
                resolved.clear();
                continue;
            }
            match self.kind_of(&clean) {
                Some(NodeKind::Symlink(target)) => {
                    links += 1;
                    if links > 40 {
                        return Err(format!("too many symlinks resolving {dir:?}"));
                    }
                    if target.starts_with('/') {
                        resolved.clear();
                    }
                    unsafe_rest = format!("{target}/{unsafe_rest}");
                }
                _ => resolved = clean,
            }
        }
        let mut blocked = None;
        let mut prefix = String::new();
        for c in resolved.split('/').filter(|c| !c.is_empty()) {
            prefix = if prefix.is_empty() {
                c.to_string()
            } else {
                format!("{prefix}/{c}")
            };
            if self.kind_of(&prefix).is_some_and(|k| *k != NodeKind::Dir) {
                blocked = Some(prefix.clone());
                break;
            }
        }
        Ok((resolved, blocked))
    }

    /// `path` with its parent resolved; an error if the parent is not a
    /// directory (extraction cannot create anything there).
    fn real(&self, path: &str) -> Result<String, String> {
        let (dir, base) = path.rsplit_once('/').unwrap_or(("", path));
        let (real_dir, blocked) = self.resolve(dir)?;
        if let Some(b) = blocked {
            return Err(format!(
                "{path}: parent {real_dir} is below non-directory {b}"
            ));
        }
        Ok(join(&real_dir, base))
    }

    /// Applies one tar (already parsed into model entries) as layer
    /// `layer`; an error where extraction fails.
    fn apply(&mut self, layer: usize, entries: &[TarEntry]) -> Result<(), String> {
        for e in entries {
            let (dir, base) = match e.path.rsplit_once('/') {
                Some((d, b)) => (d.to_string(), b.to_string()),
                None => (String::new(), e.path.clone()),
            };
            if base == ".wh..wh..opq" {
                let (real_dir, _) = self.resolve(&dir)?;
                self.remove_lower(&real_dir, layer, false);
                continue;
            }
            if let Some(name) = base.strip_prefix(".wh.") {
                // Below a non-directory nothing exists: nothing to remove.
                let (real_dir, _) = self.resolve(&dir)?;
                self.remove_lower(&join(&real_dir, name), layer, true);
                continue;
            }
            let path = self.real(&e.path)?;
            if path != e.path {
                self.through_links += 1;
            }
            match &e.kind {
                EKind::Hardlink(target) => {
                    let target = self.real(target)?;
                    if target == path {
                        continue;
                    }
                    let inode = match self.paths.get(&target) {
                        Some(s) if matches!(s.inode.kind, NodeKind::File(_)) => s.inode.clone(),
                        _ => return Err(format!("hard link {path} to {target}: not a file")),
                    };
                    self.replace(&path, Slot { inode, layer });
                }
                k => {
                    let kind = match k {
                        EKind::File(c) => NodeKind::File(c.clone()),
                        EKind::Dir => NodeKind::Dir,
                        EKind::Symlink(t) => NodeKind::Symlink(t.clone()),
                        EKind::Char(a, b) => NodeKind::Char(*a, *b),
                        EKind::Fifo => NodeKind::Fifo,
                        EKind::Hardlink(_) => unreachable!(),
                    };
                    if kind == NodeKind::Dir
                        && self
                            .paths
                            .get(&path)
                            .is_none_or(|existing| existing.inode.kind == NodeKind::Dir)
                    {
                        // Directory over a directory (or over one an earlier
                        // child created implicitly): metadata changes, children stay.
                        let slot = Slot {
                            inode: Rc::new(Inode {
                                kind,
                                meta: e.meta.clone(),
                            }),
                            layer,
                        };
                        self.paths.insert(path, slot);
                        continue;
                    }
                    let slot = Slot {
                        inode: Rc::new(Inode {
                            kind,
                            meta: e.meta.clone(),
                        }),
                        layer,
                    };
                    self.replace(&path, slot);
                }
            }
        }
        Ok(())
    }

    fn replace(&mut self, path: &str, slot: Slot) {
        self.paths.retain(|p, _| p != path && !is_under(p, path));
        self.paths.insert(path.to_string(), slot);
    }

    /// A comparable view: per path its kind and metadata, plus hard-link
    /// groups as sets of paths.
    fn view(&self) -> View {
        let mut nodes = BTreeMap::new();
        let mut groups: BTreeMap<*const Inode, BTreeSet<String>> = BTreeMap::new();
        for (p, s) in &self.paths {
            nodes.insert(p.clone(), (s.inode.kind.clone(), s.inode.meta.clone()));
            if matches!(s.inode.kind, NodeKind::File(_)) {
                groups
                    .entry(Rc::as_ptr(&s.inode))
                    .or_default()
                    .insert(p.clone());
            }
        }
        let groups = groups.into_values().filter(|g| g.len() > 1).collect();
        (nodes, groups)
    }

    fn kind_of(&self, p: &str) -> Option<&NodeKind> {
        self.paths.get(p).map(|s| &s.inode.kind)
    }
}

// ------------------------------------------------------------ tar model --

#[derive(Clone, Debug)]
enum EKind {
    File(Vec<u8>),
    Dir,
    Symlink(String),
    Hardlink(String),
    Char(u32, u32),
    Fifo,
}

#[derive(Clone, Debug)]
struct TarEntry {
    path: String,
    kind: EKind,
    meta: Meta,
}

fn whiteout_entry(path: &str, opaque: bool) -> TarEntry {
    let name = if opaque {
        if path.is_empty() {
            ".wh..wh..opq".to_string()
        } else {
            format!("{path}/.wh..wh..opq")
        }
    } else {
        match path.rsplit_once('/') {
            Some((d, b)) => format!("{d}/.wh.{b}"),
            None => format!(".wh.{path}"),
        }
    };
    TarEntry {
        path: name,
        kind: EKind::File(Vec::new()),
        meta: Meta {
            mode: 0o644,
            uid: 0,
            gid: 0,
            mtime: 0,
            xattrs: BTreeMap::new(),
        },
    }
}

fn to_tar(entries: &[TarEntry]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        if !e.meta.xattrs.is_empty() {
            let recs: Vec<(String, &[u8])> = e
                .meta
                .xattrs
                .iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{k}"), &v[..]))
                .collect();
            b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                .unwrap();
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(e.meta.mode);
        h.set_uid(e.meta.uid);
        h.set_gid(e.meta.gid);
        h.set_mtime(e.meta.mtime);
        match &e.kind {
            EKind::File(c) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_size(c.len() as u64);
                b.append_data(&mut h, &e.path, &c[..]).unwrap();
            }
            EKind::Dir => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, format!("{}/", e.path), std::io::empty())
                    .unwrap();
            }
            EKind::Symlink(t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_size(0);
                // As written: `append_link` would tidy "/./.." and "/".
                h.set_link_name_literal(t).unwrap();
                b.append_data(&mut h, &e.path, std::io::empty()).unwrap();
            }
            EKind::Hardlink(t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_size(0);
                b.append_link(&mut h, &e.path, t).unwrap();
            }
            EKind::Char(ma, mi) => {
                h.set_entry_type(tar::EntryType::Char);
                h.set_device_major(*ma).unwrap();
                h.set_device_minor(*mi).unwrap();
                h.set_size(0);
                b.append_data(&mut h, &e.path, std::io::empty()).unwrap();
            }
            EKind::Fifo => {
                h.set_entry_type(tar::EntryType::Fifo);
                h.set_size(0);
                b.append_data(&mut h, &e.path, std::io::empty()).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Parses a tar (slim's output) into model entries, to apply with the model.
fn from_tar(bytes: &[u8]) -> Vec<TarEntry> {
    let mut a = tar::Archive::new(bytes);
    let mut out = Vec::new();
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let path = String::from_utf8(e.path_bytes().into_owned()).unwrap();
        let path = path
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let h = e.header().clone();
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                if let Some(k) = x.key().unwrap().strip_prefix("SCHILY.xattr.") {
                    xattrs.insert(k.to_string(), x.value_bytes().to_vec());
                }
            }
        }
        let meta = Meta {
            mode: h.mode().unwrap(),
            uid: h.uid().unwrap(),
            gid: h.gid().unwrap(),
            mtime: h.mtime().unwrap(),
            xattrs,
        };
        let link = e
            .link_name_bytes()
            .map(|l| String::from_utf8(l.into_owned()).unwrap());
        let kind = match h.entry_type() {
            tar::EntryType::Regular => {
                let mut c = Vec::new();
                std::io::Read::read_to_end(&mut e, &mut c).unwrap();
                EKind::File(c)
            }
            tar::EntryType::Directory => EKind::Dir,
            tar::EntryType::Symlink => EKind::Symlink(link.unwrap()),
            tar::EntryType::Link => {
                EKind::Hardlink(link.unwrap().trim_start_matches("./").to_string())
            }
            tar::EntryType::Char => EKind::Char(
                h.device_major().unwrap().unwrap(),
                h.device_minor().unwrap().unwrap(),
            ),
            tar::EntryType::Fifo => EKind::Fifo,
            other => panic!("unexpected entry type {other:?} in slim's output"),
        };
        if path.is_empty() {
            continue;
        }
        out.push(TarEntry { path, kind, meta });
    }
    out
}

// ------------------------------------------------------------ generator --

const NAMES: &[&str] = &["a", "b", "c", "dir", "x.txt"];

fn random_path(rng: &mut Rng) -> String {
    let depth = 1 + rng.below(3) as usize;
    let mut parts: Vec<String> = (0..depth).map(|_| rng.pick(NAMES).to_string()).collect();
    if rng.chance(5) {
        // A name that needs PAX or GNU long names.
        parts.push(format!("long-{}", "n".repeat(90 + rng.below(80) as usize)));
    }
    parts.join("/")
}

fn random_meta(rng: &mut Rng) -> Meta {
    let mut xattrs = BTreeMap::new();
    if rng.chance(15) {
        xattrs.insert(
            "security.capability".to_string(),
            vec![
                1, 0, 0, 2, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            ],
        );
    }
    if rng.chance(10) {
        xattrs.insert(
            "user.note".to_string(),
            format!("v{}", rng.below(3)).into_bytes(),
        );
    }
    let jitter = rng.below(1000);
    Meta {
        mode: *rng.pick(&[0o644, 0o755, 0o600, 0o4755, 0o2755, 0o1777]),
        uid: *rng.pick(&[0, 0, 1000, 65534, 3_000_000]),
        gid: *rng.pick(&[0, 0, 1000, 100]),
        mtime: *rng.pick(&[0, 1_600_000_000, 1_700_000_000 + jitter]),
        xattrs,
    }
}

fn random_content(rng: &mut Rng) -> Vec<u8> {
    match rng.below(4) {
        0 => Vec::new(),
        1 => b"same content\n".to_vec(),
        _ => (0..rng.below(3000)).map(|_| rng.below(256) as u8).collect(),
    }
}

/// Makes sure `path`'s parents exist as directories in the model `view`,
/// emitting directory entries where needed.
fn ensure_parents(
    rng: &mut Rng,
    view: &Model,
    layer_entries: &mut Vec<TarEntry>,
    path: &str,
    made: &mut BTreeSet<String>,
) {
    let parts: Vec<&str> = path.split('/').collect();
    for i in 1..parts.len() {
        let p = parts[..i].join("/");
        let is_dir = made.contains(&p) || matches!(view.kind_of(&p), Some(NodeKind::Dir));
        if !is_dir {
            layer_entries.push(TarEntry {
                path: p.clone(),
                kind: EKind::Dir,
                meta: Meta {
                    mode: 0o755,
                    ..random_meta(rng)
                },
            });
            made.insert(p);
        }
    }
}

/// A symlink target: the old fixed ones (files, dangling), directories by
/// relative and absolute paths, `..` past the root, the root itself,
/// missing directories, other links (chains, loops).
fn random_target(rng: &mut Rng) -> String {
    let part =
        |rng: &mut Rng| -> String { rng.pick(&["..", ".", "a", "b", "c", "dir"]).to_string() };
    match rng.below(5) {
        0 => rng
            .pick(&["../a", "/etc/passwd", "x.txt", "dangling/target"])
            .to_string(),
        1 => (0..1 + rng.below(3))
            .map(|_| part(rng))
            .collect::<Vec<_>>()
            .join("/"),
        2 => format!(
            "/{}",
            (0..rng.below(4))
                .map(|_| part(rng))
                .collect::<Vec<_>>()
                .join("/")
        ),
        3 => rng
            .pick(&[
                "/missing/deep",
                "missing",
                "../../../dir",
                "/a/b/../c",
                "/",
                "..",
            ])
            .to_string(),
        _ => rng.pick(NAMES).to_string(),
    }
}

/// Symlinks of `view` (by path).
fn symlinks(view: &Model) -> Vec<String> {
    view.paths
        .iter()
        .filter(|(_, s)| matches!(s.inode.kind, NodeKind::Symlink(_)))
        .map(|(p, _)| p.clone())
        .collect()
}

/// A whiteout written through a symlinked directory: `S/.wh.NAME` where `S`
/// resolves (in `view`) to a directory holding `NAME`, or `S/.wh..wh..opq`.
fn whiteout_through_a_link(rng: &mut Rng, view: &Model) -> Option<TarEntry> {
    let links = symlinks(view);
    if links.is_empty() {
        return None;
    }
    let s = rng.pick(&links).clone();
    let (real, blocked) = view.resolve(&s).ok()?;
    if blocked.is_some() {
        return None;
    }
    let children: Vec<String> = view
        .paths
        .keys()
        .filter(|p| is_under(p, &real) && !p[real.len()..].trim_start_matches('/').contains('/'))
        .map(|p| p.rsplit('/').next().unwrap().to_string())
        .collect();
    if children.is_empty() || rng.chance(25) {
        return Some(whiteout_entry(&s, true));
    }
    let name = rng.pick(&children).clone();
    Some(whiteout_entry(&format!("{s}/{name}"), false))
}

/// One random stack of layers, each a list of tar entries. Most stacks
/// extract; a few (`hostile`) keep entries the model refuses.
fn random_stack(rng: &mut Rng) -> Vec<Vec<TarEntry>> {
    let hostile = rng.chance(8);
    let mut model = Model::default();
    let mut layers = Vec::new();
    for li in 0..(1 + rng.below(5) as usize) {
        let mut whiteouts = Vec::new();
        if li > 0 {
            for _ in 0..rng.below(4) {
                if rng.chance(25)
                    && let Some(w) = whiteout_through_a_link(rng, &model)
                {
                    whiteouts.push(w);
                    continue;
                }
                let existing: Vec<String> = model.paths.keys().cloned().collect();
                if existing.is_empty() {
                    break;
                }
                let p = rng.pick(&existing).clone();
                let opaque = matches!(model.kind_of(&p), Some(NodeKind::Dir)) && rng.chance(50);
                whiteouts.push(whiteout_entry(&p, opaque));
            }
            if rng.chance(5) {
                whiteouts.push(whiteout_entry("does/not/exist", false));
            }
        }
        // The generator's view: lower content with this layer's whiteouts
        // applied (an error there is the stack's to show, not the view's).
        let mut view = model.clone();
        let _ = view.apply(li, &whiteouts);
        let mut entries: Vec<TarEntry> = Vec::new();
        let mut made: BTreeSet<String> = BTreeSet::new();
        for _ in 0..(3 + rng.below(15)) {
            let mut scratch = view.clone();
            let _ = scratch.apply(li, &entries);
            let links = symlinks(&scratch);
            // Through a symlinked directory (the link resolves wherever it
            // does), or a plain path whose parents are made directories
            // (sometimes left implicit).
            let through = !links.is_empty() && rng.chance(20);
            let path = if through {
                let s = rng.pick(&links).clone();
                format!("{s}/{}", rng.pick(NAMES))
            } else {
                random_path(rng)
            };
            if matches!(scratch.kind_of(&path), Some(NodeKind::Dir)) && rng.chance(60) {
                // Keep directories mostly directories, so trees grow.
                continue;
            }
            let mut new_entries = Vec::new();
            let mut new_made = made.clone();
            if !through && !rng.chance(5) {
                ensure_parents(rng, &scratch, &mut new_entries, &path, &mut new_made);
            }
            let meta = random_meta(rng);
            let kind = match rng.below(10) {
                0..=3 => EKind::File(random_content(rng)),
                4 | 5 => EKind::Dir,
                6 => EKind::Symlink(random_target(rng)),
                7 => {
                    let mut s2 = scratch.clone();
                    let _ = s2.apply(li, &new_entries);
                    let files: Vec<String> = s2
                        .paths
                        .iter()
                        .filter(|(p, s)| {
                            matches!(s.inode.kind, NodeKind::File(_))
                                && **p != path
                                && !is_under(p, &path)
                                && !is_under(&path, p)
                        })
                        .map(|(p, _)| p.clone())
                        .collect();
                    if files.is_empty() {
                        EKind::File(random_content(rng))
                    } else {
                        let target = rng.pick(&files).clone();
                        // Sometimes name the target through a symlink that
                        // resolves to its directory.
                        let (dir, base) = target.rsplit_once('/').unwrap_or(("", &target));
                        let alias = symlinks(&s2)
                            .into_iter()
                            .find(|l| s2.resolve(l).is_ok_and(|(r, b)| r == dir && b.is_none()));
                        match alias {
                            Some(l) if rng.chance(50) => EKind::Hardlink(format!("{l}/{base}")),
                            _ => EKind::Hardlink(target),
                        }
                    }
                }
                8 => EKind::Char(1, 3),
                _ => EKind::Fifo,
            };
            new_entries.push(TarEntry {
                path: path.clone(),
                kind,
                meta,
            });
            // Entries extraction would refuse stay only in hostile stacks.
            let mut probe = scratch.clone();
            if !hostile && probe.apply(li, &new_entries).is_err() {
                continue;
            }
            made = new_made;
            if matches!(new_entries.last().unwrap().kind, EKind::Dir) {
                made.insert(path.clone());
            } else {
                made.retain(|m| m != &path && !is_under(m, &path));
            }
            entries.extend(new_entries);
        }
        // Whiteouts act on lower layers wherever they sit in the tar.
        let mut all = entries;
        for w in whiteouts {
            let at = rng.below(all.len() as u64 + 1) as usize;
            all.insert(at, w);
        }
        if model.apply(li, &all).is_err() {
            // Extraction fails here: the stack ends with this layer.
            layers.push(all);
            break;
        }
        layers.push(all);
    }
    layers
}

// --------------------------------------------------------------- runner --

fn index(tars: &[Vec<u8>], rng: &mut Rng) -> Vec<Arc<LayerIndex>> {
    let dir = std::env::temp_dir();
    tars.iter()
        .enumerate()
        .map(|(i, t)| {
            let blob = if rng.chance(50) {
                let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                gz.write_all(t).unwrap();
                gz.finish().unwrap()
            } else {
                t.clone()
            };
            Arc::new(
                index_layer(
                    &blob[..],
                    &format!("layer {i}"),
                    None,
                    &dir,
                    &IndexOptions::default(),
                )
                .unwrap(),
            )
        })
        .collect()
}

fn expected(layers: &[Vec<TarEntry>]) -> Result<Model, String> {
    let mut m = Model::default();
    for (i, l) in layers.iter().enumerate() {
        m.apply(i, l).map_err(|e| format!("layer {i}: {e}"))?;
    }
    Ok(m)
}

/// The stack, one entry a line, for failure messages.
fn show(layers: &[Vec<TarEntry>]) -> String {
    let mut shown = String::new();
    for (i, l) in layers.iter().enumerate() {
        shown.push_str(&format!("layer {i}:\n"));
        for e in l {
            let k = match &e.kind {
                EKind::File(c) => format!("file({}b)", c.len()),
                EKind::Dir => "dir".into(),
                EKind::Symlink(t) => format!("symlink->{t}"),
                EKind::Hardlink(t) => format!("hardlink->{t}"),
                EKind::Char(..) => "char".into(),
                EKind::Fifo => "fifo".into(),
            };
            shown.push_str(&format!("  {} {k} mode={:o}\n", e.path, e.meta.mode));
        }
    }
    shown
}

/// What the model says of the stack, held against what slim did: both
/// extract (`Some`), or both refuse (`None`, counted in `refused`).
fn agree<T>(
    seed: u64,
    what: &str,
    layers: &[Vec<TarEntry>],
    slim: anyhow::Result<T>,
    tally: &mut Tally,
) -> Option<(Model, T)> {
    match (expected(layers), slim) {
        (Ok(m), Ok(t)) => {
            tally.through_links += m.through_links;
            Some((m, t))
        }
        (Err(_), Err(_)) => {
            tally.refused += 1;
            None
        }
        (Err(why), Ok(_)) => panic!(
            "seed {seed} ({what}): extraction fails ({why}), slim did not refuse\n{}",
            show(layers)
        ),
        (Ok(_), Err(e)) => panic!(
            "seed {seed} ({what}): slim refused a stack that extracts: {e:#}\n{}",
            show(layers)
        ),
    }
}

/// What a run covered: stacks extraction refuses (slim refused them too)
/// and entries written through a symlinked parent.
#[derive(Default)]
struct Tally {
    stacks: u64,
    refused: u64,
    through_links: u64,
}

impl Tally {
    /// Prints the tally (`--nocapture` shows it) and checks that both kinds
    /// of hostile input were met, on a run long enough to meet them.
    fn check(&self, what: &str) {
        eprintln!(
            "{what}: {} stacks, {} refused as extraction refuses them, {} entries through symlinked parents",
            self.stacks, self.refused, self.through_links
        );
        if self.stacks >= 200 {
            assert!(self.refused > 0, "{what}: no stack was refused");
            assert!(
                self.through_links > 0,
                "{what}: no entry went through a link"
            );
            assert!(self.refused * 5 < self.stacks, "{what}: too many refusals");
        }
    }
}

fn assert_same(seed: u64, what: &str, want: &Model, got: &Model, layers: &[Vec<TarEntry>]) {
    let (wn, wg) = want.view();
    let (gn, gg) = got.view();
    if wn != gn || wg != gg {
        let mut diffs = Vec::new();
        for p in wn.keys().chain(gn.keys()).collect::<BTreeSet<_>>() {
            if wn.get(p) != gn.get(p) {
                diffs.push(format!(
                    "  {p}: want {:?}\n       got  {:?}",
                    wn.get(p),
                    gn.get(p)
                ));
            }
        }
        panic!(
            "seed {seed} ({what}): trees differ\n{}\nhard links want {wg:?}\n           got  {gg:?}\n{}",
            diffs
                .iter()
                .take(10)
                .cloned()
                .collect::<Vec<_>>()
                .join("\n"),
            show(layers)
        );
    }
}

/// Seeds per test; `SLIM_MODEL_SEEDS=5000` for a deeper run.
fn seeds() -> u64 {
    std::env::var("SLIM_MODEL_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300)
}

#[test]
fn squash_all_equals_applying_layers_in_order() {
    let mut tally = Tally::default();
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
        let layers = random_stack(&mut rng);
        tally.stacks += 1;
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: 0,
            hardlink_dedup: false,
        };
        let slim = squash::squash(&idx, opts, &KeepAll);
        let Some((want, (plan, _))) = agree(seed, "squash all", &layers, slim, &mut tally) else {
            continue;
        };
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let out_entries = from_tar(&out);
        assert!(
            !out_entries
                .iter()
                .any(|e| e.path.rsplit('/').next().unwrap().starts_with(".wh.")),
            "seed {seed}: a whiteout remains in a full squash"
        );
        // Sorted, each directory before its children.
        let paths: Vec<&str> = out_entries.iter().map(|e| e.path.as_str()).collect();
        let mut sorted = paths.clone();
        sorted.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        assert_eq!(paths, sorted, "seed {seed}: output not sorted");
        let mut got = Model::default();
        got.apply(0, &out_entries).unwrap();
        assert_same(seed, "squash all", &want, &got, &layers);
    }
    tally.check("squash all");
}

#[test]
fn squash_on_kept_base_layers_equals_the_original_stack() {
    let mut tally = Tally::default();
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0xD1B5_4A32_D192_ED03) | 1);
        let layers = random_stack(&mut rng);
        if layers.len() < 2 {
            continue;
        }
        tally.stacks += 1;
        let keep = 1 + rng.below(layers.len() as u64 - 1) as usize;
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: keep,
            hardlink_dedup: false,
        };
        let what = format!("keep-base {keep}");
        let slim = squash::squash(&idx, opts, &KeepAll);
        let Some((want, (plan, _))) = agree(seed, &what, &layers, slim, &mut tally) else {
            continue;
        };
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let mut got = Model::default();
        for (i, l) in layers[..keep].iter().enumerate() {
            got.apply(i, l).unwrap();
        }
        got.apply(keep, &from_tar(&out)).unwrap();
        assert_same(seed, &what, &want, &got, &layers);
    }
    tally.check("keep-base");
}

#[test]
fn squash_none_keeps_the_stack_meaning() {
    let mut tally = Tally::default();
    for seed in 1..=seeds() {
        let mut rng = Rng(seed.wrapping_mul(0x94D0_49BB_1331_11EB) | 1);
        let layers = random_stack(&mut rng);
        tally.stacks += 1;
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let slim = squash::per_layer(&idx, &KeepAll);
        let Some((want, plans)) = agree(seed, "squash none", &layers, slim, &mut tally) else {
            continue;
        };
        assert_eq!(plans.len(), layers.len());
        let mut got = Model::default();
        for (i, (plan, _)) in plans.iter().enumerate() {
            let mut out = Vec::new();
            write_plan(&mut out, plan, &idx).unwrap();
            let entries = from_tar(&out);
            let mut probe = got.clone();
            for (k, e) in entries.iter().enumerate() {
                if let EKind::Hardlink(t) = &e.kind {
                    let mut p2 = probe.clone();
                    p2.apply(i, &entries[..k]).unwrap();
                    assert!(
                        p2.paths
                            .get(t)
                            .is_some_and(|s| matches!(s.inode.kind, NodeKind::File(_))),
                        "seed {seed}: output layer {i} links {} to {t}, which is not a file there; output: {:?}\nlayers: {:#?}",
                        e.path,
                        entries
                            .iter()
                            .map(|e| (&e.path, &e.kind))
                            .map(|(p, k)| format!(
                                "{p} {}",
                                match k {
                                    EKind::File(c) => format!("file {}", c.len()),
                                    EKind::Hardlink(t) => format!("link {t}"),
                                    EKind::Dir => "dir".into(),
                                    _ => "other".into(),
                                }
                            ))
                            .collect::<Vec<_>>(),
                        layers
                            .iter()
                            .map(|l| l
                                .iter()
                                .map(|e| format!(
                                    "{} {}",
                                    e.path,
                                    match &e.kind {
                                        EKind::File(c) => format!("file {}", c.len()),
                                        EKind::Hardlink(t) => format!("link {t}"),
                                        EKind::Dir => "dir".into(),
                                        _ => "other".into(),
                                    }
                                ))
                                .collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    );
                }
            }
            probe.apply(i, &entries).unwrap();
            got.apply(i, &entries).unwrap();
        }
        assert_same(seed, "squash none", &want, &got, &layers);
    }
    tally.check("squash none");
}

#[test]
fn hardlink_dedup_links_identical_files_and_keeps_contents() {
    for seed in 1..=100u64 {
        let mut rng = Rng(seed.wrapping_mul(0xA076_1D64_78BD_642F) | 1);
        let layers = random_stack(&mut rng);
        let tars: Vec<Vec<u8>> = layers.iter().map(|l| to_tar(l)).collect();
        let idx = index(&tars, &mut rng);
        let opts = SquashOptions {
            base_layers: 0,
            hardlink_dedup: true,
        };
        let slim = squash::squash(&idx, opts, &KeepAll);
        let Some((want, (plan, stats))) =
            agree(seed, "dedup", &layers, slim, &mut Tally::default())
        else {
            continue;
        };
        let mut out = Vec::new();
        write_plan(&mut out, &plan, &idx).unwrap();
        let mut got = Model::default();
        got.apply(0, &from_tar(&out)).unwrap();
        let (want_nodes, _) = want.view();
        let (got_nodes, groups) = got.view();
        // Same paths, kinds and contents; identical files share an inode.
        assert_eq!(
            want_nodes.keys().collect::<Vec<_>>(),
            got_nodes.keys().collect::<Vec<_>>(),
            "seed {seed}"
        );
        for (p, (k, m)) in &want_nodes {
            let (gk, gm) = &got_nodes[p];
            assert_eq!(k, gk, "seed {seed}: {p}");
            assert_eq!(
                (m.mode, m.uid, m.gid, &m.xattrs),
                (gm.mode, gm.uid, gm.gid, &gm.xattrs),
                "seed {seed}: {p}"
            );
        }
        for g in &groups {
            let first = &got_nodes[g.iter().next().unwrap()];
            assert!(
                g.iter().all(|p| got_nodes[p].0 == first.0),
                "seed {seed}: a hard-link group mixes contents"
            );
        }
        let linked_paths: usize = groups.iter().map(|g| g.len() - 1).sum();
        assert!(
            linked_paths as u64 >= stats.hardlinked.files,
            "seed {seed}: stats claim more links than exist"
        );
    }
}
