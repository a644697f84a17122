//! Squash: apply layers in order, exactly as extraction would, and plan the
//! output layer(s).
//!
//! - `--squash all`: one layer holding the final tree; no whiteout remains.
//! - on top of kept base layers (`--keep-base`): one layer that, extracted
//!   over the base, gives the same tree as the original stack; whiteouts and
//!   opaque markers are written where the base's content must disappear.
//! - `--squash none`: each layer on its own, whiteouts kept, minus the
//!   entries a higher layer replaces or deletes.
//!
//! Semantics (OCI image spec, "Applying Changesets"): a layer's whiteouts act
//! on lower layers only, so they are applied before the layer's own entries;
//! a directory over a directory merges (the upper metadata wins), anything
//! else replaces the lower path and everything below it. A hard link names
//! the inode its target has when the link's layer is extracted: an inode
//! whose first name disappears later is carried by its next name, with the
//! content and metadata of the entry that created it.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use anyhow::{Result, bail};

use super::filter::{Count, FilterStats, PathFilter};
use crate::layer::entry::{self, Entry, Kind};
use crate::layer::read::LayerIndex;

/// One item of an output layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `layers[layer].entries[index]` written at `path` (its metadata and,
    /// for a file, its content), or as a hard link to `link_to`.
    Entry {
        path: Box<[u8]>,
        layer: u32,
        index: u32,
        link_to: Option<Box<[u8]>>,
    },
    /// Delete this path from the layers below.
    Whiteout(Box<[u8]>),
    /// Hide what the layers below have in this directory.
    Opaque(Box<[u8]>),
}

impl Item {
    /// Sort key: paths in byte order, an opaque marker right after its
    /// directory and before the directory's children.
    fn key(&self) -> Vec<u8> {
        match self {
            Item::Entry { path, .. } | Item::Whiteout(path) => path.to_vec(),
            Item::Opaque(dir) => {
                let mut k = dir.to_vec();
                k.push(0);
                k
            }
        }
    }
}

/// The entries of one output layer, in the order they are written.
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
}

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
    /// Layers that stay stack below the output (write whiteouts for them).
    pub base_below: bool,
    /// Identical regular files become hard links.
    pub hardlink_dedup: bool,
}

const NO_INODE: u32 = u32::MAX;

type PathRange = (Bound<Box<[u8]>>, Bound<Box<[u8]>>);

#[derive(Clone, Copy, Debug)]
struct Node {
    layer: u32,
    index: u32,
    /// Regular files and hard links: which inode the path names.
    inode: u32,
}

struct Merge<'a> {
    layers: &'a [Arc<LayerIndex>],
    nodes: BTreeMap<Box<[u8]>, Node>,
    /// Paths deleted, made opaque or replaced by a non-directory within the
    /// squashed range (only with base layers below).
    resets: BTreeSet<Box<[u8]>>,
    track_resets: bool,
    /// Inode -> the entry that created it.
    creators: Vec<(u32, u32)>,
    shadowed: Count,
}

impl<'a> Merge<'a> {
    fn entry(&self, n: Node) -> &'a Entry {
        &self.layers[n.layer as usize].entries[n.index as usize]
    }

    fn children_range(path: &[u8]) -> PathRange {
        if path.is_empty() {
            // Everything but the root itself.
            return (Bound::Excluded(Box::from(&b""[..])), Bound::Unbounded);
        }
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        (Bound::Included(lo.into()), Bound::Excluded(hi.into()))
    }

    fn remove_children(&mut self, path: &[u8]) {
        let keys: Vec<Box<[u8]>> = self
            .nodes
            .range::<Box<[u8]>, _>(Self::children_range(path))
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some(n) = self.nodes.remove(&k) {
                self.count_shadowed(n);
            }
        }
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

    fn reset(&mut self, path: &[u8]) {
        if self.track_resets {
            self.resets.insert(path.into());
        }
    }

    fn apply(&mut self, base_below: bool) -> Result<()> {
        for (li, layer) in self.layers.iter().enumerate() {
            // Whiteouts act on the layers below only: apply them first.
            for e in layer.entries.iter().filter(|e| e.kind.is_whiteout()) {
                match e.kind {
                    Kind::Whiteout if !e.path.is_empty() => {
                        self.remove_subtree(&e.path);
                        self.reset(&e.path);
                    }
                    Kind::Opaque => {
                        self.remove_children(&e.path);
                        self.reset(&e.path);
                    }
                    _ => {}
                }
            }
            for (ei, e) in layer.entries.iter().enumerate() {
                let node = Node {
                    layer: li as u32,
                    index: ei as u32,
                    inode: NO_INODE,
                };
                match e.kind {
                    Kind::Whiteout | Kind::Opaque => {}
                    Kind::Dir => {
                        if let Some(existing) = self.nodes.get_mut(&e.path)
                            && self.layers[existing.layer as usize].entries[existing.index as usize]
                                .kind
                                .is_dir()
                        {
                            *existing = node;
                            continue;
                        }
                        self.remove_subtree(&e.path);
                        self.nodes.insert(e.path.clone(), node);
                    }
                    Kind::Hardlink => {
                        let target = e.link.as_deref().unwrap_or_default();
                        if target == &e.path[..] {
                            continue;
                        }
                        let inode = match self.nodes.get(target) {
                            Some(t) if t.inode != NO_INODE => t.inode,
                            Some(t) if base_below && self.entry(*t).kind == Kind::Hardlink => {
                                NO_INODE
                            }
                            None if base_below => NO_INODE,
                            _ => bail!(
                                "layer {} (#{}): hard link {} points to {}, which is not a regular file at that point",
                                layer.diff_id,
                                li + 1,
                                e.display_path(),
                                entry::display(target)
                            ),
                        };
                        self.remove_subtree(&e.path);
                        self.nodes.insert(e.path.clone(), Node { inode, ..node });
                        self.reset(&e.path);
                    }
                    Kind::File => {
                        self.remove_subtree(&e.path);
                        let inode = self.creators.len() as u32;
                        self.creators.push((li as u32, ei as u32));
                        self.nodes.insert(e.path.clone(), Node { inode, ..node });
                        self.reset(&e.path);
                    }
                    Kind::Symlink | Kind::Char | Kind::Block | Kind::Fifo => {
                        self.remove_subtree(&e.path);
                        self.nodes.insert(e.path.clone(), node);
                        self.reset(&e.path);
                    }
                }
            }
        }
        Ok(())
    }

    /// Removes what the filter says; a removed directory takes its subtree.
    fn filter(&mut self, filter: &dyn PathFilter) -> FilterStats {
        let mut stats = FilterStats::default();
        let mut removed: Vec<Box<[u8]>> = Vec::new();
        let mut within: Option<(Box<[u8]>, String)> = None;
        for (path, node) in &self.nodes {
            let e = self.entry(*node);
            if let Some((dir, cat)) = &within {
                if is_under(path, dir) {
                    removed.push(path.clone());
                    if !e.kind.is_dir() {
                        stats.record(cat, 1, if e.kind == Kind::File { e.size } else { 0 });
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
                    stats.record(cat, 1, if e.kind == Kind::File { e.size } else { 0 });
                }
            }
        }
        for p in removed {
            self.nodes.remove(&p);
        }
        stats
    }

    /// Merges inodes of identical files; returns inode -> canonical inode.
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
            if node.inode == NO_INODE || !seen.insert(node.inode) {
                continue;
            }
            let (cl, ci) = self.creators[node.inode as usize];
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

    fn plan(&self, alias: &[u32]) -> (Plan, u64) {
        let mut items = Vec::with_capacity(self.nodes.len());
        let mut carriers: HashMap<u32, Box<[u8]>> = HashMap::new();
        let mut files = 0;
        for (path, node) in &self.nodes {
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
            if e.kind.is_dir() && self.track_resets && self.resets.contains(&path[..]) {
                items.push(Item::Opaque(path.clone()));
            }
        }
        if self.track_resets {
            for p in &self.resets {
                if self.nodes.contains_key(p) || p.is_empty() {
                    continue;
                }
                // Covered by a whiteout or a non-directory above it?
                let covered = entry::ancestors(p).any(|a| match self.nodes.get(a) {
                    Some(n) => !self.entry(*n).kind.is_dir(),
                    None => self.resets.contains(a),
                });
                if !covered {
                    items.push(Item::Whiteout(p.clone()));
                }
            }
            items.sort_by_key(Item::key);
        }
        (Plan { items }, files)
    }
}

fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

/// Squashes `layers` (bottom first) into one output layer.
pub fn squash(
    layers: &[Arc<LayerIndex>],
    opts: SquashOptions,
    filter: &dyn PathFilter,
) -> Result<(Plan, SquashStats)> {
    let mut m = Merge {
        layers,
        nodes: BTreeMap::new(),
        resets: BTreeSet::new(),
        track_resets: opts.base_below,
        creators: Vec::new(),
        shadowed: Count::default(),
    };
    m.apply(opts.base_below)?;
    let removed = m.filter(filter);
    let mut hardlinked = Count::default();
    let alias = m.dedup(opts.hardlink_dedup, &mut hardlinked);
    let (plan, files) = m.plan(&alias);
    Ok((
        plan,
        SquashStats {
            removed,
            shadowed: m.shadowed,
            hardlinked,
            files,
        },
    ))
}

/// Rewrites each layer on its own (`--squash none`): whiteouts stay, entries
/// a higher layer replaces or deletes are dropped, the filter applies.
pub fn per_layer(
    layers: &[Arc<LayerIndex>],
    filter: &dyn PathFilter,
) -> Result<Vec<(Plan, SquashStats)>> {
    let n = layers.len();
    let mut out: Vec<(Plan, SquashStats)> = Vec::with_capacity(n);
    // What the layers above the current one do.
    let mut deleted: HashSet<Box<[u8]>> = HashSet::new();
    let mut opaque: HashSet<Box<[u8]>> = HashSet::new();
    let mut upper: HashMap<Box<[u8]>, bool> = HashMap::new(); // path -> is_dir
    // Targets of hard links in higher layers that live in lower ones: never dropped.
    let mut protected: HashSet<Box<[u8]>> = HashSet::new();

    for li in (0..n).rev() {
        let layer = &layers[li];
        let mut stats = SquashStats::default();
        // The last entry for a path wins within a layer.
        let mut last: HashMap<(&[u8], bool), usize> = HashMap::new();
        for (ei, e) in layer.entries.iter().enumerate() {
            last.insert((&e.path, e.kind.is_whiteout()), ei);
        }
        let own_paths: HashSet<&[u8]> = layer
            .entries
            .iter()
            .filter(|e| !e.kind.is_whiteout())
            .map(|e| &e.path[..])
            .collect();

        let hidden = |p: &[u8], is_dir: bool| -> bool {
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
            match upper.get(p) {
                Some(upper_is_dir) => !(is_dir && *upper_is_dir),
                None => false,
            }
        };

        let mut kept: Vec<usize> = Vec::new();
        let mut within: Option<(Box<[u8]>, String)> = None;
        let mut order: Vec<usize> = last.values().copied().collect();
        order.sort_by(|a, b| {
            layer.entries[*a]
                .path
                .cmp(&layer.entries[*b].path)
                .then(a.cmp(b))
        });
        for ei in order {
            let e = &layer.entries[ei];
            if e.kind.is_whiteout() {
                kept.push(ei);
                continue;
            }
            let is_protected = protected.contains(&e.path);
            if hidden(&e.path, e.kind.is_dir()) && !is_protected {
                if e.kind == Kind::File {
                    stats.shadowed.add(1, e.size);
                } else if !e.kind.is_dir() {
                    stats.shadowed.add(1, 0);
                }
                continue;
            }
            if let Some((dir, cat)) = &within {
                if is_under(&e.path, dir) && !is_protected {
                    if !e.kind.is_dir() {
                        stats
                            .removed
                            .record(cat, 1, if e.kind == Kind::File { e.size } else { 0 });
                    }
                    continue;
                }
                if !is_under(&e.path, dir) {
                    within = None;
                }
            }
            if !is_protected && let Some(cat) = filter.remove(&e.path, e.kind) {
                if e.kind.is_dir() {
                    within = Some((e.path.clone(), cat.to_string()));
                } else {
                    stats
                        .removed
                        .record(cat, 1, if e.kind == Kind::File { e.size } else { 0 });
                }
                continue;
            }
            kept.push(ei);
        }

        // Hard links within this layer: the first kept name (in output
        // order) carries the content; the others link to it.
        let mut root_of: HashMap<&[u8], usize> = HashMap::new(); // path -> creating File entry
        for (ei, e) in layer.entries.iter().enumerate() {
            match e.kind {
                Kind::File => {
                    root_of.insert(&e.path, ei);
                }
                Kind::Hardlink => {
                    let t = e.link.as_deref().unwrap_or_default();
                    if let Some(&r) = root_of.get(t) {
                        root_of.insert(&e.path, r);
                    } else {
                        root_of.remove(&e.path[..]);
                    }
                }
                _ => {
                    root_of.remove(&e.path[..]);
                }
            }
        }
        let mut items: Vec<Item> = Vec::with_capacity(kept.len());
        let mut carriers: HashMap<usize, Box<[u8]>> = HashMap::new();
        for ei in kept {
            let e = &layer.entries[ei];
            match e.kind {
                Kind::Whiteout => items.push(Item::Whiteout(e.path.clone())),
                Kind::Opaque => items.push(Item::Opaque(e.path.clone())),
                Kind::File | Kind::Hardlink if root_of.contains_key(&e.path[..]) => {
                    let root = root_of[&e.path[..]];
                    let link_to = match carriers.get(&root) {
                        Some(c) => Some(c.clone()),
                        None => {
                            carriers.insert(root, e.path.clone());
                            None
                        }
                    };
                    stats.files += 1;
                    items.push(Item::Entry {
                        path: e.path.clone(),
                        layer: li as u32,
                        index: root as u32,
                        link_to,
                    });
                }
                _ => {
                    if !e.kind.is_dir() {
                        stats.files += 1;
                    }
                    items.push(Item::Entry {
                        path: e.path.clone(),
                        layer: li as u32,
                        index: ei as u32,
                        link_to: None,
                    });
                }
            }
        }
        items.sort_by_key(Item::key);
        out.push((Plan { items }, stats));

        // This layer now hides things from the ones below.
        for e in &layer.entries {
            match e.kind {
                Kind::Whiteout => {
                    deleted.insert(e.path.clone());
                }
                Kind::Opaque => {
                    opaque.insert(e.path.clone());
                }
                Kind::Hardlink => {
                    let t = e.link.as_deref().unwrap_or_default();
                    if !own_paths.contains(t) {
                        protected.insert(t.into());
                    }
                    upper.insert(e.path.clone(), false);
                }
                k => {
                    let is_dir = k.is_dir();
                    let slot = upper.entry(e.path.clone()).or_insert(is_dir);
                    // A directory does not un-hide what a non-directory hid.
                    *slot = *slot && is_dir;
                }
            }
        }
    }
    out.reverse();
    Ok(out)
}
