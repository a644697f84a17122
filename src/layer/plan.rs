//! The plan of an output layer: the contract between the transform stage,
//! which decides what each output layer holds, and the encoder
//! ([`write`](super::write)), which writes it. An [`Item`] points back into
//! the decoded layers (`layers[layer].entries[index]`), so the encoder
//! streams file contents from their spool files; nothing is copied here.

use super::read::LayerIndex;
use super::shared_path::SharedPath;
use std::sync::Arc;

/// One item of an output layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    /// `layers[layer].entries[index]` written at `path` (its metadata and,
    /// for a file, its content), or as a hard link to `link_to`.
    Entry {
        path: SharedPath,
        layer: u32,
        index: u32,
        link_to: Option<SharedPath>,
    },
    /// A regular file with new content: the metadata of
    /// `layers[layer].entries[index]`, written at `path` with `content`
    /// (a package database without the packages that are gone).
    Rewritten {
        path: SharedPath,
        layer: u32,
        index: u32,
        content: Arc<[u8]>,
    },
    /// Delete this path from the layers below.
    Whiteout(SharedPath),
    /// Hide what the layers below have in this directory.
    Opaque(SharedPath),
}

impl Item {
    /// Sort key: paths in byte order, an opaque marker right after its
    /// directory and before the directory's children (as if its path were
    /// the directory's followed by a NUL byte).
    pub(crate) fn key(&self) -> impl Iterator<Item = u8> + '_ {
        let (path, suffix): (&[u8], &[u8]) = match self {
            Item::Entry { path, .. } | Item::Rewritten { path, .. } | Item::Whiteout(path) => {
                (path, b"")
            }
            Item::Opaque(dir) => (dir, b"\0"),
        };
        path.iter().chain(suffix).copied()
    }
}

/// The entries of one output layer, in the order they are written.
///
/// A plan holds an item for every path of the output (a million on a
/// million-file image), so it is stored compactly: 8 bytes an item (where
/// its entry is), its path read from that entry. The rest sits beside, by
/// position: the paths that are not their entry's own (a second name of an
/// inode, an entry written through a symlinked parent, the markers), hard
/// link targets and rewritten contents. A plan is read with the layers it
/// was built from ([`Plan::iter`]).
#[derive(Clone, Debug, Default)]
pub struct Plan {
    slots: Vec<Slot>,
    /// `(position, path)` of the items whose path is not their entry's
    /// own, in position order.
    paths: Vec<(u32, SharedPath)>,
    /// `(position, target)` of the entries written as hard links, in
    /// position order.
    links: Vec<(u32, SharedPath)>,
    /// `(position, content)` of the rewritten files, in position order.
    contents: Vec<(u32, Arc<[u8]>)>,
}

/// One item: its entry (`layer`, `index`), or for a marker a `layer` no
/// image has.
#[derive(Clone, Copy, Debug)]
struct Slot {
    layer: u32,
    index: u32,
}

// One per path of the output: keep it one word.
const _: () = assert!(std::mem::size_of::<Slot>() == 8);

const WHITEOUT: u32 = u32::MAX;
const OPAQUE: u32 = u32::MAX - 1;

/// The next side-table value at position `at`, if any (the tables are
/// read in position order).
fn take_at<'a, T>(
    table: &mut std::iter::Peekable<std::slice::Iter<'a, (u32, T)>>,
    at: u32,
) -> Option<&'a T> {
    table.next_if(|(p, _)| *p == at).map(|(_, v)| v)
}

fn find_at<T>(table: &[(u32, T)], at: u32) -> Option<&T> {
    table
        .binary_search_by_key(&at, |(p, _)| *p)
        .ok()
        .map(|i| &table[i].1)
}

impl Plan {
    pub fn with_capacity(items: usize) -> Plan {
        Plan {
            slots: Vec::with_capacity(items),
            ..Plan::default()
        }
    }

    /// A plan of `items`, in their order, over `layers`.
    pub fn from_items(items: impl IntoIterator<Item = Item>, layers: &[Arc<LayerIndex>]) -> Plan {
        let items = items.into_iter();
        let mut plan = Plan::with_capacity(items.size_hint().0);
        for item in items {
            plan.push(item, layers);
        }
        plan
    }

    pub fn len(&self) -> usize {
        self.slots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Appends `item`, whose entry is in `layers`.
    ///
    /// # Panics
    /// When the plan already holds `u32::MAX` items, an entry names a
    /// layer at `u32::MAX - 1` or above (the index limits keep both far
    /// below), or an entry that `layers` does not hold.
    pub fn push(&mut self, item: Item, layers: &[Arc<LayerIndex>]) {
        let at = u32::try_from(self.slots.len()).expect("a plan holds fewer than 2^32 items");
        let (path, layer, index, entry) = match item {
            Item::Entry {
                path,
                layer,
                index,
                link_to,
            } => {
                if let Some(target) = link_to {
                    self.links.push((at, target));
                }
                (path, layer, index, true)
            }
            Item::Rewritten {
                path,
                layer,
                index,
                content,
            } => {
                self.contents.push((at, content));
                (path, layer, index, true)
            }
            Item::Whiteout(path) => (path, WHITEOUT, 0, false),
            Item::Opaque(path) => (path, OPAQUE, 0, false),
        };
        assert!(
            !entry || layer < OPAQUE,
            "layer {layer} is past what a plan names"
        );
        let own = entry && layers[layer as usize].entries[index as usize].path == path;
        if !own {
            self.paths.push((at, path));
        }
        self.slots.push(Slot { layer, index });
    }

    /// The path of the item at `at`.
    pub fn path<'a>(&'a self, at: usize, layers: &'a [Arc<LayerIndex>]) -> &'a SharedPath {
        let slot = self.slots[at];
        match find_at(&self.paths, at as u32) {
            Some(path) => path,
            None => &layers[slot.layer as usize].entries[slot.index as usize].path,
        }
    }

    /// Writes the entry at `at` with `content` instead of its own (it must
    /// be an entry that is not a hard link).
    pub fn rewrite(&mut self, at: usize, content: Arc<[u8]>) {
        assert!(
            self.slots[at].layer < OPAQUE,
            "item {at} is a marker, not an entry"
        );
        let at = at as u32;
        assert!(
            find_at(&self.links, at).is_none(),
            "item {at} is a hard link"
        );
        match self.contents.binary_search_by_key(&at, |c| c.0) {
            Ok(i) => self.contents[i].1 = content,
            Err(i) => self.contents.insert(i, (at, content)),
        }
    }

    /// The items in order; `layers` are those the plan was built over.
    pub fn iter<'a>(&'a self, layers: &'a [Arc<LayerIndex>]) -> impl Iterator<Item = Item> + 'a {
        let mut paths = self.paths.iter().peekable();
        let mut links = self.links.iter().peekable();
        let mut contents = self.contents.iter().peekable();
        self.slots.iter().enumerate().map(move |(at, slot)| {
            let at = at as u32;
            let (layer, index) = (slot.layer, slot.index);
            let path = match take_at(&mut paths, at) {
                Some(path) => path.clone(),
                None => layers[layer as usize].entries[index as usize].path.clone(),
            };
            match layer {
                WHITEOUT => return Item::Whiteout(path),
                OPAQUE => return Item::Opaque(path),
                _ => {}
            }
            if let Some(content) = take_at(&mut contents, at) {
                return Item::Rewritten {
                    path,
                    layer,
                    index,
                    content: Arc::clone(content),
                };
            }
            Item::Entry {
                path,
                layer,
                index,
                link_to: take_at(&mut links, at).cloned(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::Digest;
    use crate::image::media::Compression;
    use crate::layer::entry::{Entry, Kind};

    fn p(s: &str) -> SharedPath {
        SharedPath::from(s.as_bytes())
    }

    /// Two layers of a few entries each.
    fn layers() -> Vec<Arc<LayerIndex>> {
        let layer = |paths: &[&str]| {
            Arc::new(LayerIndex {
                entries: paths
                    .iter()
                    .map(|p| Entry::new(p.as_bytes(), Kind::File, 0o644, 0))
                    .collect(),
                spool: Arc::new(tempfile::tempfile().unwrap()),
                diff_id: Digest::sha256_of(b""),
                uncompressed_size: 0,
                compression: Compression::None,
            })
        };
        vec![
            layer(&["", "a", "b", "c/db", "e"]),
            layer(&["x", "y", "c/db2"]),
        ]
    }

    /// Every kind of item comes back as it went in, in order, whether its
    /// path is its entry's own or not, and a rewrite turns just that entry
    /// into a rewritten file.
    #[test]
    fn items_come_back_as_pushed() {
        let layers = layers();
        let items = vec![
            Item::Entry {
                path: p(""),
                layer: 0,
                index: 0,
                link_to: None,
            },
            // Another entry's path.
            Item::Entry {
                path: p("a"),
                layer: 1,
                index: 1,
                link_to: None,
            },
            Item::Entry {
                path: p("b"),
                layer: 0,
                index: 1,
                link_to: Some(p("a")),
            },
            Item::Opaque(p("c")),
            Item::Rewritten {
                path: p("c/db"),
                layer: 0,
                index: 3,
                content: Arc::from(&b"new"[..]),
            },
            Item::Whiteout(p("c/gone")),
            Item::Entry {
                path: p("d"),
                layer: 1,
                index: 2,
                link_to: Some(p("c/db")),
            },
            Item::Entry {
                path: p("e"),
                layer: 0,
                index: 4,
                link_to: None,
            },
        ];
        let mut plan = Plan::from_items(items.iter().cloned(), &layers);
        assert_eq!(plan.len(), items.len());
        assert_eq!(plan.iter(&layers).collect::<Vec<_>>(), items);
        // Only the paths that are not their entry's own are kept beside.
        assert_eq!(plan.paths.len(), 5);
        for (at, want) in [(0, ""), (1, "a"), (5, "c/gone"), (6, "d"), (7, "e")] {
            assert_eq!(&plan.path(at, &layers)[..], want.as_bytes());
        }

        plan.rewrite(7, Arc::from(&b"other"[..]));
        let mut want = items.clone();
        want[7] = Item::Rewritten {
            path: p("e"),
            layer: 0,
            index: 4,
            content: Arc::from(&b"other"[..]),
        };
        assert_eq!(plan.iter(&layers).collect::<Vec<_>>(), want);
    }

    #[test]
    #[should_panic(expected = "is a hard link")]
    fn a_hard_link_is_not_rewritten() {
        let layers = layers();
        let mut plan = Plan::default();
        plan.push(
            Item::Entry {
                path: p("b"),
                layer: 0,
                index: 2,
                link_to: Some(p("a")),
            },
            &layers,
        );
        plan.rewrite(0, Arc::from(&b"x"[..]));
    }
}
