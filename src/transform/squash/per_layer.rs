//! `--squash none`: each layer rewritten on its own, in its own entry
//! order, whiteouts kept, minus the entries a higher layer replaces or
//! deletes, the filter applied; hard links within a layer re-pointed at
//! the first name kept.

use crate::layer::shared_path::SharedPath;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use anyhow::Result;

use super::super::filter::PathFilter;
use super::model::{Merge, is_under};
use super::{Item, Plan, SquashStats, merge};
use crate::layer::entry::{self, Kind};
use crate::layer::read::LayerIndex;

/// Whether a whiteout or opaque marker of `layer` comes after entries of
/// the same layer below what it removes, with a directory between them
/// that has no entry of its own before it: that directory then stays only
/// because of those entries. (Writers that put a directory's entry before
/// its children never do this.)
fn shields_directories(layer: &LayerIndex, real: &[SharedPath]) -> bool {
    let mut written: HashSet<&[u8]> = HashSet::new();
    let mut implied: std::collections::BTreeSet<&[u8]> = std::collections::BTreeSet::new();
    for (e, path) in layer.entries.iter().zip(real) {
        if !e.kind().is_whiteout() {
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
                .any(|a| (e.kind() == Kind::Whiteout && *a == &path[..]) || is_under(a, path))
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
    let real_of = |li: usize| -> Vec<SharedPath> {
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
    let mut deleted: HashSet<SharedPath> = HashSet::new();
    let mut opaque: HashSet<SharedPath> = HashSet::new();
    let mut upper: HashMap<SharedPath, bool> = HashMap::new(); // path -> is_dir
    // Targets of hard links in higher layers that live in lower ones: never dropped.
    let mut protected: HashSet<SharedPath> = HashSet::new();

    for li in (0..n).rev() {
        let layer = &layers[li];
        let real = real_of(li);
        let link_of = |ei: usize| -> &[u8] {
            match moved_links.get(&(li as u32, ei as u32)) {
                Some(t) => t,
                None => layer.entries[ei].link().unwrap_or_default(),
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
        let mut removed_dirs: HashMap<SharedPath, String> = HashMap::new();
        // Every entry stays in place: a path written twice in one layer can
        // matter (a file replacing a directory drops what was in it).
        // Directories stay too; only leaves a higher layer replaces or
        // deletes are dropped.
        let mut seen: std::collections::BTreeSet<SharedPath> = std::collections::BTreeSet::new();
        // Hard-link targets within this layer stay where they are.
        let layer_targets: HashSet<&[u8]> = layer
            .entries
            .iter()
            .enumerate()
            .filter(|(_, e)| e.kind() == Kind::Hardlink)
            .map(|(ei, _)| link_of(ei))
            .collect();
        for (ei, path) in real.iter().enumerate() {
            let e = &layer.entries[ei];
            if e.kind().is_whiteout() {
                kept.push(ei);
                continue;
            }
            // Dropping a non-directory that replaced a directory earlier in
            // this layer would bring that directory's entries back.
            let replaced_earlier = !e.kind().is_dir() && {
                let range = Merge::children_range(path);
                seen.range::<SharedPath, _>(range).next().is_some()
            };
            seen.insert(path.clone());
            let is_protected =
                protected.contains(path) || replaced_earlier || layer_targets.contains(&path[..]);
            if drop_hidden && !e.kind().is_dir() && hidden(path) && !is_protected {
                if e.kind() == Kind::File {
                    stats.shadowed.add(1, e.size());
                } else if !e.kind().is_dir() {
                    stats.shadowed.add(1, 0);
                }
                continue;
            }
            let size = if e.kind() == Kind::File { e.size() } else { 0 };
            if !is_protected
                && let Some(cat) = entry::ancestors(path).find_map(|a| removed_dirs.get(a))
            {
                if !e.kind().is_dir() {
                    stats.removed.record(&cat.clone(), 1, size);
                }
                continue;
            }
            if !is_protected && let Some(cat) = filter.remove(path, e.kind()) {
                if e.kind().is_dir() {
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
            match e.kind() {
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
        let mut items = Plan::with_capacity(kept.len());
        // Root -> the paths that name its inode in the output so far, and
        // the other way round (each path names one inode at a time), so
        // that an entry finds what it replaces without a scan of them all.
        let mut names: HashMap<usize, Vec<SharedPath>> = HashMap::new();
        let mut named: BTreeMap<SharedPath, usize> = BTreeMap::new();
        for ei in kept {
            let e = &layer.entries[ei];
            let path = &real[ei];
            if !e.kind().is_whiteout() {
                // Whatever this entry replaces no longer names an inode.
                let mut gone: Vec<SharedPath> = Vec::new();
                if let Some((k, _)) = named.get_key_value(&path[..]) {
                    gone.push(k.clone());
                }
                if !e.kind().is_dir() {
                    gone.extend(
                        named
                            .range::<SharedPath, _>(Merge::children_range(path))
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
            match e.kind() {
                Kind::Whiteout => items.push(Item::Whiteout(path.clone()), layers),
                Kind::Opaque => items.push(Item::Opaque(path.clone()), layers),
                Kind::File | Kind::Hardlink if root_for.contains_key(&ei) => {
                    let root = root_for[&ei];
                    let list = names.entry(root).or_default();
                    let link_to = list.first().cloned();
                    list.push(path.clone());
                    named.insert(path.clone(), root);
                    stats.files += 1;
                    items.push(
                        Item::Entry {
                            path: path.clone(),
                            layer: li as u32,
                            index: root as u32,
                            link_to,
                        },
                        layers,
                    );
                }
                _ => {
                    if !e.kind().is_dir() {
                        stats.files += 1;
                    }
                    // A hard link to a lower layer names its target's real
                    // path.
                    let link_to = moved_links.get(&(li as u32, ei as u32)).cloned();
                    items.push(
                        Item::Entry {
                            path: path.clone(),
                            layer: li as u32,
                            index: ei as u32,
                            link_to,
                        },
                        layers,
                    );
                }
            }
        }
        out.push((items, stats));

        // This layer now hides things from the ones below.
        protected.extend(cross_targets.into_iter().map(SharedPath::from));
        for (e, path) in layer.entries.iter().zip(real) {
            match e.kind() {
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
