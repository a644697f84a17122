//! Where the bytes of an image are, path by path: the largest directories
//! and files of the merged tree, every wasted path (shadowed or deleted by
//! a later layer, duplicate content), every path the filter removes, and
//! the tree by size for a treemap, small files folded into their directory.
//! The squash stage fills it (`squash/details.rs`); `slim analyze` and the
//! HTML report read it.

use crate::layer::shared_path::SharedPath;
use std::collections::{BTreeMap, BinaryHeap, HashMap};

use serde::Serialize;

/// What a path is to the slimming: the treemap's colours.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Class {
    /// A profile removes it.
    Removed,
    /// Content a later layer replaced or deleted.
    Shadowed,
    /// A copy of another file's content (becomes a hard link).
    Duplicate,
    /// A rule would remove it; a safety keep saves it.
    Safety,
    Kept,
}

impl Class {
    pub const ALL: [Class; 5] = [
        Class::Removed,
        Class::Shadowed,
        Class::Duplicate,
        Class::Safety,
        Class::Kept,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Class::Removed => "would be removed",
            Class::Shadowed => "shadowed",
            Class::Duplicate => "duplicate",
            Class::Safety => "kept by safety",
            Class::Kept => "kept",
        }
    }
}

/// What to gather.
#[derive(Clone, Copy, Debug)]
pub struct DetailOptions {
    /// How many of the largest directories and files to list.
    pub top: usize,
    /// About how many nodes a treemap may have: files below its share of
    /// the bytes are folded into their directory.
    pub treemap_nodes: usize,
}

/// Per-path data of one image (see the module comment).
#[derive(Clone, Debug, Default, Serialize)]
pub struct PathData {
    /// The largest directories of the merged tree (every file's bytes
    /// counted below each of its directories; hard links once).
    pub top_dirs: Vec<TopPath>,
    /// The largest files of the merged tree.
    pub top_files: Vec<TopPath>,
    /// Content the image carries but a later layer replaced or deleted.
    pub shadowed: Vec<ShadowedPath>,
    /// Files whose content another file already holds.
    pub duplicates: Vec<DuplicatePath>,
    /// Paths the profiles remove (directories too), with their category.
    pub would_remove: Vec<RemovedPath>,
    /// The image as it is, shadowed content included.
    #[serde(skip)]
    pub before: SizeTree,
    /// What slimming leaves (duplicates become links: no bytes).
    #[serde(skip)]
    pub after: SizeTree,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct TopPath {
    pub path: String,
    pub bytes: u64,
    /// Non-directory entries below a directory (1 for a file).
    pub files: u64,
    /// The layer (1 = bottom) that wrote a file; none for a directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layer: Option<u32>,
    /// What becomes of a file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<Class>,
}

/// A path of the image as reports show it (`/` first, invalid UTF-8
/// replaced), kept as the tree's own path until it is shown: a report of a
/// million-file image lists every shadowed and duplicate path.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ShownPath(pub SharedPath);

impl std::fmt::Display for ShownPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::layer::entry::display(&self.0))
    }
}

impl std::fmt::Debug for ShownPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.to_string())
    }
}

impl Serialize for ShownPath {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct ShadowedPath {
    pub path: ShownPath,
    /// The layer (1 = bottom) that wrote the lost content.
    pub layer: u32,
    pub bytes: u64,
    /// The layer that replaced or deleted it.
    pub by_layer: u32,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct DuplicatePath {
    pub path: ShownPath,
    pub layer: u32,
    pub bytes: u64,
    /// The file that keeps the content.
    pub same_as: ShownPath,
}

#[derive(Clone, Debug, Serialize, PartialEq, Eq)]
pub struct RemovedPath {
    pub path: String,
    pub category: String,
    pub bytes: u64,
}

/// A tree by size: directories nest; leaves are files, or the small files
/// of one class folded together.
#[derive(Clone, Debug, Default)]
pub struct SizeTree {
    pub root: SizeNode,
    /// Bytes per class.
    pub totals: BTreeMap<Class, u64>,
    /// Files below this many bytes were folded into their directory.
    pub threshold: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SizeNode {
    pub name: String,
    pub bytes: u64,
    pub files: u64,
    /// A leaf's class; `None` for a directory.
    pub class: Option<Class>,
    /// Largest first.
    pub children: Vec<SizeNode>,
}

impl SizeNode {
    /// Nodes in the tree, this one included.
    pub fn count(&self) -> usize {
        1 + self.children.iter().map(SizeNode::count).sum::<usize>()
    }
}

/// One input of [`size_tree`]: a non-directory path.
#[derive(Clone, Copy)]
pub struct Leaf<'a> {
    pub path: &'a [u8],
    pub bytes: u64,
    /// A path some higher layer replaced or deleted: the layer (1 = bottom)
    /// that wrote it, shown after the name (`(layer 2, shadowed)`), which
    /// also keeps it apart from a live path of the same name. 0: live.
    pub shadowed_in: u32,
    pub class: Class,
}

/// The directory paths of `path`, root (`""`) first, `path` excluded.
fn dirs_of(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    std::iter::once(&path[..0]).chain(
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(move |(i, _)| &path[..i]),
    )
}

fn name_of(path: &[u8]) -> String {
    let start = path.iter().rposition(|b| *b == b'/').map_or(0, |i| i + 1);
    String::from_utf8_lossy(&path[start..]).into_owned()
}

/// Directory sizes: bytes and files below each directory of `leaves`.
pub fn dir_sizes<'a>(
    leaves: impl Iterator<Item = (&'a [u8], u64)>,
) -> HashMap<&'a [u8], (u64, u64)> {
    let mut sizes: HashMap<&[u8], (u64, u64)> = HashMap::new();
    for (path, bytes) in leaves {
        for d in dirs_of(path) {
            let s = sizes.entry(d).or_default();
            s.0 += bytes;
            s.1 += 1;
        }
    }
    sizes
}

/// The `n` largest directories (the root left out), largest first, ties by
/// path.
pub fn top_dirs(sizes: &HashMap<&[u8], (u64, u64)>, n: usize) -> Vec<TopPath> {
    let mut heap = BinaryHeap::new();
    for (path, (bytes, files)) in sizes {
        if path.is_empty() {
            continue;
        }
        heap.push(std::cmp::Reverse((
            *bytes,
            std::cmp::Reverse(*path),
            *files,
        )));
        if heap.len() > n {
            heap.pop();
        }
    }
    let mut v: Vec<_> = heap.into_iter().map(|r| r.0).collect();
    v.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
    v.into_iter()
        .map(|(bytes, path, files)| TopPath {
            path: crate::layer::entry::display(path.0),
            bytes,
            files,
            layer: None,
            class: None,
        })
        .collect()
}

/// A candidate of [`TopFiles`]: bytes, then path (reversed: the first
/// path wins a tie), layer, class.
type Candidate = std::cmp::Reverse<(u64, std::cmp::Reverse<SharedPath>, u32, Class)>;

/// Keeps the `n` largest of what is pushed (ties: the first path).
pub struct TopFiles {
    n: usize,
    heap: BinaryHeap<Candidate>,
}

impl TopFiles {
    pub fn new(n: usize) -> TopFiles {
        TopFiles {
            n,
            heap: BinaryHeap::new(),
        }
    }

    pub fn push(&mut self, path: &SharedPath, bytes: u64, layer: u32, class: Class) {
        if self.n == 0 {
            return;
        }
        self.heap.push(std::cmp::Reverse((
            bytes,
            std::cmp::Reverse(path.clone()),
            layer,
            class,
        )));
        if self.heap.len() > self.n {
            self.heap.pop();
        }
    }

    pub fn finish(self) -> Vec<TopPath> {
        let mut v: Vec<_> = self.heap.into_iter().map(|r| r.0).collect();
        v.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        v.into_iter()
            .map(|(bytes, path, layer, class)| TopPath {
                path: crate::layer::entry::display(&path.0),
                bytes,
                files: 1,
                layer: Some(layer),
                class: Some(class),
            })
            .collect()
    }
}

/// Arena node while building.
#[derive(Default)]
struct Building {
    name: String,
    class: Option<Class>,
    bytes: u64,
    files: u64,
    children: HashMap<String, usize>,
    /// Folded small files per class: (bytes, files).
    folded: BTreeMap<Class, (u64, u64)>,
}

/// The tree of `leaves` by size, with about `max_nodes` nodes at most:
/// a directory or file smaller than total / `max_nodes` is folded into
/// the nearest directory above it that is not.
/// `leaves` is called twice (directory sizes first, then the tree), so the
/// leaves need not all be in memory at once.
pub fn size_tree<'a, I: Iterator<Item = Leaf<'a>>>(
    leaves: impl Fn() -> I,
    max_nodes: usize,
) -> SizeTree {
    let sizes = dir_sizes(leaves().map(|l| (l.path, l.bytes)));
    let total = sizes.get(&b""[..]).map_or(0, |s| s.0);
    let threshold = (total / max_nodes.max(1) as u64).max(1);
    let mut arena: Vec<Building> = vec![Building::default()];
    let mut totals: BTreeMap<Class, u64> = BTreeMap::new();
    for leaf in leaves() {
        *totals.entry(leaf.class).or_default() += leaf.bytes;
        // Down from the root through directories big enough to show.
        let mut at = 0usize;
        let mut whole = true;
        for d in dirs_of(leaf.path).skip(1) {
            if sizes.get(d).map_or(0, |s| s.0) < threshold {
                whole = false;
                break;
            }
            let key = format!("{}/", name_of(d));
            at = match arena[at].children.get(&key) {
                Some(&i) => i,
                None => {
                    let i = arena.len();
                    arena.push(Building {
                        name: name_of(d),
                        ..Building::default()
                    });
                    arena[at].children.insert(key, i);
                    i
                }
            };
        }
        if whole && leaf.bytes >= threshold {
            let mut name = name_of(leaf.path);
            if leaf.shadowed_in > 0 {
                name = format!("{name} (layer {}, shadowed)", leaf.shadowed_in);
            }
            let i = arena.len();
            arena.push(Building {
                name: name.clone(),
                class: Some(leaf.class),
                bytes: leaf.bytes,
                files: 1,
                ..Building::default()
            });
            // A second leaf of the same name (cannot happen for real
            // paths) stays apart.
            let mut key = name;
            while arena[at].children.contains_key(&key) {
                key.push('\0');
            }
            arena[at].children.insert(key, i);
        } else {
            let f = arena[at].folded.entry(leaf.class).or_default();
            f.0 += leaf.bytes;
            f.1 += 1;
        }
    }
    let mut root = finish(&mut arena, 0);
    root.name = "/".to_string();
    SizeTree {
        root,
        totals,
        threshold,
    }
}

fn finish(arena: &mut Vec<Building>, i: usize) -> SizeNode {
    let b = std::mem::take(&mut arena[i]);
    let mut children: Vec<SizeNode> = b.children.values().map(|&c| finish(arena, c)).collect();
    for (class, (bytes, files)) in &b.folded {
        children.push(SizeNode {
            name: format!("({files} small file{})", if *files == 1 { "" } else { "s" }),
            bytes: *bytes,
            files: *files,
            class: Some(*class),
            children: Vec::new(),
        });
    }
    children.sort_by(|a, b| b.bytes.cmp(&a.bytes).then(a.name.cmp(&b.name)));
    if b.class.is_some() {
        return SizeNode {
            name: b.name,
            bytes: b.bytes,
            files: b.files,
            class: b.class,
            children,
        };
    }
    SizeNode {
        name: b.name,
        bytes: children.iter().map(|c| c.bytes).sum(),
        files: children.iter().map(|c| c.files).sum(),
        class: None,
        children,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf(p: &str, bytes: u64, class: Class) -> Leaf<'_> {
        Leaf {
            path: p.as_bytes(),
            bytes,
            class,
            shadowed_in: 0,
        }
    }

    #[test]
    fn small_files_fold_into_the_nearest_shown_directory() {
        let leaves = [
            leaf("usr/lib/big", 600, Class::Kept),
            leaf("usr/lib/a", 5, Class::Removed),
            leaf("usr/lib/b", 5, Class::Removed),
            leaf("usr/share/tiny/x", 3, Class::Kept),
            leaf("etc/conf", 387, Class::Safety),
        ];
        // total 1000, 100 nodes: files under 10 bytes fold.
        let t = size_tree(|| leaves.iter().copied(), 100);
        assert_eq!(t.threshold, 10);
        assert_eq!(t.root.bytes, 1000);
        assert_eq!(t.root.files, 5);
        let usr = &t.root.children[0];
        assert_eq!((usr.name.as_str(), usr.bytes), ("usr", 613));
        let lib = &usr.children[0];
        assert_eq!(lib.children[0].name, "big");
        assert_eq!(lib.children[1].name, "(2 small files)");
        assert_eq!(lib.children[1].class, Some(Class::Removed));
        assert_eq!(lib.children[1].bytes, 10);
        // usr/share (3 bytes) is too small to show: folded into usr.
        assert_eq!(usr.children[1].name, "(1 small file)");
        assert_eq!(t.totals[&Class::Removed], 10);
        assert_eq!(t.totals[&Class::Safety], 387);
    }

    #[test]
    fn tops_are_largest_first_with_ties_by_path() {
        let leaves = [
            leaf("a/x", 5, Class::Kept),
            leaf("b/y", 5, Class::Kept),
            leaf("b/z", 1, Class::Kept),
        ];
        let sizes = dir_sizes(leaves.iter().map(|l| (l.path, l.bytes)));
        let dirs = top_dirs(&sizes, 2);
        assert_eq!(dirs[0].path, "/b");
        assert_eq!((dirs[0].bytes, dirs[0].files), (6, 2));
        assert_eq!(dirs[1].path, "/a");
        let mut top = TopFiles::new(2);
        for l in &leaves {
            top.push(&SharedPath::from(l.path), l.bytes, 1, l.class);
        }
        let files: Vec<String> = top.finish().into_iter().map(|t| t.path).collect();
        assert_eq!(files, ["/a/x", "/b/y"]);
    }
}
