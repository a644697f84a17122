//! Per-path data of the merged tree ([`PathData`]), read without changing
//! it: what the filter would remove and dedup would link are worked out the
//! way [`Merged::squash`] does them, so the paths listed add up to its
//! counts. Also the complete listing (`slim analyze --files`), written one
//! JSON line per path as the tree is walked.

use crate::layer::shared_path::SharedPath;
use std::collections::HashMap;
use std::io::Write;

use anyhow::Result;
use serde::Serialize;

use super::super::filter::PathFilter;
use super::super::paths::{
    Class, DetailOptions, DuplicatePath, Leaf, PathData, RemovedPath, ShadowedPath, ShownPath,
    TopFiles, dir_sizes, size_tree, top_dirs,
};
use super::Merged;
use super::model::{InodeSet, NO_INODE, Node};
use crate::layer::entry::{self, Entry, Kind};

/// One line of the complete listing.
#[derive(Serialize)]
struct FileLine<'a> {
    path: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    size: u64,
    mode: String,
    /// The layer (1 = bottom) that last wrote the path.
    layer: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    target: Option<String>,
}

pub fn kind_name(k: Kind) -> &'static str {
    match k {
        Kind::File => "file",
        Kind::Dir => "dir",
        Kind::Symlink => "symlink",
        Kind::Hardlink => "hardlink",
        Kind::Char => "char",
        Kind::Block => "block",
        Kind::Fifo => "fifo",
        Kind::Whiteout => "whiteout",
        Kind::Opaque => "opaque",
    }
}

/// A path of the tree before slimming as it is after: gone if removed or
/// shadowed, no bytes of its own if it became a link to a duplicate.
fn after_of<'a>(l: &Leaf<'a>) -> Option<Leaf<'a>> {
    let class = match l.class {
        Class::Removed | Class::Shadowed => return None,
        Class::Safety => Class::Safety,
        _ => Class::Kept,
    };
    Some(Leaf {
        bytes: if l.class == Class::Duplicate {
            0
        } else {
            l.bytes
        },
        class,
        ..*l
    })
}

impl Merged<'_> {
    /// The content entry of a node: a file's or hard link's inode creator,
    /// else its own entry.
    fn content(&self, n: Node) -> &Entry {
        if n.inode != NO_INODE {
            let (l, i) = self.m.creators[n.inode as usize];
            return &self.m.layers[l as usize].entries[i as usize];
        }
        self.m.entry(n)
    }

    /// Every path `filter` removes from the merged tree (a removed
    /// directory and what is in it), in path order, with its category and
    /// the bytes it frees (a hard-linked file's once, on the first of its
    /// paths): the report's audit list, which adds up to the removed counts.
    pub fn removed_paths(&self, filter: &dyn PathFilter) -> Vec<RemovedPath> {
        let (removed, _, _) = self.m.decide(filter);
        let gone: HashMap<&[u8], &str> =
            removed.iter().map(|(p, c)| (&p[..], c.as_str())).collect();
        let mut seen = InodeSet::new(self.m.creators.len());
        let mut out = Vec::with_capacity(removed.len());
        for (path, node) in &self.m.nodes {
            let first = node.inode != NO_INODE && seen.insert(node.inode);
            if let Some(cat) = gone.get(&path[..]) {
                out.push(RemovedPath {
                    path: entry::display(path),
                    category: cat.to_string(),
                    bytes: if first { self.content(*node).size() } else { 0 },
                });
            }
        }
        out
    }

    /// Per-path data of the merged tree as `filter` and dedup (if
    /// `hardlink_dedup`) would slim it; with `files`, the complete listing
    /// too, one JSON line per path.
    pub fn details(
        &self,
        filter: &dyn PathFilter,
        hardlink_dedup: bool,
        opts: DetailOptions,
        mut files: Option<&mut dyn Write>,
    ) -> Result<PathData> {
        let (removed, _, _) = self.m.decide(filter);
        let gone: HashMap<&[u8], &str> =
            removed.iter().map(|(p, c)| (&p[..], c.as_str())).collect();
        let mut dups: HashMap<SharedPath, DuplicatePath> = HashMap::new();
        if hardlink_dedup {
            self.m
                .each_duplicate(&|p| gone.contains_key(p), &mut |path, inode, _, same| {
                    let (l, _) = self.m.creators[inode as usize];
                    dups.insert(
                        path.clone(),
                        DuplicatePath {
                            path: ShownPath(path.clone()),
                            layer: l + 1,
                            bytes: self.m.inode_size(inode),
                            same_as: ShownPath(same.clone()),
                        },
                    );
                });
        }

        // Every live non-directory path's bytes and class, in tree order, 9
        // bytes a path (the paths are read again from the tree); with the
        // shadowed paths, the leaves of the tree before slimming. The tree
        // after slimming is a view of it (`after_of`).
        let is_leaf = |path: &SharedPath, node: &Node| {
            !path.is_empty() && !self.m.entry(*node).kind().is_dir()
        };
        let mut leaf_bytes: Vec<u64> = Vec::new();
        let mut leaf_class: Vec<Class> = Vec::new();
        let mut top = TopFiles::new(opts.top);
        let mut seen = InodeSet::new(self.m.creators.len());
        let mut would_remove = Vec::with_capacity(removed.len());
        for (path, node) in &self.m.nodes {
            let own = self.m.entry(*node);
            let e = self.content(*node);
            let bytes = if node.inode != NO_INODE && seen.insert(node.inode) {
                e.size()
            } else {
                0
            };
            if let Some(w) = files.as_deref_mut() {
                let line = FileLine {
                    path: &entry::display(path),
                    kind: kind_name(own.kind()),
                    size: if node.inode != NO_INODE { e.size() } else { 0 },
                    mode: format!("{:04o}", e.mode() & 0o7777),
                    layer: node.layer + 1,
                    target: (own.kind() == Kind::Symlink || own.kind() == Kind::Hardlink)
                        .then(|| String::from_utf8_lossy(own.link().unwrap_or_default()))
                        .map(|t| t.into_owned()),
                };
                serde_json::to_writer(&mut *w, &line)?;
                w.write_all(b"\n")?;
            }
            if let Some(cat) = gone.get(&path[..]) {
                would_remove.push(RemovedPath {
                    path: entry::display(path),
                    category: cat.to_string(),
                    bytes,
                });
            }
            if !is_leaf(path, node) {
                continue;
            }
            let class = if gone.contains_key(&path[..]) {
                Class::Removed
            } else if dups.contains_key(path) {
                Class::Duplicate
            } else if filter.kept_by_safety(path) {
                Class::Safety
            } else {
                Class::Kept
            };
            top.push(path, bytes, node.layer + 1, class);
            leaf_bytes.push(bytes);
            leaf_class.push(class);
        }
        drop(seen);
        let live = || {
            self.m
                .nodes
                .iter()
                .filter(|(path, node)| is_leaf(path, node))
                .zip(leaf_bytes.iter().zip(&leaf_class))
                .map(|((path, _), (&bytes, &class))| Leaf {
                    path,
                    bytes,
                    shadowed_in: 0,
                    class,
                })
        };
        let sizes = dir_sizes(live().map(|l| (l.path, l.bytes)));
        let top_dirs = top_dirs(&sizes, opts.top);
        drop(sizes);

        let lost_bytes = |n: &Node| {
            let e = self.m.entry(*n);
            if e.kind() == Kind::File { e.size() } else { 0 }
        };
        let shadowed: Vec<ShadowedPath> = self
            .m
            .lost
            .iter()
            .map(|(path, n, by)| ShadowedPath {
                path: ShownPath(path.clone()),
                layer: n.layer + 1,
                bytes: lost_bytes(n),
                by_layer: by + 1,
            })
            .collect();
        let before = || {
            live().chain(self.m.lost.iter().map(|(path, n, _)| Leaf {
                path,
                bytes: lost_bytes(n),
                shadowed_in: n.layer + 1,
                class: Class::Shadowed,
            }))
        };
        let mut duplicates: Vec<DuplicatePath> = dups.into_values().collect();
        duplicates.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(PathData {
            top_dirs,
            top_files: top.finish(),
            shadowed,
            duplicates,
            would_remove,
            before: size_tree(before, opts.treemap_nodes),
            after: size_tree(|| before().filter_map(|l| after_of(&l)), opts.treemap_nodes),
        })
    }
}
