//! Dedup: identical regular files the upper layers wrote (same content
//! hash, size, mode, owner and xattrs) become one inode, so the plan writes
//! the content once and hard links for the other names.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::filter::Count;
use super::model::{Merge, NO_INODE};

/// Called per duplicate: its path, its inode, the canonical inode and path.
pub(super) type Found<'f> = dyn FnMut(&Arc<[u8]>, u32, u32, &Arc<[u8]>) + 'f;

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
    /// left out.
    pub(super) fn each_duplicate(&self, skip: &dyn Fn(&[u8]) -> bool, found: &mut Found<'_>) {
        type Key<'k> = (
            &'k [u8; 32],
            u64,
            u32,
            u64,
            u64,
            &'k [u8],
            &'k [u8],
            Vec<(&'k str, &'k [u8])>,
        );
        let mut first: HashMap<Key<'_>, (u32, &Arc<[u8]>)> = HashMap::new();
        let mut seen: HashSet<u32> = HashSet::new();
        // Sorted path order decides which copy stays: deterministic.
        for (path, node) in &self.nodes {
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
            let e = &self.layers[cl as usize].entries[ci as usize];
            let Some(hash) = e.content_hash.as_ref() else {
                continue;
            };
            if e.size == 0 {
                continue;
            }
            let key: Key<'_> = (
                hash,
                e.size,
                e.mode,
                e.uid,
                e.gid,
                &e.uname,
                &e.gname,
                e.xattrs().collect(),
            );
            match first.get(&key) {
                Some(&(canon, canon_path)) => found(path, node.inode, canon, canon_path),
                None => {
                    first.insert(key, (node.inode, path));
                }
            }
        }
    }
}
