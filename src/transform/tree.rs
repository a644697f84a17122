//! A read-only view of an image's merged tree (what extracting all layers
//! gives). The squash stage builds the tree and implements [`TreeView`];
//! the decisions that depend on content (profile auto-detection, safety
//! keeps: which distro, which runtimes, what the entrypoint and scripts
//! need) read it through this trait. It lives here, next to the code that
//! builds the tree, so that `profile` depends on `transform` and never the
//! other way round.

use crate::layer::entry::Kind;

/// The merged tree of an image, as the squash stage sees it.
pub trait TreeView {
    /// The kind at `path` (hard links read as files); `None` if absent.
    fn kind(&self, path: &[u8]) -> Option<Kind>;
    fn mode(&self, path: &[u8]) -> Option<u32>;
    /// A symlink's target as written.
    fn link_target(&self, path: &[u8]) -> Option<Vec<u8>>;
    /// Up to `limit` bytes of a regular file from `offset` (fewer at its
    /// end).
    fn read_at(&self, path: &[u8], offset: u64, limit: usize) -> Option<Vec<u8>>;
    /// Up to `limit` bytes of a regular file.
    fn read(&self, path: &[u8], limit: usize) -> Option<Vec<u8>> {
        self.read_at(path, 0, limit)
    }
    /// Every path, sorted.
    fn paths(&self) -> Box<dyn Iterator<Item = &[u8]> + '_>;
}

/// Follows symlinks in every component of `path` (relative targets from the
/// link's directory, absolute ones from the image root, never above it).
/// Returns the resolved path and the symlinks passed on the way, or `None`
/// on a loop.
pub fn resolve(tree: &dyn TreeView, path: &[u8]) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let mut links = Vec::new();
    let mut todo: Vec<Vec<u8>> = components(path).into_iter().rev().collect();
    let mut done: Vec<Vec<u8>> = Vec::new();
    let mut hops = 0;
    while let Some(c) = todo.pop() {
        match &c[..] {
            b"." | b"" => continue,
            b".." => {
                done.pop();
                continue;
            }
            _ => {}
        }
        done.push(c);
        let here = done.join(&b'/');
        if tree.kind(&here) == Some(Kind::Symlink) {
            hops += 1;
            if hops > 40 {
                return None;
            }
            let target = tree.link_target(&here).unwrap_or_default();
            links.push(here);
            done.pop();
            if target.starts_with(b"/") {
                done.clear();
            }
            for t in components(&target).into_iter().rev() {
                todo.push(t);
            }
        }
    }
    Some((done.join(&b'/'), links))
}

fn components(p: &[u8]) -> Vec<Vec<u8>> {
    p.split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

#[cfg(test)]
pub mod testing {
    //! An in-memory tree for unit tests.
    use super::*;
    use std::collections::BTreeMap;

    #[derive(Default)]
    pub struct MemTree {
        pub nodes: BTreeMap<Vec<u8>, (Kind, u32, Vec<u8>)>,
    }

    impl MemTree {
        pub fn file(mut self, p: &str, mode: u32, content: &[u8]) -> Self {
            self.parents(p);
            self.nodes
                .insert(p.as_bytes().to_vec(), (Kind::File, mode, content.to_vec()));
            self
        }
        pub fn link(mut self, p: &str, target: &str) -> Self {
            self.parents(p);
            self.nodes.insert(
                p.as_bytes().to_vec(),
                (Kind::Symlink, 0o777, target.as_bytes().to_vec()),
            );
            self
        }
        pub fn dir(mut self, p: &str) -> Self {
            self.parents(p);
            self.nodes
                .insert(p.as_bytes().to_vec(), (Kind::Dir, 0o755, Vec::new()));
            self
        }
        fn parents(&mut self, p: &str) {
            let parts: Vec<&str> = p.split('/').collect();
            for i in 1..parts.len() {
                self.nodes
                    .entry(parts[..i].join("/").into_bytes())
                    .or_insert((Kind::Dir, 0o755, Vec::new()));
            }
        }
    }

    impl TreeView for MemTree {
        fn kind(&self, p: &[u8]) -> Option<Kind> {
            self.nodes.get(p).map(|n| n.0)
        }
        fn mode(&self, p: &[u8]) -> Option<u32> {
            self.nodes.get(p).map(|n| n.1)
        }
        fn link_target(&self, p: &[u8]) -> Option<Vec<u8>> {
            self.nodes
                .get(p)
                .filter(|n| n.0 == Kind::Symlink)
                .map(|n| n.2.clone())
        }
        fn read_at(&self, p: &[u8], offset: u64, limit: usize) -> Option<Vec<u8>> {
            let n = self.nodes.get(p).filter(|n| n.0 == Kind::File)?;
            let start = usize::try_from(offset).ok()?.min(n.2.len());
            Some(n.2[start..n.2.len().min(start.saturating_add(limit))].to_vec())
        }
        fn paths(&self) -> Box<dyn Iterator<Item = &[u8]> + '_> {
            Box::new(self.nodes.keys().map(|k| &k[..]))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::MemTree;
    use super::*;

    #[test]
    fn resolves_merged_usr_and_relative_links() {
        let t = MemTree::default()
            .link("bin", "usr/bin")
            .link("usr/bin/python3", "python3.11")
            .file("usr/bin/python3.11", 0o755, b"\x7fELF")
            .link("loop", "loop");
        let (p, links) = resolve(&t, b"bin/python3").unwrap();
        assert_eq!(p, b"usr/bin/python3.11");
        assert_eq!(links, vec![b"bin".to_vec(), b"usr/bin/python3".to_vec()]);
        assert!(resolve(&t, b"loop/x").is_none());
        assert_eq!(
            resolve(&t, b"/usr/../usr/bin/python3.11").unwrap().0,
            b"usr/bin/python3.11"
        );
    }
}
