//! The squash stage's tree model: every path of the merged tree and the
//! entry it came from, inodes for regular files and hard links, and the
//! operations extraction does on it (replace a subtree, count what was
//! shadowed, remember what the upper layers reset over the kept base).

use crate::layer::shared_path::SharedPath;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Bound;
use std::sync::Arc;

use super::super::filter::Count;
use crate::layer::entry::{Entry, Kind};
use crate::layer::read::LayerIndex;

pub(super) const NO_INODE: u32 = u32::MAX;

/// Removed paths with their category, in path order.
pub(super) type Removals = Vec<(SharedPath, String)>;

pub(super) type PathRange = (Bound<SharedPath>, Bound<SharedPath>);

#[derive(Clone, Copy, Debug)]
pub(super) struct Node {
    pub(super) layer: u32,
    pub(super) index: u32,
    /// Regular files and hard links: which inode the path names.
    pub(super) inode: u32,
}

pub(super) struct Merge<'a> {
    pub(super) layers: &'a [Arc<LayerIndex>],
    pub(super) nodes: BTreeMap<SharedPath, Node>,
    /// Paths deleted, replaced by a non-directory or made opaque by the
    /// upper (non-base) layers: a directory among them that exists at the
    /// end hides all the base had below it.
    pub(super) reset: HashSet<SharedPath>,
    /// Inode -> the entry that created it.
    pub(super) creators: Vec<(u32, u32)>,
    pub(super) shadowed: Count,
    /// What `shadowed` counts, path by path: the path, its node, and the
    /// layer that replaced or deleted it.
    pub(super) lost: Vec<(SharedPath, Node, u32)>,
    /// The layer being applied.
    pub(super) applying: u32,
    /// Layers below this index are the kept base.
    pub(super) base: usize,
    /// `(layer, index)` -> real path, for entries (whiteouts included)
    /// written through a symlinked parent.
    pub(super) moved: HashMap<(u32, u32), SharedPath>,
    /// `(layer, index)` -> real target, for hard links whose target names a
    /// symlinked parent.
    pub(super) moved_links: HashMap<(u32, u32), SharedPath>,
}

impl<'a> Merge<'a> {
    pub(super) fn entry(&self, n: Node) -> &'a Entry {
        &self.layers[n.layer as usize].entries[n.index as usize]
    }

    pub(super) fn is_upper(&self, n: Node) -> bool {
        n.layer as usize >= self.base
    }

    /// Whether the node is a non-directory of the output layer (what the
    /// squash figures count as its files).
    pub(super) fn is_output_file(&self, n: Node) -> bool {
        self.is_upper(n) && !self.entry(n).kind().is_dir()
    }

    pub(super) fn children_range(path: &[u8]) -> PathRange {
        if path.is_empty() {
            // Everything but the root itself.
            return (
                Bound::Excluded(SharedPath::from(&b""[..])),
                Bound::Unbounded,
            );
        }
        let mut lo = path.to_vec();
        lo.push(b'/');
        let mut hi = path.to_vec();
        hi.push(b'/' + 1);
        (Bound::Included(lo.into()), Bound::Excluded(hi.into()))
    }

    pub(super) fn children<'m>(
        nodes: &'m BTreeMap<SharedPath, Node>,
        path: &[u8],
    ) -> impl Iterator<Item = (&'m SharedPath, &'m Node)> {
        nodes.range::<SharedPath, _>(Self::children_range(path))
    }

    pub(super) fn remove_children(&mut self, path: &[u8]) {
        let keys: Vec<SharedPath> = Self::children(&self.nodes, path)
            .map(|(k, _)| k.clone())
            .collect();
        for k in keys {
            if let Some((k, n)) = self.nodes.remove_entry(&k) {
                self.count_shadowed(k, n);
            }
        }
    }

    pub(super) fn remove_subtree(&mut self, path: &[u8]) {
        if let Some((k, n)) = self.nodes.remove_entry(path) {
            self.count_shadowed(k, n);
        }
        self.remove_children(path);
    }

    pub(super) fn count_shadowed(&mut self, path: SharedPath, n: Node) {
        let e = self.entry(n);
        if e.kind() == Kind::File {
            self.shadowed.add(1, e.size());
        } else if !e.kind().is_dir() {
            self.shadowed.add(1, 0);
        } else {
            return;
        }
        self.lost.push((path, n, self.applying));
    }

    pub(super) fn mark_reset(&mut self, li: usize, path: &[u8]) {
        if li >= self.base && self.base > 0 {
            self.reset.insert(path.into());
        }
    }
}

/// Rebuilds `nodes` with full B-tree nodes. Paths inserted in order, as
/// a tar layer mostly lists them, leave the nodes a little over half full
/// (a full node splits in the middle): about 52 bytes a path. `append`
/// builds the tree again from the sorted run of its paths, nodes filled
/// (about 31 bytes a path), each old node freed as it is passed and its
/// memory reused for the new ones, so packing costs no memory of its own.
pub(super) fn pack(nodes: &mut BTreeMap<SharedPath, Node>) {
    let Some(first) = nodes.pop_first() else {
        return;
    };
    let mut packed = BTreeMap::from([first]);
    packed.append(nodes);
    *nodes = packed;
    crate::memory::release_freed();
}

/// A set of inodes, one bit each.
pub(super) struct InodeSet(Vec<u64>);

impl InodeSet {
    /// An empty set of the inodes below `inodes`.
    pub(super) fn new(inodes: usize) -> InodeSet {
        InodeSet(vec![0; inodes.div_ceil(64)])
    }

    /// Adds `inode`; whether it was not there yet.
    pub(super) fn insert(&mut self, inode: u32) -> bool {
        let (word, bit) = (inode as usize / 64, 1u64 << (inode % 64));
        let new = self.0[word] & bit == 0;
        self.0[word] |= bit;
        new
    }

    pub(super) fn clear(&mut self) {
        self.0.fill(0);
    }
}

pub(super) fn is_under(path: &[u8], dir: &[u8]) -> bool {
    dir.is_empty() || (path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Packing keeps every path with its node, in order, and the tree
    /// stays a working map (lookups, ranges, inserts, removals).
    #[test]
    fn packing_keeps_the_tree() {
        let node = |i: u32| Node {
            layer: i % 3,
            index: i,
            inode: if i.is_multiple_of(2) { i } else { NO_INODE },
        };
        let mut nodes: BTreeMap<SharedPath, Node> = BTreeMap::new();
        // In order, as a layer lists them, then some out of order.
        for i in 0..40_000u32 {
            let p = format!("d{:03}/f{:05}", i / 1000, i);
            nodes.insert(p.as_bytes().into(), node(i));
        }
        for i in (40_000..45_000u32).rev() {
            nodes.insert(format!("a/{i}").as_bytes().into(), node(i));
        }
        let before: Vec<(Vec<u8>, u32, u32, u32)> = nodes
            .iter()
            .map(|(p, n)| (p.to_vec(), n.layer, n.index, n.inode))
            .collect();
        pack(&mut nodes);
        let after: Vec<(Vec<u8>, u32, u32, u32)> = nodes
            .iter()
            .map(|(p, n)| (p.to_vec(), n.layer, n.index, n.inode))
            .collect();
        assert_eq!(before, after);
        assert_eq!(
            nodes.get(&b"d017/f17017"[..]).map(|n| n.index),
            Some(17_017)
        );
        assert_eq!(Merge::children(&nodes, b"d039").count(), 1000);
        nodes.insert(b"d017/f17017x"[..].into(), node(1));
        assert!(nodes.remove(&b"d000/f00000"[..]).is_some());
        assert_eq!(nodes.len(), 45_000);

        let mut empty = BTreeMap::new();
        pack(&mut empty);
        assert!(empty.is_empty());
    }

    #[test]
    fn inode_sets_say_what_is_new() {
        let mut set = InodeSet::new(130);
        for i in [0, 63, 64, 129, 5] {
            assert!(set.insert(i), "{i}");
        }
        for i in [0, 63, 64, 129, 5] {
            assert!(!set.insert(i), "{i}");
        }
        assert!(set.insert(1) && set.insert(128));
        set.clear();
        assert!(set.insert(129) && set.insert(0));
    }
}
