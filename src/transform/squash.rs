//! Squash: apply layers in order, exactly as extraction would, and plan the
//! output layer(s).
//!
//! - `--squash all`: one layer holding the final tree; no whiteout remains.
//! - on top of kept base layers (`--keep-base`): the base layers are applied
//!   too (so slim knows what they hold), and the output is one layer that,
//!   extracted over the unchanged base, gives the same tree as the original
//!   stack: the paths the upper layers changed, whiteouts for base paths
//!   they removed, and opaque markers for base directories they emptied.
//! - `--squash none`: each layer on its own, in its own entry order,
//!   whiteouts kept, minus the entries a higher layer replaces or deletes.
//!
//! Semantics (OCI image spec, "Applying Changesets"): entries apply in tar
//! order; a layer's whiteouts act on lower layers only, so one never removes
//! what its own layer wrote before it (umoci keeps the same rule);
//! a directory over a directory merges (the upper metadata wins), anything
//! else replaces the lower path and everything below it. A hard link names
//! the inode its target has when the link's layer is extracted: an inode
//! whose first name disappears later is carried by its next name, with the
//! content and metadata of the entry that created it.
//!
//! Symlinked parents: extraction resolves each entry's parent directory
//! through the symlinks of the tree built so far, inside the root, as
//! filepath-securejoin does for umoci and `fs.RootPath` for containerd (an
//! absolute target or `..` never leaves the root, a missing component is
//! taken as it is and created later, `..` is lexical). `a -> /etc` then
//! `a/secret` writes `etc/secret`. So the tree here holds real paths, and
//! so does every output layer. The last component is never followed (an
//! entry replaces a symlink at its own path). Whiteouts and hard-link
//! targets have their parent resolved the same way. An entry whose parent
//! is a file, or whose parent passes more than [`MAX_LINKS`] symlinks, is
//! refused (extraction fails there); a whiteout below a file deletes
//! nothing (umoci's lstat sees ENOTDIR).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::filter::{Count, FilterStats, PathFilter};
use super::tree::TreeView;
use crate::layer::entry::{self, Entry, Kind};
use crate::layer::read::LayerIndex;

/// The plan is the contract with the encoder; it lives in `layer::plan`.
pub use crate::layer::plan::{Item, Plan};

/// What squashing did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SquashStats {
    /// Removed by the filter.
    pub removed: FilterStats,
    /// Files replaced or deleted by a higher layer.
    pub shadowed: Count,
    /// Files turned into hard links to an identical file (bytes saved).
    pub hardlinked: Count,
    /// Non-directory entries in the output.
    pub files: u64,
}

#[derive(Clone, Copy, Debug)]
pub struct SquashOptions {
    /// How many of the layers stay below the output unchanged.
    pub base_layers: usize,
    /// Identical regular files become hard links.
    pub hardlink_dedup: bool,
}

const NO_INODE: u32 = u32::MAX;

/// Symlinks one parent path may pass, as Linux allows in one lookup
/// (ELOOP past it; umoci and containerd stop at 255, but such a path cannot
/// be opened at run time either).
pub const MAX_LINKS: usize = 40;

/// A directory path resolved through the tree's symlinks.
struct Resolved {
    /// The real path: no symlink in it; `..` and `.` gone.
    path: Vec<u8>,
    /// The first prefix of `path` (its length) that is not a directory, if
    /// any: then nothing can be created below it.
    blocked: Option<usize>,
}

/// Resolving a parent passed more than [`MAX_LINKS`] symlinks.
struct TooManyLinks;

type PathRange = (Bound<Arc<[u8]>>, Bound<Arc<[u8]>>);

#[derive(Clone, Copy, Debug)]
struct Node {
    layer: u32,
    index: u32,
    /// Regular files and hard links: which inode the path names.
    inode: u32,
}

struct Merge<'a> {
    layers: &'a [Arc<LayerIndex>],
    nodes: BTreeMap<Arc<[u8]>, Node>,
    /// Paths deleted, replaced by a non-directory or made opaque by the
    /// upper (non-base) layers: a directory among them that exists at the
    /// end hides all the base had below it.
    reset: HashSet<Arc<[u8]>>,
    /// Inode -> the entry that created it.
    creators: Vec<(u32, u32)>,
    shadowed: Count,
    /// Layers below this index are the kept base.
    base: usize,
    /// `(layer, index)` -> real path, for entries (whiteouts included)
    /// written through a symlinked parent.
    moved: HashMap<(u32, u32), Arc<[u8]>>,
    /// `(layer, index)` -> real target, for hard links whose target names a
    /// symlinked parent.
    moved_links: HashMap<(u32, u32), Arc<[u8]>>,
}

impl<'a> Merge<'a> {
    fn entry(&self, n: Node) -> &'a Entry {
        &self.layers[n.layer as usize].entries[n.index as usize]
    }

    fn is_upper(&self, n: Node) -> bool {
        n.layer as usize >= self.base
    }

    fn children_range(path: &[u8]) -> PathRange {
        if path.is_empty() {
            // Everything but the root itself.
            return (Bound::Excluded(Arc::from(&b""[..])), Bound::Unbounded);
        }
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        (Bound::Included(lo.into()), Bound::Excluded(hi.into()))
    }

    fn children<'m>(
        nodes: &'m BTreeMap<Arc<[u8]>, Node>,
        path: &[u8],
    ) -> impl Iterator<Item = (&'m Arc<[u8]>, &'m Node)> {
        nodes.range::<Arc<[u8]>, _>(Self::children_range(path))
    }

    fn remove_children(&mut self, path: &[u8]) {
        let keys: Vec<Arc<[u8]>> = Self::children(&self.nodes, path)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(n) = self.nodes.remove(&k) {
                self.count_shadowed(n);
            }
        }
    }

    /// A whiteout: removes what the layers below `li` made at `path` (if
    /// `include_self`) and below it. What layer `li` wrote stays, and so do
    /// the directories above it: umoci counts them as this layer's paths.
    /// Returns whether some of what stays comes from the kept base.
    fn remove_lower(&mut self, path: &[u8], li: usize, include_self: bool) -> bool {
        let li = li as u32;
        let mut upper: HashSet<&[u8]> = HashSet::new();
        for (k, n) in Self::children(&self.nodes, path) {
            if n.layer == li {
                upper.extend(entry::ancestors(k).take_while(|a| a.len() > path.len()));
                upper.insert(path);
            }
        }
        let mut keys: Vec<Arc<[u8]>> = Self::children(&self.nodes, path)
            .filter(|(k, n)| n.layer < li && !upper.contains(&k[..]))
            .map(|(k, _)| k.clone())
            .collect();
        if include_self
            && !upper.contains(path)
            && let Some((k, n)) = self.nodes.get_key_value(path)
            && n.layer < li
        {
            keys.push(k.clone());
        }
        let base = self.base as u32;
        let base_stays = upper
            .iter()
            .any(|p| self.nodes.get(*p).is_some_and(|n| n.layer < base));
        for k in keys {
            if let Some(n) = self.nodes.remove(&k) {
                self.count_shadowed(n);
            }
        }
        base_stays
    }

    fn remove_subtree(&mut self, path: &[u8]) {
        if let Some(n) = self.nodes.remove(path) {
            self.count_shadowed(n);
        }
        self.remove_children(path);
    }

    fn count_shadowed(&mut self, n: Node) {
        let e = self.entry(n);
        if e.kind == Kind::File {
            self.shadowed.add(1, e.size);
        } else if !e.kind.is_dir() {
            self.shadowed.add(1, 0);
        }
    }

    fn mark_reset(&mut self, li: usize, path: &[u8]) {
        if li >= self.base && self.base > 0 {
            self.reset.insert(path.into());
        }
    }

    /// Resolves the directory path `dir` through the symlinks of the tree
    /// as it is now, inside the root, as filepath-securejoin does: each
    /// component that is a symlink is replaced by its target (an absolute
    /// one starts again from the root), `..` drops the last real component
    /// (never above the root), a missing component is kept as it is.
    fn resolve_dir(&self, dir: &'a [u8]) -> Result<Resolved, TooManyLinks> {
        let mut todo: Vec<&'a [u8]> = dir.rsplit(|b| *b == b'/').collect();
        let mut out: Vec<u8> = Vec::with_capacity(dir.len());
        // Per real component: where it starts in `out` (for `..`) and
        // whether a non-directory sits there.
        let mut comps: Vec<(usize, bool)> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c {
                b"" | b"." => continue,
                b".." => {
                    if let Some((start, _)) = comps.pop() {
                        out.truncate(start.saturating_sub(1));
                    }
                    continue;
                }
                _ => {}
            }
            let start = if out.is_empty() { 0 } else { out.len() + 1 };
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c);
            let Some(n) = self.nodes.get(&out[..]) else {
                comps.push((start, false));
                continue;
            };
            let e = self.entry(*n);
            if e.kind == Kind::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(TooManyLinks);
                }
                out.truncate(start.saturating_sub(1));
                let target: &'a [u8] = e.link.as_deref().unwrap_or_default();
                if target.starts_with(b"/") {
                    out.clear();
                    comps.clear();
                }
                todo.extend(target.rsplit(|b| *b == b'/'));
                continue;
            }
            comps.push((start, !e.kind.is_dir()));
        }
        let blocked = comps.iter().enumerate().find(|(_, c)| c.1).map(|(i, _)| {
            comps
                .get(i + 1)
                .map_or(out.len(), |(next, _)| next.saturating_sub(1))
        });
        Ok(Resolved { path: out, blocked })
    }

    /// Where `path` really is: its parent resolved, its last component as
    /// it is. `None` when the parent is not a directory.
    fn real_path(&self, path: &'a [u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), TooManyLinks> {
        let (dir, base) = entry::split_parent(path);
        let r = self.resolve_dir(dir)?;
        let blocked = r.blocked.map(|n| r.path[..n].to_vec());
        Ok((entry::join(&r.path, base).into_vec(), blocked))
    }

    fn apply_layer(&mut self, li: usize) -> Result<()> {
        let layers = self.layers;
        let layer = &layers[li];
        let at = |e: &Entry| {
            format!(
                "layer {} (#{}): entry {}",
                layer.diff_id,
                li + 1,
                e.display_path()
            )
        };
        let too_many = |e: &Entry| {
            anyhow::anyhow!(
                "{}: resolving its parent passes more than {MAX_LINKS} symlinks (a loop?); extraction fails there too",
                at(e)
            )
        };
        // In tar order, as extractors go: each entry resolves its parent in
        // the tree so far; a whiteout deletes what the layers below made,
        // never what this layer wrote before it (OCI: whiteouts "MUST only
        // apply to resources in lower/parent layers"; umoci tracks this
        // layer's paths for the same reason).
        for (ei, e) in layer.entries.iter().enumerate() {
            if e.kind == Kind::Whiteout && e.path.is_empty() {
                continue; // the reader refuses it; never delete the root
            }
            if e.kind.is_whiteout() {
                let real = match e.kind {
                    Kind::Whiteout => self.real_path(&e.path).map_err(|_| too_many(e))?.0,
                    _ => self.resolve_dir(&e.path).map_err(|_| too_many(e))?.path,
                };
                let real: Arc<[u8]> = if real[..] == e.path[..] {
                    e.path.clone()
                } else {
                    let real: Arc<[u8]> = real.into();
                    self.moved.insert((li as u32, ei as u32), real.clone());
                    real
                };
                // Below a file nothing exists: such a whiteout deletes
                // nothing (umoci's lstat sees ENOTDIR).
                // A base directory that stays (this layer wrote below it)
                // keeps what else of the base stays: then the paths it
                // lost get their own whiteouts, no opaque marker.
                if !self.remove_lower(&real, li, e.kind == Kind::Whiteout) {
                    self.mark_reset(li, &real);
                }
                continue;
            }
            let node = Node {
                layer: li as u32,
                index: ei as u32,
                inode: NO_INODE,
            };
            let (real, blocked) = self.real_path(&e.path).map_err(|_| too_many(e))?;
            if let Some(file) = blocked {
                let (dir, _) = entry::split_parent(&real);
                bail!(
                    "{}: its parent resolves to {}, and {} is not a directory; extraction fails there too (the layer is malformed or malicious)",
                    at(e),
                    entry::display(dir),
                    entry::display(&file),
                );
            }
            let path: Arc<[u8]> = if real[..] == e.path[..] {
                e.path.clone()
            } else {
                let real: Arc<[u8]> = real.into();
                self.moved.insert((li as u32, ei as u32), real.clone());
                real
            };
            match e.kind {
                Kind::Whiteout | Kind::Opaque => unreachable!("handled above"),
                Kind::Dir => {
                    // Over a directory (or an implicit one: children but no
                    // entry) it merges; over anything else it replaces.
                    let replaces = self
                        .nodes
                        .get(&path)
                        .is_some_and(|n| !self.entry(*n).kind.is_dir());
                    if replaces {
                        self.remove_subtree(&path);
                        self.mark_reset(li, &path);
                    }
                    self.nodes.insert(path, node);
                }
                Kind::Hardlink => {
                    let named = e.link.as_deref().unwrap_or_default();
                    let (target, blocked) = self.real_path(named).map_err(|_| too_many(e))?;
                    if target[..] != *named {
                        self.moved_links
                            .insert((li as u32, ei as u32), target.clone().into());
                    }
                    if target[..] == path[..] {
                        continue;
                    }
                    let inode = match self.nodes.get(&target[..]) {
                        Some(t) if t.inode != NO_INODE && blocked.is_none() => t.inode,
                        _ => bail!(
                            "layer {} (#{}): hard link {} points to {}, which is not a regular file at that point",
                            layer.diff_id,
                            li + 1,
                            e.display_path(),
                            entry::display(named)
                        ),
                    };
                    self.remove_subtree(&path);
                    self.mark_reset(li, &path);
                    self.nodes.insert(path, Node { inode, ..node });
                }
                Kind::File => {
                    self.remove_subtree(&path);
                    self.mark_reset(li, &path);
                    let inode = self.creators.len() as u32;
                    self.creators.push((li as u32, ei as u32));
                    self.nodes.insert(path, Node { inode, ..node });
                }
                Kind::Symlink | Kind::Char | Kind::Block | Kind::Fifo => {
                    self.remove_subtree(&path);
                    self.mark_reset(li, &path);
                    self.nodes.insert(path, node);
                }
            }
        }
        Ok(())
    }

    /// Removes what the filter says from what the upper layers wrote; a
    /// removed directory takes its subtree.
    fn filter(&mut self, filter: &dyn PathFilter) -> FilterStats {
        let mut stats = FilterStats::default();
        let mut removed: Vec<Arc<[u8]>> = Vec::new();
        let mut within: Option<(Arc<[u8]>, String)> = None;
        for (path, node) in &self.nodes {
            if !self.is_upper(*node) {
                continue;
            }
            let e = self.entry(*node);
            let size = if e.kind == Kind::File { e.size } else { 0 };
            if let Some((dir, cat)) = &within {
                if is_under(path, dir) {
                    removed.push(path.clone());
                    if !e.kind.is_dir() {
                        stats.record(cat, 1, size);
                    }
                    continue;
                }
                within = None;
            }
            if let Some(cat) = filter.remove(path, e.kind) {
                removed.push(path.clone());
                if e.kind.is_dir() {
                    within = Some((path.clone(), cat.to_string()));
                } else {
                    stats.record(cat, 1, size);
                }
            }
        }
        for p in removed {
            self.nodes.remove(&p);
        }
        stats
    }

    /// Merges inodes of identical files the upper layers wrote; returns
    /// inode -> canonical inode.
    fn dedup(&self, enabled: bool, stats: &mut Count) -> Vec<u32> {
        let mut alias: Vec<u32> = (0..self.creators.len() as u32).collect();
        if !enabled {
            return alias;
        }
        type Key<'k> = (
            &'k [u8; 32],
            u64,
            u32,
            u64,
            u64,
            &'k [u8],
            &'k [u8],
            Vec<(&'k str, &'k [u8])>,
        );
        let mut first: HashMap<Key<'_>, u32> = HashMap::new();
        let mut seen: HashSet<u32> = HashSet::new();
        // Sorted path order decides which copy stays: deterministic.
        for node in self.nodes.values() {
            if node.inode == NO_INODE || !self.is_upper(*node) || !seen.insert(node.inode) {
                continue;
            }
            let (cl, ci) = self.creators[node.inode as usize];
            if (cl as usize) < self.base {
                continue;
            }
            let e = &self.layers[cl as usize].entries[ci as usize];
            let Some(hash) = e.content_hash.as_ref() else {
                continue;
            };
            if e.size == 0 {
                continue;
            }
            let key: Key<'_> = (
                hash,
                e.size,
                e.mode,
                e.uid,
                e.gid,
                &e.uname,
                &e.gname,
                e.xattrs().collect(),
            );
            match first.get(&key) {
                Some(&canon) => {
                    alias[node.inode as usize] = canon;
                    stats.add(1, e.size);
                }
                None => {
                    first.insert(key, node.inode);
                }
            }
        }
        alias
    }

    /// The output layer: every path the upper layers define, and markers
    /// for what they removed from the base.
    fn plan(&self, alias: &[u32], base_nodes: &BTreeMap<Arc<[u8]>, Node>) -> (Plan, u64) {
        let mut items = Vec::with_capacity(self.nodes.len());
        // Inodes some unchanged base path still names: link to that path.
        let mut carriers: HashMap<u32, Arc<[u8]>> = HashMap::new();
        if self.base > 0 {
            for (path, node) in &self.nodes {
                if node.inode != NO_INODE && !self.is_upper(*node) {
                    carriers
                        .entry(alias[node.inode as usize])
                        .or_insert_with(|| path.clone());
                }
            }
        }
        let mut files = 0;
        let mut opaque: HashSet<&[u8]> = HashSet::new();
        for (path, node) in &self.nodes {
            if !self.is_upper(*node) {
                continue;
            }
            let e = self.entry(*node);
            if !e.kind.is_dir() {
                files += 1;
            }
            if node.inode != NO_INODE {
                let ino = alias[node.inode as usize];
                let (layer, index) = self.creators[ino as usize];
                let link_to = match carriers.get(&ino) {
                    Some(c) => Some(c.clone()),
                    None => {
                        carriers.insert(ino, path.clone());
                        None
                    }
                };
                items.push(Item::Entry {
                    path: path.clone(),
                    layer,
                    index,
                    link_to,
                });
                continue;
            }
            items.push(Item::Entry {
                path: path.clone(),
                layer: node.layer,
                index: node.index,
                link_to: None,
            });
            if self.base > 0
                && e.kind.is_dir()
                && self.reset.contains(&path[..])
                && base_nodes
                    .get(&path[..])
                    .is_some_and(|b| self.entry(*b).kind.is_dir())
            {
                // Recreated over a base directory: the base's content below
                // it must not show through.
                items.push(Item::Opaque(path.clone()));
                opaque.insert(&path[..]);
            }
        }
        if self.base > 0 {
            // Base paths that are gone: one whiteout at the topmost missing
            // path, unless an opaque marker or a non-directory above it
            // already hides it.
            let exists = |p: &[u8]| {
                p.is_empty()
                    || self.nodes.contains_key(p)
                    || Self::children(&self.nodes, p).next().is_some()
            };
            let mut whiteouts: BTreeMap<Arc<[u8]>, ()> = BTreeMap::new();
            // A base path the upper layers removed and then filled again
            // without an entry of its own (a directory only implied by
            // what is below it): over the base, the base's object would
            // stay there (its owner and mode, or a symlink to write
            // through). A whiteout removes it first; the entries below
            // then imply the directory again, as in the original stack.
            let mut wiped: HashSet<&[u8]> = HashSet::new();
            for path in base_nodes.keys() {
                let implied = !path.is_empty()
                    && !self.nodes.contains_key(path)
                    && Self::children(&self.nodes, path).next().is_some();
                let covered = entry::ancestors(path)
                    .chain(std::iter::once(&b""[..]))
                    .any(|a| wiped.contains(a) || opaque.contains(a));
                if implied && !covered {
                    wiped.insert(path);
                    whiteouts.insert(path.clone(), ());
                }
            }
            for path in base_nodes.keys() {
                if exists(path) || entry::ancestors(path).any(|a| wiped.contains(a)) {
                    continue;
                }
                let mut chain: Vec<&[u8]> = entry::ancestors(path).collect();
                chain.reverse();
                chain.push(path);
                let Some(top) = chain.iter().copied().find(|q| !exists(q)) else {
                    continue;
                };
                let (parent, _) = entry::split_parent(top);
                let parent_is_dir = match self.nodes.get(parent) {
                    Some(n) => self.entry(*n).kind.is_dir(),
                    None => true,
                };
                let hidden =
                    opaque.contains(parent) || entry::ancestors(parent).any(|a| opaque.contains(a));
                if parent_is_dir && !hidden {
                    whiteouts.insert(top.into(), ());
                }
            }
            items.extend(whiteouts.into_keys().map(Item::Whiteout));
            items.sort_by(|a, b| a.key().cmp(b.key()));
        }
        (Plan { items }, files)
    }
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// The layers applied in order: the tree extraction gives, with what each
/// path came from. A [`TreeView`] for profile decisions, then squashed.
pub struct Merged<'a> {
    m: Merge<'a>,
    base_nodes: BTreeMap<Arc<[u8]>, Node>,
}

/// Applies `layers` (bottom first); the first `base_layers` are the kept
/// base that stays below the output unchanged.
pub fn merge(layers: &[Arc<LayerIndex>], base_layers: usize) -> Result<Merged<'_>> {
    let mut m = Merge {
        layers,
        nodes: BTreeMap::new(),
        reset: HashSet::new(),
        creators: Vec::new(),
        shadowed: Count::default(),
        base: base_layers,
        moved: HashMap::new(),
        moved_links: HashMap::new(),
    };
    for li in 0..base_layers {
        m.apply_layer(li)?;
    }
    let base_nodes = if base_layers > 0 {
        m.nodes.clone()
    } else {
        BTreeMap::new()
    };
    m.shadowed = Count::default();
    for li in base_layers..layers.len() {
        m.apply_layer(li)?;
    }
    Ok(Merged { m, base_nodes })
}

impl Merged<'_> {
    /// Plans the one output layer: filter, dedup, then entries (and, over a
    /// kept base, whiteouts and opaque markers).
    pub fn squash(mut self, hardlink_dedup: bool, filter: &dyn PathFilter) -> (Plan, SquashStats) {
        let removed = self.m.filter(filter);
        let mut hardlinked = Count::default();
        let alias = self.m.dedup(hardlink_dedup, &mut hardlinked);
        let (plan, files) = self.m.plan(&alias, &self.base_nodes);
        (
            plan,
            SquashStats {
                removed,
                shadowed: self.m.shadowed,
                hardlinked,
                files,
            },
        )
    }

    fn node_entry(&self, path: &[u8]) -> Option<&Entry> {
        let n = *self.m.nodes.get(path)?;
        if n.inode != NO_INODE {
            // Files and hard links: the entry that made the inode.
            let (l, i) = self.m.creators[n.inode as usize];
            return Some(&self.m.layers[l as usize].entries[i as usize]);
        }
        Some(self.m.entry(n))
    }
}

impl TreeView for Merged<'_> {
    fn kind(&self, path: &[u8]) -> Option<Kind> {
        self.node_entry(path).map(|e| e.kind)
    }

    fn mode(&self, path: &[u8]) -> Option<u32> {
        self.node_entry(path).map(|e| e.mode)
    }

    fn link_target(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.node_entry(path)
            .filter(|e| e.kind == Kind::Symlink)
            .and_then(|e| e.link.as_deref().map(<[u8]>::to_vec))
    }

    fn read(&self, path: &[u8], limit: usize) -> Option<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let n = *self.m.nodes.get(path)?;
        if n.inode == NO_INODE {
            return None;
        }
        let (l, i) = self.m.creators[n.inode as usize];
        let layer = &self.m.layers[l as usize];
        let e = &layer.entries[i as usize];
        let len = (e.size as usize).min(limit);
        let mut buf = vec![0u8; len];
        layer.spool.read_exact_at(&mut buf, e.offset).ok()?;
        Some(buf)
    }

    fn paths(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
        Box::new(self.m.nodes.keys().map(|k| &k[..]))
    }
}

/// Squashes `layers` (bottom first) into one output layer; the first
/// `opts.base_layers` stay below it unchanged.
pub fn squash(
    layers: &[Arc<LayerIndex>],
    opts: SquashOptions,
    filter: &dyn PathFilter,
) -> Result<(Plan, SquashStats)> {
    Ok(merge(layers, opts.base_layers)?.squash(opts.hardlink_dedup, filter))
}

/// Whether a whiteout or opaque marker of `layer` comes after entries of
/// the same layer below what it removes, with a directory between them
/// that has no entry of its own before it: that directory then stays only
/// because of those entries. (Writers that put a directory's entry before
/// its children never do this.)
fn shields_directories(layer: &LayerIndex, real: &[Arc<[u8]>]) -> bool {
    let mut written: HashSet<&[u8]> = HashSet::new();
    let mut implied: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for (e, path) in layer.entries.iter().zip(real) {
        if !e.kind.is_whiteout() {
            written.insert(path);
            for a in entry::ancestors(path) {
                if !written.contains(a) {
                    implied.insert(a);
                }
            }
            continue;
        }
        // Directories the marker would remove: the target and below
        // (a whiteout), or below it only (an opaque marker).
        let hit = if path.is_empty() {
            implied.iter().next().is_some()
        } else {
            implied
                .range::<&[u8], _>(&path[..]..)
                .take_while(|a| a.starts_with(path))
                .any(|a| (e.kind == Kind::Whiteout && *a == &path[..]) || is_under(a, path))
        };
        if hit {
            return true;
        }
    }
    false
}

/// Rewrites each layer on its own (`--squash none`): whiteouts stay, entries
/// a higher layer replaces or deletes are dropped, the filter applies.
pub fn per_layer(
    layers: &[Arc<LayerIndex>],
    filter: &dyn PathFilter,
) -> Result<Vec<(Plan, SquashStats)>> {
    let n = layers.len();
    // Where each entry really lands (its parent resolved through the
    // symlinks of the stack below it): the output layers name real paths,
    // so that dropping a symlink a higher layer replaces never moves what
    // was written through it.
    let Merge {
        moved, moved_links, ..
    } = merge(layers, 0)?.m;
    let real_of = |li: usize| -> Vec<Arc<[u8]>> {
        layers[li]
            .entries
            .iter()
            .enumerate()
            .map(|(ei, e)| match moved.get(&(li as u32, ei as u32)) {
                Some(p) => p.clone(),
                None => e.path.clone(),
            })
            .collect()
    };
    // Dropping what a higher layer hides assumes each entry acts alone. A
    // whiteout after entries of its own layer below what it removes keeps
    // the directories above them (umoci's "upper paths"): then what is
    // hidden may still matter to the layer, and everything stays.
    let drop_hidden = !(0..n).any(|li| shields_directories(&layers[li], &real_of(li)));
    let mut out: Vec<(Plan, SquashStats)> = Vec::with_capacity(n);
    // What the layers above the current one do.
    let mut deleted: HashSet<Arc<[u8]>> = HashSet::new();
    let mut opaque: HashSet<Arc<[u8]>> = HashSet::new();
    let mut upper: HashMap<Arc<[u8]>, bool> = HashMap::new(); // path -> is_dir
    // Targets of hard links in higher layers that live in lower ones: never dropped.
    let mut protected: HashSet<Arc<[u8]>> = HashSet::new();

    for li in (0..n).rev() {
        let layer = &layers[li];
        let real = real_of(li);
        let link_of = |ei: usize| -> &[u8] {
            match moved_links.get(&(li as u32, ei as u32)) {
                Some(t) => t,
                None => layer.entries[ei].link.as_deref().unwrap_or_default(),
            }
        };
        let mut stats = SquashStats::default();
        let hidden = |p: &[u8]| -> bool {
            if deleted.contains(p) {
                return true;
            }
            for a in entry::ancestors(p) {
                if deleted.contains(a) || opaque.contains(a) || upper.get(a) == Some(&false) {
                    return true;
                }
            }
            if !p.is_empty() && opaque.contains(&b""[..]) {
                return true;
            }
            // A higher non-directory replaces whatever is here. A higher
            // directory merges: this entry's own effect (replacing what the
            // layers below had) still counts, so it stays.
            upper.get(p) == Some(&false)
        };

        // Original tar order: within one layer it carries meaning (a hard
        // link names what its target is at that point of the stream).
        let mut kept: Vec<usize> = Vec::new();
        let mut removed_dirs: HashMap<Arc<[u8]>, String> = HashMap::new();
        // Every entry stays in place: a path written twice in one layer can
        // matter (a file replacing a directory drops what was in it).
        // Directories stay too; only leaves a higher layer replaces or
        // deletes are dropped.
        let mut seen: std::collections::BTreeSet<Arc<[u8]>> = std::collections::BTreeSet::new();
        // Hard-link targets within this layer stay where they are.
        let layer_targets: HashSet<&[u8]> = layer
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind == Kind::Hardlink)
            .map(|(ei, _)| link_of(ei))
            .collect();
        for (ei, path) in real.iter().enumerate() {
            let e = &layer.entries[ei];
            if e.kind.is_whiteout() {
                kept.push(ei);
                continue;
            }
            // Dropping a non-directory that replaced a directory earlier in
            // this layer would bring that directory's entries back.
            let replaced_earlier = !e.kind.is_dir() && {
                let range = Merge::children_range(path);
                seen.range::<Arc<[u8]>, _>(range).next().is_some()
            };
            seen.insert(path.clone());
            let is_protected =
                protected.contains(path) || replaced_earlier || layer_targets.contains(&path[..]);
            if drop_hidden && !e.kind.is_dir() && hidden(path) && !is_protected {
                if e.kind == Kind::File {
                    stats.shadowed.add(1, e.size);
                } else if !e.kind.is_dir() {
                    stats.shadowed.add(1, 0);
                }
                continue;
            }
            let size = if e.kind == Kind::File { e.size } else { 0 };
            if !is_protected
                && let Some(cat) = entry::ancestors(path).find_map(|a| removed_dirs.get(a))
            {
                if !e.kind.is_dir() {
                    stats.removed.record(&cat.clone(), 1, size);
                }
                continue;
            }
            if !is_protected && let Some(cat) = filter.remove(path, e.kind) {
                if e.kind.is_dir() {
                    removed_dirs.insert(path.clone(), cat.to_string());
                } else {
                    stats.removed.record(cat, 1, size);
                }
                continue;
            }
            kept.push(ei);
        }

        // Hard links within this layer: the first kept name (in output
        // order) carries the content; the others link to it.
        // Which File entry's inode each file or link entry names, as of its
        // place in the stream.
        let mut root_of: HashMap<&[u8], usize> = HashMap::new();
        let mut root_for: HashMap<usize, usize> = HashMap::new();
        let mut cross_targets: Vec<&[u8]> = Vec::new();
        for (ei, e) in layer.entries.iter().enumerate() {
            let path: &[u8] = &real[ei];
            match e.kind {
                Kind::File => {
                    root_of.insert(path, ei);
                    root_for.insert(ei, ei);
                }
                Kind::Hardlink => {
                    let t = link_of(ei);
                    if let Some(&r) = root_of.get(t) {
                        root_of.insert(path, r);
                        root_for.insert(ei, r);
                    } else {
                        // The target comes from a lower layer: keep it there.
                        cross_targets.push(t);
                        root_of.remove(path);
                    }
                }
                Kind::Whiteout | Kind::Opaque => {}
                _ => {
                    root_of.remove(path);
                }
            }
        }
        let mut items: Vec<Item> = Vec::with_capacity(kept.len());
        // Root -> the paths that name its inode in the output so far, and
        // the other way round (each path names one inode at a time), so
        // that an entry finds what it replaces without a scan of them all.
        let mut names: HashMap<usize, Vec<Arc<[u8]>>> = HashMap::new();
        let mut named: BTreeMap<Arc<[u8]>, usize> = BTreeMap::new();
        for ei in kept {
            let e = &layer.entries[ei];
            let path = &real[ei];
            if !e.kind.is_whiteout() {
                // Whatever this entry replaces no longer names an inode.
                let mut gone: Vec<Arc<[u8]>> = Vec::new();
                if let Some((k, _)) = named.get_key_value(&path[..]) {
                    gone.push(k.clone());
                }
                if !e.kind.is_dir() {
                    gone.extend(
                        named
                            .range::<Arc<[u8]>, _>(Merge::children_range(path))
                            .map(|(k, _)| k.clone()),
                    );
                }
                for k in gone {
                    if let Some(root) = named.remove(&k)
                        && let Some(list) = names.get_mut(&root)
                    {
                        list.retain(|c| *c != k);
                    }
                }
            }
            match e.kind {
                Kind::Whiteout => items.push(Item::Whiteout(path.clone())),
                Kind::Opaque => items.push(Item::Opaque(path.clone())),
                Kind::File | Kind::Hardlink if root_for.contains_key(&ei) => {
                    let root = root_for[&ei];
                    let list = names.entry(root).or_default();
                    let link_to = list.first().cloned();
                    list.push(path.clone());
                    named.insert(path.clone(), root);
                    stats.files += 1;
                    items.push(Item::Entry {
                        path: path.clone(),
                        layer: li as u32,
                        index: root as u32,
                        link_to,
                    });
                }
                _ => {
                    if !e.kind.is_dir() {
                        stats.files += 1;
                    }
                    // A hard link to a lower layer names its target's real
                    // path.
                    let link_to = moved_links.get(&(li as u32, ei as u32)).cloned();
                    items.push(Item::Entry {
                        path: path.clone(),
                        layer: li as u32,
                        index: ei as u32,
                        link_to,
                    });
                }
            }
        }
        out.push((Plan { items }, stats));

        // This layer now hides things from the ones below.
        protected.extend(cross_targets.into_iter().map(Arc::from));
        for (e, path) in layer.entries.iter().zip(real) {
            match e.kind {
                Kind::Whiteout => {
                    deleted.insert(path);
                }
                Kind::Opaque => {
                    opaque.insert(path);
                }
                Kind::Hardlink => {
                    upper.insert(path, false);
                }
                k => {
                    let is_dir = k.is_dir();
                    let slot = upper.entry(path).or_insert(is_dir);
                    // A directory does not un-hide what a non-directory hid.
                    *slot = *slot && is_dir;
                }
            }
        }
    }
    out.reverse();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::read::{IndexOptions, index_layer};
    use crate::transform::filter::KeepAll;

    /// One tar entry: `(name, type, link target, content)`.
    type Spec<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    fn tar_of(entries: &[Spec<'_>]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for (name, ty, link, content) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(*ty);
            h.set_mode(if ty.is_dir() { 0o755 } else { 0o644 });
            h.set_size(content.len() as u64);
            h.set_mtime(0);
            h.set_uid(0);
            h.set_gid(0);
            if ty.is_symlink() || ty.is_hard_link() {
                b.append_link(&mut h, name, link).unwrap();
            } else {
                b.append_data(&mut h, name, *content).unwrap();
            }
        }
        b.into_inner().unwrap()
    }

    fn indexes(layers: &[&[Spec<'_>]]) -> Vec<Arc<LayerIndex>> {
        layers
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let tar = tar_of(l);
                Arc::new(
                    index_layer(
                        &tar[..],
                        &format!("layer {}", i + 1),
                        None,
                        &std::env::temp_dir(),
                        &IndexOptions::default(),
                    )
                    .unwrap(),
                )
            })
            .collect()
    }

    const DIR: tar::EntryType = tar::EntryType::Directory;
    const FILE: tar::EntryType = tar::EntryType::Regular;
    const LINK: tar::EntryType = tar::EntryType::Link;

    fn squash_err(layers: &[&[Spec<'_>]]) -> String {
        let idx = indexes(layers);
        let opts = SquashOptions {
            base_layers: 0,
            hardlink_dedup: false,
        };
        match squash(&idx, opts, &KeepAll) {
            Ok((plan, _)) => panic!("squashed: {:?}", plan.items),
            Err(e) => format!("{e:#}"),
        }
    }

    /// A hard link to the root or to a directory cannot be extracted
    /// (link(2) refuses directories): refused, naming layer and entry.
    #[test]
    fn a_hard_link_to_the_root_or_a_directory_is_refused() {
        for target in ["./", ".", "etc", "etc/"] {
            let err = squash_err(&[&[
                ("./", DIR, "", b""),
                ("etc/", DIR, "", b""),
                ("etc/passwd", FILE, "", b"root"),
                ("h", LINK, target, b""),
            ]]);
            assert!(
                err.contains("(#1): hard link /h points to") && err.contains("not a regular file"),
                "{target}: {err}"
            );
        }
    }
}
