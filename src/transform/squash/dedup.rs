//! Dedup: identical regular files the upper layers wrote (same content
//! hash, size, mode, owner and xattrs) become one inode, so the plan writes
//! the content once and hard links for the other names.

use crate::layer::shared_path::SharedPath;

use super::super::filter::Count;
use super::model::{Merge, NO_INODE};

/// Called per duplicate: its path, its inode, the canonical inode and path.
pub(super) type Found<'f> = dyn FnMut(&SharedPath, u32, u32, &SharedPath) + 'f;

/// A candidate with its content hash: (hash, inode, path).
type Hashed<'p> = ([u8; 32], u32, &'p SharedPath);

impl<'a> Merge<'a> {
    /// Merges inodes of identical files the upper layers wrote, paths
    /// `skip` names left alone; returns inode -> canonical inode.
    pub(super) fn dedup(
        &self,
        enabled: bool,
        skip: &dyn Fn(&[u8]) -> bool,
        stats: &mut Count,
    ) -> Vec<u32> {
        let mut alias: Vec<u32> = (0..self.creators.len() as u32).collect();
        if enabled {
            self.each_duplicate(skip, &mut |_, inode, canon, _| {
                alias[inode as usize] = canon;
                stats.add(1, self.inode_size(inode));
            });
        }
        alias
    }

    /// The size of an inode's content.
    pub(super) fn inode_size(&self, inode: u32) -> u64 {
        let (l, i) = self.creators[inode as usize];
        self.layers[l as usize].entries[i as usize].size
    }

    /// Calls `found(path, inode, canonical inode, canonical path)` for each
    /// path [`Merge::dedup`] turns into a link, paths `skip` says are gone
    /// left out. Candidates are sorted by size (stable, so ties keep path
    /// order); only files that share their size with another are hashed,
    /// from the spool, and each group of equal (hash, size, mode, owner,
    /// xattrs) keeps its first path: the same groups and the same canonical
    /// paths as hashing every file while decoding, for a fraction of the
    /// hashing and no per-entry hash in memory.
    pub(super) fn each_duplicate(&self, skip: &dyn Fn(&[u8]) -> bool, found: &mut Found<'_>) {
        let mut seen = vec![false; self.creators.len()];
        // (size, inode, path), in path order.
        let mut cands: Vec<(u64, u32, &SharedPath)> = Vec::new();
        for (path, node) in &self.nodes {
            if node.inode == NO_INODE
                || !self.is_upper(*node)
                || skip(path)
                || std::mem::replace(&mut seen[node.inode as usize], true)
            {
                continue;
            }
            let (cl, ci) = self.creators[node.inode as usize];
            if (cl as usize) < self.base {
                continue;
            }
            let size = self.layers[cl as usize].entries[ci as usize].size;
            if size > 0 {
                cands.push((size, node.inode, path));
            }
        }
        drop(seen);
        cands.sort_by_key(|c| c.0);
        let key = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            let e = &self.layers[l as usize].entries[i as usize];
            (e.mode, &e.owner)
        };
        let xattrs = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            self.layers[l as usize].entries[i as usize].xattrs()
        };
        let order = |a: u32, b: u32| key(a).cmp(&key(b)).then_with(|| xattrs(a).cmp(xattrs(b)));
        let mut group: Vec<Hashed<'_>> = Vec::new();
        let mut buf = vec![0u8; crate::spool::IO_CHUNK];
        for same_size in cands.chunk_by(|a, b| a.0 == b.0) {
            if same_size.len() < 2 {
                continue;
            }
            group.clear();
            group.extend(same_size.iter().filter_map(|&(_, inode, path)| {
                Some((self.content_hash(inode, &mut buf)?, inode, path))
            }));
            group.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| order(a.1, b.1)));
            for equal in group.chunk_by(|a, b| a.0 == b.0 && order(a.1, b.1).is_eq()) {
                let (_, canon, canon_path) = equal[0];
                for &(_, inode, path) in &equal[1..] {
                    found(path, inode, canon, canon_path);
                }
            }
        }
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

    const FILE: tar::EntryType = tar::EntryType::Regular;
    const DIR: tar::EntryType = tar::EntryType::Directory;

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
