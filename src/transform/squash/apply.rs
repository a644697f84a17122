//! One layer applied to the tree, in tar order, as extraction does it:
//! whiteouts and opaque markers delete what the layers below made (never
//! what this layer wrote before them), directories merge, anything else
//! replaces, and a hard link names the inode its target has at that point.

use crate::layer::shared_path::SharedPath;
use std::collections::HashSet;

use anyhow::{Result, bail};

use super::MAX_LINKS;
use super::model::{Merge, NO_INODE, Node};
use crate::layer::entry::{self, Entry, Kind};

impl<'a> Merge<'a> {
    /// A whiteout: removes what the layers below `li` made at `path` (if
    /// `include_self`) and below it. What layer `li` wrote stays, and so do
    /// the directories above it: umoci counts them as this layer's paths.
    /// Returns whether some of what stays comes from the kept base.
    pub(super) fn remove_lower(&mut self, path: &[u8], li: usize, include_self: bool) -> bool {
        let li = li as u32;
        let mut upper: HashSet<&[u8]> = HashSet::new();
        for (k, n) in Self::children(&self.nodes, path) {
            if n.layer == li {
                upper.extend(entry::ancestors(k).take_while(|a| a.len() > path.len()));
                upper.insert(path);
            }
        }
        let mut keys: Vec<SharedPath> = Self::children(&self.nodes, path)
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
            if let Some((k, n)) = self.nodes.remove_entry(&k) {
                self.count_shadowed(k, n);
            }
        }
        base_stays
    }

    pub(super) fn apply_layer(&mut self, li: usize) -> Result<()> {
        let layers = self.layers;
        let layer = &layers[li];
        self.applying = li as u32;
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
            if e.kind() == Kind::Whiteout && e.path.is_empty() {
                continue; // the reader refuses it; never delete the root
            }
            if e.kind().is_whiteout() {
                let real = match e.kind() {
                    Kind::Whiteout => self.real_path(&e.path).map_err(|_| too_many(e))?.0,
                    _ => self.resolve_dir(&e.path).map_err(|_| too_many(e))?.path,
                };
                let real: SharedPath = if real[..] == e.path[..] {
                    e.path.clone()
                } else {
                    let real: SharedPath = real.into();
                    self.moved.insert((li as u32, ei as u32), real.clone());
                    real
                };
                // Below a file nothing exists: such a whiteout deletes
                // nothing (umoci's lstat sees ENOTDIR).
                // A base directory that stays (this layer wrote below it)
                // keeps what else of the base stays: then the paths it
                // lost get their own whiteouts, no opaque marker.
                if !self.remove_lower(&real, li, e.kind() == Kind::Whiteout) {
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
            let path: SharedPath = if real[..] == e.path[..] {
                e.path.clone()
            } else {
                let real: SharedPath = real.into();
                self.moved.insert((li as u32, ei as u32), real.clone());
                real
            };
            match e.kind() {
                Kind::Whiteout | Kind::Opaque => unreachable!("handled above"),
                Kind::Dir => {
                    // Over a directory (or an implicit one: children but no
                    // entry) it merges; over anything else it replaces.
                    let replaces = self
                        .nodes
                        .get(&path)
                        .is_some_and(|n| !self.entry(*n).kind().is_dir());
                    if replaces {
                        self.remove_subtree(&path);
                        self.mark_reset(li, &path);
                    }
                    self.nodes.insert(path, node);
                }
                Kind::Hardlink => {
                    let named = e.link().unwrap_or_default();
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
}
