//! Dedup: identical regular files the upper layers wrote (same content
//! hash, size, mode, owner and xattrs) become one inode, so the plan writes
//! the content once and hard links for the other names.

use std::collections::{HashMap, HashSet};

use super::super::filter::Count;
use super::model::{Merge, NO_INODE};

impl<'a> Merge<'a> {
    /// Merges inodes of identical files the upper layers wrote; returns
    /// inode -> canonical inode.
    pub(super) fn dedup(&self, enabled: bool, stats: &mut Count) -> Vec<u32> {
        let mut alias: Vec<u32> = (0..self.creators.len() as u32).collect();
        if !enabled {
            return alias;
        }
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
        let mut first: HashMap<Key<'_>, u32> = HashMap::new();
        let mut seen: HashSet<u32> = HashSet::new();
        // Sorted path order decides which copy stays: deterministic.
        for node in self.nodes.values() {
            if node.inode == NO_INODE || !self.is_upper(*node) || !seen.insert(node.inode) {
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
                Some(&canon) => {
                    alias[node.inode as usize] = canon;
                    stats.add(1, e.size);
                }
                None => {
                    first.insert(key, node.inode);
                }
            }
        }
        alias
    }
}
