//! Dedup: identical regular files the upper layers wrote (same content
//! hash, size, mode, owner and xattrs) become one inode, so the plan writes
//! the content once and hard links for the other names.

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
    /// left out. Candidates are sorted by content key (stable, so ties keep
    /// path order): the first of each group, in path order, stays. 24
    /// bytes per file, where a map keyed by the whole key took ~200.
    pub(super) fn each_duplicate(&self, skip: &dyn Fn(&[u8]) -> bool, found: &mut Found<'_>) {
        let mut seen = vec![false; self.creators.len()];
        // (first 8 bytes of the content hash, inode, path), in path order.
        let mut cands: Vec<(u64, u32, &Arc<[u8]>)> = Vec::new();
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
            let e = &self.layers[cl as usize].entries[ci as usize];
            let Some(hash) = e.content_hash.as_ref() else {
                continue;
            };
            if e.size == 0 {
                continue;
            }
            let prefix = u64::from_le_bytes(hash[..8].try_into().expect("8 bytes"));
            cands.push((prefix, node.inode, path));
        }
        drop(seen);
        let key = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            let e = &self.layers[l as usize].entries[i as usize];
            (
                e.content_hash,
                e.size,
                e.mode,
                e.uid,
                e.gid,
                &e.uname,
                &e.gname,
            )
        };
        let xattrs = |inode: u32| {
            let (l, i) = self.creators[inode as usize];
            self.layers[l as usize].entries[i as usize].xattrs()
        };
        let order = |a: u32, b: u32| key(a).cmp(&key(b)).then_with(|| xattrs(a).cmp(xattrs(b)));
        cands.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| order(a.1, b.1)));
        let mut start = 0;
        while start < cands.len() {
            let (p0, canon, canon_path) = cands[start];
            let mut end = start + 1;
            while end < cands.len()
                && cands[end].0 == p0
                && order(canon, cands[end].1) == std::cmp::Ordering::Equal
            {
                let (_, inode, path) = cands[end];
                found(path, inode, canon, canon_path);
                end += 1;
            }
            start = end;
        }
    }
}
