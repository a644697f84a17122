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
//!
//! Where each part lives: `model` (the tree: paths -> entries and inodes),
//! `resolve` (symlinked parents), `apply` (one layer in tar order:
//! whiteouts, replacement, hard links), `dedup` (identical files -> one
//! inode), `output` (filter, then the plan with base whiteouts and opaque
//! markers), `per_layer` (`--squash none`). This file holds the entry
//! points and the [`TreeView`] of the merged tree.

mod apply;
mod dedup;
mod details;
mod model;
mod output;
mod packages;
mod per_layer;
mod resolve;

use crate::layer::shared_path::SharedPath;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Result;

use super::filter::{Count, FilterStats, PathFilter};
use super::tree::TreeView;
use crate::layer::entry::{Entry, Kind};
use crate::layer::read::LayerIndex;
use model::{Merge, NO_INODE, Node};

/// The plan is the contract with the encoder; it lives in `layer::plan`.
use crate::layer::plan::{Item, Plan};
pub use per_layer::per_layer;

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
    /// Packages that left the package database: none of their files
    /// remain.
    pub packages_gone: Vec<crate::transform::pkgdb::GonePackage>,
}

#[derive(Clone, Copy, Debug)]
pub struct SquashOptions {
    /// How many of the layers stay below the output unchanged.
    pub base_layers: usize,
    /// Identical regular files become hard links.
    pub hardlink_dedup: bool,
}

/// Symlinks one parent path may pass, as Linux allows in one lookup
/// (ELOOP past it; umoci and containerd stop at 255, but such a path cannot
/// be opened at run time either).
pub const MAX_LINKS: usize = 40;

/// Paths a tree grows by before it is packed ([`model::pack`]).
const PACK_MIN: usize = 1 << 14;

/// The layers applied in order: the tree extraction gives, with what each
/// path came from. A [`TreeView`] for profile decisions, then squashed.
pub struct Merged<'a> {
    m: Merge<'a>,
    base_nodes: BTreeMap<SharedPath, Node>,
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
        lost: Vec::new(),
        applying: 0,
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
    m.lost.clear();
    let mut packed_at = m.nodes.len();
    for li in base_layers..layers.len() {
        m.apply_layer(li)?;
        // Packed when it grew by a quarter: the whole tree is rebuilt
        // O(log) times over all layers, never per small layer.
        if m.nodes.len() >= packed_at + packed_at / 4 + PACK_MIN {
            model::pack(&mut m.nodes);
            packed_at = m.nodes.len();
        }
    }
    Ok(Merged { m, base_nodes })
}

impl Merged<'_> {
    /// Plans the one output layer: filter, dedup, then entries (and, over a
    /// kept base, whiteouts and opaque markers).
    pub fn squash(self, hardlink_dedup: bool, filter: &dyn PathFilter) -> (Plan, SquashStats) {
        self.squash_or_count(hardlink_dedup, filter, true)
    }

    /// What [`Merged::squash`] would do, without its plan (a dry run, an
    /// analysis): the tree is not turned into a plan at all.
    pub fn squash_stats(self, hardlink_dedup: bool, filter: &dyn PathFilter) -> SquashStats {
        self.squash_or_count(hardlink_dedup, filter, false).1
    }

    fn squash_or_count(
        mut self,
        hardlink_dedup: bool,
        filter: &dyn PathFilter,
        planned: bool,
    ) -> (Plan, SquashStats) {
        let t = std::time::Instant::now();
        let (removed, rewrites) = self.m.filter(filter);
        tracing::debug!(elapsed = ?t.elapsed(), "filtered");
        let t = std::time::Instant::now();
        let rewritten: HashMap<&[u8], &Arc<[u8]>> =
            rewrites.iter().map(|r| (&r.path[..], &r.content)).collect();
        let mut hardlinked = Count::default();
        let alias = self.m.dedup(
            hardlink_dedup,
            &|p| rewritten.contains_key(p),
            &mut hardlinked,
        );
        if !planned {
            let m = &self.m;
            let files = m.nodes.values().filter(|n| m.is_output_file(**n)).count() as u64;
            let stats = SquashStats {
                removed,
                shadowed: m.shadowed,
                hardlinked,
                files,
                packages_gone: gone_packages(&rewrites),
            };
            return (Plan::default(), stats);
        }
        tracing::debug!(elapsed = ?t.elapsed(), "deduplicated");
        let t = std::time::Instant::now();
        let (mut plan, files) = self.m.plan(&alias, &self.base_nodes);
        tracing::debug!(elapsed = ?t.elapsed(), "planned the output");
        if !rewritten.is_empty() {
            let at: Vec<(usize, Arc<[u8]>)> = plan
                .iter(self.m.layers)
                .enumerate()
                .filter_map(|(at, item)| match item {
                    Item::Entry {
                        path,
                        link_to: None,
                        ..
                    } => rewritten.get(&path[..]).map(|c| (at, Arc::clone(c))),
                    _ => None,
                })
                .collect();
            for (at, content) in at {
                plan.rewrite(at, content);
            }
        }
        (
            plan,
            SquashStats {
                removed,
                shadowed: self.m.shadowed,
                hardlinked,
                files,
                packages_gone: gone_packages(&rewrites),
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

/// The packages the database rewrites leave out, sorted.
fn gone_packages(rewrites: &[packages::Rewrite]) -> Vec<crate::transform::pkgdb::GonePackage> {
    let mut gone: Vec<_> = rewrites.iter().flat_map(|r| r.gone.clone()).collect();
    gone.sort();
    gone
}

impl TreeView for Merged<'_> {
    fn kind(&self, path: &[u8]) -> Option<Kind> {
        self.node_entry(path).map(|e| e.kind())
    }

    fn mode(&self, path: &[u8]) -> Option<u32> {
        self.node_entry(path).map(|e| e.mode())
    }

    fn link_target(&self, path: &[u8]) -> Option<Vec<u8>> {
        self.node_entry(path)
            .filter(|e| e.kind() == Kind::Symlink)
            .and_then(|e| e.link().map(<[u8]>::to_vec))
    }

    fn read_at(&self, path: &[u8], offset: u64, limit: usize) -> Option<Vec<u8>> {
        let n = *self.m.nodes.get(path)?;
        if n.inode == NO_INODE {
            return None;
        }
        let (l, i) = self.m.creators[n.inode as usize];
        let layer = &self.m.layers[l as usize];
        layer
            .read_content(&layer.entries[i as usize], offset, limit)
            .ok()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::read::{IndexOptions, index_layer};
    use crate::transform::filter::KeepAll;

    /// One tar entry: `(name, type, link target, content)`.
    pub(super) type Spec<'a> = (&'a str, tar::EntryType, &'a str, &'a [u8]);

    pub(super) fn tar_of(entries: &[Spec<'_>]) -> Vec<u8> {
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

    pub(super) fn indexes(layers: &[&[Spec<'_>]]) -> Vec<Arc<LayerIndex>> {
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
            Ok((plan, _)) => panic!("squashed: {:?}", plan.iter(&idx).collect::<Vec<_>>()),
            Err(e) => format!("{e:#}"),
        }
    }

    /// Counting what a squash does gives the squash's own figures:
    /// shadowed, deduplicated and hard-linked files, the files left.
    #[test]
    fn stats_alone_are_the_squash_figures() {
        let lower: Vec<Spec<'_>> = vec![
            ("./", DIR, "", b""),
            ("d/", DIR, "", b""),
            ("d/a", FILE, "", b"same"),
            ("d/b", FILE, "", b"same"),
            ("d/c", FILE, "", b"other"),
            ("d/h", LINK, "d/c", b""),
            ("e/", DIR, "", b""),
            ("e/x", FILE, "", b"gone soon"),
        ];
        let upper: Vec<Spec<'_>> = vec![
            ("d/a", FILE, "", b"new"),
            ("e/.wh.x", FILE, "", b""),
            ("f", FILE, "", b"same"),
        ];
        let idx = indexes(&[&lower[..], &upper[..]]);
        for dedup in [false, true] {
            let (plan, full) = merge(&idx, 0).unwrap().squash(dedup, &KeepAll);
            let alone = merge(&idx, 0).unwrap().squash_stats(dedup, &KeepAll);
            assert_eq!(alone, full, "dedup {dedup}");
            assert_eq!(full.shadowed.files, 2);
            assert_eq!(full.hardlinked.files, u64::from(dedup));
            assert_eq!(full.files, 5);
            assert!(!plan.is_empty());
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
