//! The one output layer of `--squash all` or over a kept base: the filter
//! applied to what the upper layers wrote, then the plan: every path they
//! define (a deduplicated inode written once, then linked), and over a kept
//! base the whiteouts and opaque markers for what they removed from it.

use crate::layer::shared_path::SharedPath;
use std::collections::{BTreeMap, HashMap, HashSet};

use super::super::filter::{FilterStats, PathFilter};
use super::dedup::Alias;
use super::model::{Merge, NO_INODE, Node, Removals, is_under};
use super::packages::Rewrite;
use super::{Item, Plan};
use crate::layer::entry::{self, Kind};

/// Tree nodes drained between two returns of freed pages.
const RELEASE_EVERY: usize = 1 << 16;

impl<'a> Merge<'a> {
    /// Removes what the filter says from what the upper layers wrote (a
    /// removed directory takes its subtree), and what leaves with the
    /// packages that are then gone; returns the counts and the package
    /// databases to write with new content.
    pub(super) fn filter(&mut self, filter: &dyn PathFilter) -> (FilterStats, Vec<Rewrite>) {
        let (removed, stats, rewrites) = self.decide(filter);
        for (p, _) in removed {
            self.nodes.remove(&p);
        }
        (stats, rewrites)
    }

    /// What [`Merge::filter`] removes, path by path with its category, the
    /// counts and the database rewrites; the tree is left as it is.
    pub(super) fn decide(&self, filter: &dyn PathFilter) -> (Removals, FilterStats, Vec<Rewrite>) {
        let (mut removed, mut stats) = self.decide_filter(filter);
        let rewrites = self.prune_packages(&mut removed, &mut stats);
        (removed, stats, rewrites)
    }

    /// What the filter alone removes.
    fn decide_filter(&self, filter: &dyn PathFilter) -> (Removals, FilterStats) {
        let mut stats = FilterStats::default();
        let mut removed: Removals = Vec::new();
        let mut within: Option<(SharedPath, String)> = None;
        for (path, node) in &self.nodes {
            if !self.is_upper(*node) {
                continue;
            }
            let e = self.entry(*node);
            let size = if e.kind() == Kind::File { e.size() } else { 0 };
            if let Some((dir, cat)) = &within {
                if is_under(path, dir) {
                    removed.push((path.clone(), cat.clone()));
                    if !e.kind().is_dir() {
                        stats.record(cat, 1, size);
                    }
                    continue;
                }
                within = None;
            }
            if let Some(cat) = filter.remove(path, e.kind()) {
                removed.push((path.clone(), cat.to_string()));
                if e.kind().is_dir() {
                    within = Some((path.clone(), cat.to_string()));
                } else {
                    stats.record(cat, 1, size);
                }
            }
        }
        (removed, stats)
    }

    /// The output layer: every path the upper layers define, and markers
    /// for what they removed from the base.
    ///
    /// Without a kept base the tree is not needed after this: it is drained
    /// into the plan (8 bytes an item against the tree's 31 or so a path),
    /// freed pages handed back as they come whole; the tree's last pages
    /// go when the drain ends.
    pub(super) fn plan(
        &mut self,
        alias: &Alias,
        base_nodes: &BTreeMap<SharedPath, Node>,
    ) -> (Plan, u64) {
        let mut items = Plan::with_capacity(self.nodes.len());
        let drained = (self.base == 0).then(|| std::mem::take(&mut self.nodes));
        let this = &*self;
        let nodes: Box<dyn Iterator<Item = (SharedPath, Node)> + '_> = match drained {
            Some(tree) => Box::new(tree.into_iter().enumerate().map(|(i, pair)| {
                if i % RELEASE_EVERY == RELEASE_EVERY - 1 {
                    crate::memory::release_freed();
                }
                pair
            })),
            None => Box::new(this.nodes.iter().map(|(p, n)| (p.clone(), *n))),
        };
        // Inodes some unchanged base path still names: link to that path.
        let mut carriers: HashMap<u32, SharedPath> = HashMap::new();
        if self.base > 0 {
            for (path, node) in &self.nodes {
                if node.inode != NO_INODE && !self.is_upper(*node) {
                    carriers
                        .entry(alias.of(node.inode))
                        .or_insert_with(|| path.clone());
                }
            }
        }
        // Inode -> the item that writes it first (4 bytes an inode; later
        // names link to that item's path).
        let mut first: Vec<u32> = vec![u32::MAX; self.creators.len()];
        let mut files = 0;
        let mut opaque: HashSet<SharedPath> = HashSet::new();
        for (path, node) in nodes {
            if !this.is_upper(node) {
                continue;
            }
            let e = this.entry(node);
            if this.is_output_file(node) {
                files += 1;
            }
            if node.inode != NO_INODE {
                let ino = alias.of(node.inode);
                let (layer, index) = this.creators[ino as usize];
                let link_to = match carriers.get(&ino) {
                    Some(c) => Some(c.clone()),
                    None => match first[ino as usize] {
                        u32::MAX => {
                            first[ino as usize] = items.len() as u32;
                            None
                        }
                        i => Some(items.path(i as usize, this.layers).clone()),
                    },
                };
                items.push(
                    Item::Entry {
                        path,
                        layer,
                        index,
                        link_to,
                    },
                    this.layers,
                );
                continue;
            }
            // Recreated over a base directory: the base's content below it
            // must not show through.
            let recreated = this.base > 0
                && e.kind().is_dir()
                && this.reset.contains(&path[..])
                && base_nodes
                    .get(&path[..])
                    .is_some_and(|b| this.entry(*b).kind().is_dir());
            let marker = recreated.then(|| path.clone());
            items.push(
                Item::Entry {
                    path,
                    layer: node.layer,
                    index: node.index,
                    link_to: None,
                },
                this.layers,
            );
            if let Some(dir) = marker {
                items.push(Item::Opaque(dir.clone()), this.layers);
                opaque.insert(dir);
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
            let mut whiteouts: BTreeMap<SharedPath, ()> = BTreeMap::new();
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
                    Some(n) => self.entry(*n).kind().is_dir(),
                    None => true,
                };
                let hidden =
                    opaque.contains(parent) || entry::ancestors(parent).any(|a| opaque.contains(a));
                if parent_is_dir && !hidden {
                    whiteouts.insert(top.into(), ());
                }
            }
            let mut all: Vec<Item> = items.iter(self.layers).collect();
            all.extend(whiteouts.into_keys().map(Item::Whiteout));
            all.sort_by(|a, b| a.key().cmp(b.key()));
            items = Plan::from_items(all, self.layers);
        }
        (items, files)
    }
}
