//! Dedup: identical regular files the upper layers wrote (same content
//! hash, size, mode, owner and xattrs) become one inode, so the plan writes
//! the content once and hard links for the other names.

use crate::layer::shared_path::SharedPath;

use super::super::filter::Count;
use super::model::{InodeSet, Merge, NO_INODE};

/// Called per duplicate: its path, its inode, the canonical inode and path.
pub(super) type Found<'f> = dyn FnMut(&SharedPath, u32, u32, &SharedPath) + 'f;

/// A candidate with the first half of its content hash: (hash half,
/// inode, place in the tree).
type Hashed = ([u8; 16], u32, u32);

/// The hash half of a file whose spool could not be read: such files are
/// never merged.
const UNREAD: [u8; 16] = [0xff; 16];

/// Files hashed in one batch (whole size groups, so one large group makes
/// a larger batch; 24 bytes each, as the group alone took before).
const HASH_BATCH: usize = 4096;

/// Threads that hash dedup candidates: the machine's cores, up to 4.
fn hash_threads() -> usize {
    std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(4)
}

/// Inode -> the inode it is merged into. Only the merged inodes are kept
/// (in inode order): 8 bytes a duplicate, not 4 bytes an inode.
#[derive(Debug, Default)]
pub(super) struct Alias(Vec<(u32, u32)>);

impl Alias {
    /// The inode that stands for `inode`: its canonical inode, or itself.
    pub(super) fn of(&self, inode: u32) -> u32 {
        match self.0.binary_search_by_key(&inode, |a| a.0) {
            Ok(i) => self.0[i].1,
            Err(_) => inode,
        }
    }
}

/// Dedup candidates one pass holds (or an eighth of them all, if more),
/// unless a single size has more.
const PASS_CANDIDATES: usize = 1 << 17;

/// How many [`size_class`]es there are.
const SIZE_CLASSES: usize = 256 + 56 * 128;

/// A class of file sizes, in size order: each size below 256 its own, then
/// 128 classes for each power of two (sizes agreeing in their top 8 bits).
fn size_class(size: u64) -> usize {
    let bits = 64 - size.leading_zeros() as usize;
    if bits <= 8 {
        return size as usize;
    }
    let top = (size >> (bits - 8)) as usize;
    256 + (bits - 9) * 128 + (top - 128)
}

impl<'a> Merge<'a> {
    /// Merges inodes of identical files the upper layers wrote, paths
    /// `skip` names left alone; returns inode -> canonical inode.
    pub(super) fn dedup(
        &self,
        enabled: bool,
        skip: &dyn Fn(&[u8]) -> bool,
        stats: &mut Count,
    ) -> Alias {
        let mut merged: Vec<(u32, u32)> = Vec::new();
        if enabled {
            self.each_duplicate(skip, &mut |_, inode, canon, _| {
                merged.push((inode, canon));
                stats.add(1, self.inode_size(inode));
            });
        }
        merged.sort_unstable();
        merged.shrink_to_fit();
        Alias(merged)
    }

    /// The size of an inode's content.
    pub(super) fn inode_size(&self, inode: u32) -> u64 {
        let (l, i) = self.creators[inode as usize];
        self.layers[l as usize].entries[i as usize].size()
    }

    /// Calls `found(path, inode, canonical inode, canonical path)` for each
    /// path [`Merge::dedup`] turns into a link, paths `skip` says are gone
    /// left out. Candidates are sorted by size (ties keep path order); only
    /// files that share their size with another are hashed, from the
    /// spool, and each group of equal (hash, size, mode, owner, xattrs)
    /// keeps its first path: the same groups and the same canonical paths
    /// as hashing every file while decoding, for a fraction of the hashing
    /// and no per-entry hash in memory.
    ///
    /// A candidate is 16 bytes (size, inode, place in the tree). They are
    /// taken a range of sizes at a time, smallest first, each range
    /// holding about [`PASS_CANDIDATES`] of them (one size is never split):
    /// on a million files, about 2 MB at once instead of 16 MB. A first walk
    /// counts the files of each [`size_class`] to cut the ranges. The
    /// paths of the duplicates found are looked up in a last walk of the
    /// tree.
    pub(super) fn each_duplicate(&self, skip: &dyn Fn(&[u8]) -> bool, found: &mut Found<'_>) {
        self.each_duplicate_by(skip, found, PASS_CANDIDATES)
    }

    /// [`Merge::each_duplicate`], about `pass` candidates a pass.
    fn each_duplicate_by(&self, skip: &dyn Fn(&[u8]) -> bool, found: &mut Found<'_>, pass: usize) {
        let mut seen = InodeSet::new(self.creators.len());
        let mut each_candidate = |f: &mut dyn FnMut(u64, u32, u32)| {
            seen.clear();
            for (place, (path, node)) in self.nodes.iter().enumerate() {
                if node.inode == NO_INODE
                    || !self.is_upper(*node)
                    || skip(path)
                    || !seen.insert(node.inode)
                {
                    continue;
                }
                let (cl, ci) = self.creators[node.inode as usize];
                if (cl as usize) < self.base {
                    continue;
                }
                let size = self.layers[cl as usize].entries[ci as usize].size();
                if size > 0 {
                    f(size, node.inode, place as u32);
                }
            }
        };
        let mut per_class = vec![0usize; SIZE_CLASSES];
        each_candidate(&mut |size, _, _| per_class[size_class(size)] += 1);
        // At most about 16 walks of the tree, however many files.
        let per_pass = pass.max(per_class.iter().sum::<usize>() / 8);
        // (place, inode, canonical inode, canonical place), as found.
        let mut dups: Vec<(u32, u32, u32, u32)> = Vec::new();
        let mut class = 0;
        while class < SIZE_CLASSES {
            // Classes [class, end) make this pass.
            let mut end = class;
            let mut count = 0;
            while end < SIZE_CLASSES && (count == 0 || count + per_class[end] <= per_pass) {
                count += per_class[end];
                end += 1;
            }
            if count > 1 {
                let mut cands: Vec<(u64, u32, u32)> = Vec::with_capacity(count);
                each_candidate(&mut |size, inode, place| {
                    if (class..end).contains(&size_class(size)) {
                        cands.push((size, inode, place));
                    }
                });
                self.find_equal(cands, &mut dups);
            }
            class = end;
        }
        drop(seen);
        if dups.is_empty() {
            return;
        }
        let mut places: Vec<u32> = dups.iter().flat_map(|d| [d.0, d.3]).collect();
        places.sort_unstable();
        places.dedup();
        let mut wanted = places.iter().peekable();
        let mut paths: Vec<&SharedPath> = Vec::with_capacity(places.len());
        for (place, path) in self.nodes.keys().enumerate() {
            match wanted.peek() {
                None => break,
                Some(&&w) if w as usize == place => {
                    wanted.next();
                    paths.push(path);
                }
                Some(_) => {}
            }
        }
        let path_at = |place: u32| paths[places.binary_search(&place).expect("a place walked")];
        for (place, inode, canon, canon_place) in dups {
            found(path_at(place), inode, canon, path_at(canon_place));
        }
    }

    /// Appends to `dups` the duplicates among `cands` (size, inode, place
    /// in path order): `(place, inode, canonical inode, canonical place)`,
    /// by size, then as their groups sort.
    ///
    /// The files of sizes shared by two or more are hashed a batch of
    /// about [`HASH_BATCH`] at a time (whole size groups), on
    /// [`hash_threads`] threads, keeping half of each hash; the files
    /// whose halves agree are read again for their whole hash.
    fn find_equal(&self, mut cands: Vec<(u64, u32, u32)>, dups: &mut Vec<(u32, u32, u32, u32)>) {
        cands.sort_unstable_by_key(|&(size, _, place)| (size, place));
        let key = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            let e = &self.layers[l as usize].entries[i as usize];
            (e.mode(), e.owner())
        };
        let xattrs = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            self.layers[l as usize].entries[i as usize].xattrs()
        };
        let order = |a: u32, b: u32| key(a).cmp(&key(b)).then_with(|| xattrs(a).cmp(xattrs(b)));
        let mut buf = vec![0u8; crate::spool::IO_CHUNK];
        // (whole hash, inode, place) of the canonical files of a run.
        let mut canons: Vec<([u8; 32], u32, u32)> = Vec::new();
        let mut batch: Vec<Hashed> = Vec::new();
        let mut sizes: Vec<usize> = Vec::new();
        let mut groups = cands
            .chunk_by(|a, b| a.0 == b.0)
            .filter(|g| g.len() > 1)
            .peekable();
        while groups.peek().is_some() {
            batch.clear();
            sizes.clear();
            while let Some(g) =
                groups.next_if(|g| batch.is_empty() || batch.len() + g.len() <= HASH_BATCH)
            {
                batch.extend(g.iter().map(|&(_, inode, place)| ([0u8; 16], inode, place)));
                sizes.push(g.len());
            }
            self.hash_halves(&mut batch);
            let mut rest = &mut batch[..];
            for &n in &sizes {
                let (group, after) = rest.split_at_mut(n);
                rest = after;
                // Stable: equal files stay in path order.
                group.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| order(a.1, b.1)));
                // A run of equal hash halves (and mode, owner, xattrs), in
                // path order: the whole hashes decide, read again (only
                // files that are, all but surely, duplicates are read
                // twice). Each distinct content keeps its first path.
                for run in group.chunk_by(|a, b| a.0 == b.0 && order(a.1, b.1).is_eq()) {
                    if run.len() < 2 || run[0].0 == UNREAD {
                        continue;
                    }
                    canons.clear();
                    for &(_, inode, place) in run {
                        let Some(hash) = self.content_hash(inode, &mut buf) else {
                            continue;
                        };
                        match canons.iter().find(|c| c.0 == hash) {
                            Some(&(_, canon, canon_place)) => {
                                dups.push((place, inode, canon, canon_place))
                            }
                            None => canons.push((hash, inode, place)),
                        }
                    }
                }
            }
        }
    }

    /// Sets the first half of each candidate's content hash, the files
    /// shared out among [`hash_threads`] threads in contiguous parts; a
    /// file whose spool cannot be read gets [`UNREAD`] (and is not
    /// deduplicated).
    fn hash_halves(&self, batch: &mut [Hashed]) {
        let half = |part: &mut [Hashed]| {
            let mut buf = vec![0u8; crate::spool::IO_CHUNK];
            for (h, inode, _) in part {
                *h = match self.content_hash(*inode, &mut buf) {
                    Some(whole) => whole[..16].try_into().expect("16 of 32 bytes"),
                    None => UNREAD,
                };
            }
        };
        let threads = hash_threads().min(batch.len().div_ceil(64)).max(1);
        let part = batch.len().div_ceil(threads);
        let (first, rest) = batch.split_at_mut(part.min(batch.len()));
        std::thread::scope(|s| {
            for p in rest.chunks_mut(part) {
                s.spawn(move || half(p));
            }
            half(first);
        });
    }

    /// SHA-256 of an inode's content, read from its layer's spool through
    /// `buf`; `None` (the file is not deduplicated) if the spool cannot be
    /// read.
    fn content_hash(&self, inode: u32, buf: &mut [u8]) -> Option<[u8; 32]> {
        use sha2::Digest as _;
        let (l, i) = self.creators[inode as usize];
        let layer = &self.layers[l as usize];
        let e = &layer.entries[i as usize];
        let mut hasher = sha2::Sha256::new();
        if let Err(err) = layer.copy_content(e, &mut hasher, buf) {
            tracing::warn!(
                "{}: reading its content back from the spool: {err}; not deduplicated",
                e.display_path()
            );
            return None;
        }
        Some(hasher.finalize().into())
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{Spec, indexes};

    use super::{HASH_BATCH, size_class};

    const FILE: tar::EntryType = tar::EntryType::Regular;
    const DIR: tar::EntryType = tar::EntryType::Directory;

    /// Size classes follow size order, every size below 256 alone, and
    /// the largest size has the last class.
    #[test]
    fn size_classes_follow_size_order() {
        let mut sizes: Vec<u64> = (0..5000).collect();
        for bits in 9..64 {
            for d in [0u64, 1, 2, 3] {
                sizes.push((1u64 << bits) - 1 + d);
                sizes.push((3u64 << (bits - 1)) + d);
            }
        }
        sizes.push(u64::MAX);
        sizes.sort_unstable();
        for w in sizes.windows(2) {
            assert!(size_class(w[0]) <= size_class(w[1]), "{} {}", w[0], w[1]);
        }
        for s in 0..256 {
            assert_eq!(size_class(s), s as usize);
        }
        assert_eq!(size_class(256), 256);
        assert_eq!(size_class(u64::MAX), super::SIZE_CLASSES - 1);
    }

    /// Taken a few candidates at a time, the duplicates found are the same,
    /// in the same order, as all at once.
    /// A size group larger than a hashing batch, and groups spread over
    /// several batches and threads: every duplicate links to the first
    /// path with its content, as a plain comparison of contents says.
    #[test]
    fn batches_and_threads_find_every_duplicate() {
        let mut files: Vec<(String, Vec<u8>)> = Vec::new();
        // One size, more files than a batch, 997 distinct contents.
        for i in 0..(HASH_BATCH + 900) {
            let v = ((i * 7) % 997) as u32;
            files.push((format!("a/f{i:05}"), v.to_le_bytes().to_vec()));
        }
        // Many small groups of other sizes.
        for i in 0..3000usize {
            let len = 5 + i % 40;
            files.push((format!("b/g{i:04}"), vec![(i % 3) as u8; len]));
        }
        let mut layer: Vec<Spec<'_>> = vec![("a/", DIR, "", b""), ("b/", DIR, "", b"")];
        for (n, c) in &files {
            layer.push((n.as_str(), FILE, "", c.as_slice()));
        }
        let idx = indexes(&[&layer[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let mut found = std::collections::BTreeMap::new();
        merged.m.each_duplicate_by(
            &|_| false,
            &mut |path, _, _, cpath| {
                found.insert(path.to_vec(), cpath.to_vec());
            },
            usize::MAX,
        );
        let mut sorted = files.clone();
        sorted.sort();
        let mut first: std::collections::HashMap<&[u8], &str> = Default::default();
        let mut expected = std::collections::BTreeMap::new();
        for (name, content) in &sorted {
            match first.get(content.as_slice()) {
                Some(canon) => {
                    expected.insert(name.as_bytes().to_vec(), canon.as_bytes().to_vec());
                }
                None => {
                    first.insert(content, name);
                }
            }
        }
        assert!(expected.len() > HASH_BATCH, "{} duplicates", expected.len());
        assert_eq!(found, expected);
    }

    #[test]
    fn passes_find_what_one_pass_finds() {
        let contents: Vec<Vec<u8>> = (0..60u32)
            .map(|i| {
                let key = if i % 3 == 0 { i / 9 } else { i };
                format!("{key:x}")
                    .repeat(1 + (key % 5) as usize)
                    .into_bytes()
            })
            .collect();
        let names: Vec<String> = (0..60)
            .map(|i| format!("d/f{:02}", (i * 37) % 60))
            .collect();
        let mut layer: Vec<Spec<'_>> = vec![("d/", DIR, "", b"")];
        for (n, c) in names.iter().zip(&contents) {
            layer.push((n.as_str(), FILE, "", c.as_slice()));
        }
        let idx = indexes(&[&layer[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let found_by = |pass: usize| {
            let mut found = Vec::new();
            merged.m.each_duplicate_by(
                &|_| false,
                &mut |path, inode, canon, cpath| {
                    found.push((path.to_vec(), inode, canon, cpath.to_vec()));
                },
                pass,
            );
            found
        };
        let all = found_by(usize::MAX);
        assert!(all.len() >= 10, "{} duplicates", all.len());
        for pass in [1, 2, 3, 7] {
            assert_eq!(found_by(pass), all, "{pass} a pass");
        }
    }

    /// Files of one size with different contents stay apart, equal ones
    /// link to the first in path order, a file of another size with the
    /// same prefix is not a duplicate, empty files are never linked, and
    /// the second layer's files are checked across layers.
    #[test]
    fn equal_contents_link_to_the_first_path_and_equal_sizes_alone_do_not() {
        let lower: Vec<Spec<'_>> = vec![
            ("d/", DIR, "", b""),
            ("d/a", FILE, "", b"same"),
            ("d/b", FILE, "", b"diff"),
            ("d/c", FILE, "", b"same"),
            ("d/e", FILE, "", b"same+"),
            ("d/empty1", FILE, "", b""),
            ("d/empty2", FILE, "", b""),
        ];
        let upper: Vec<Spec<'_>> = vec![("d/f", FILE, "", b"same"), ("d/g", FILE, "", b"diff")];
        let idx = indexes(&[&lower[..], &upper[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let mut found = Vec::new();
        merged
            .m
            .each_duplicate(&|_| false, &mut |path, _, _, canon| {
                found.push((
                    String::from_utf8_lossy(path).into_owned(),
                    String::from_utf8_lossy(canon).into_owned(),
                ));
            });
        found.sort();
        let want = [("d/c", "d/a"), ("d/f", "d/a"), ("d/g", "d/b")];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(p, c)| (p.to_string(), c.to_string()))
            .collect();
        assert_eq!(found, want);
        // A skipped path is neither linked nor a canonical copy.
        let mut found = Vec::new();
        merged
            .m
            .each_duplicate(&|p| p == b"d/a", &mut |path, _, _, canon| {
                found.push((
                    String::from_utf8_lossy(path).into_owned(),
                    String::from_utf8_lossy(canon).into_owned(),
                ));
            });
        found.sort();
        assert_eq!(
            found,
            [
                ("d/f".to_string(), "d/c".to_string()),
                ("d/g".to_string(), "d/b".to_string())
            ]
        );
    }
}
