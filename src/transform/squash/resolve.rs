//! Symlinked parents: an entry's parent directory resolved through the
//! symlinks of the tree built so far, inside the root, as
//! filepath-securejoin does for umoci and `fs.RootPath` for containerd.

use super::MAX_LINKS;
use super::model::Merge;
use crate::layer::entry::{self, Kind};

/// A directory path resolved through the tree's symlinks.
pub(super) struct Resolved {
    /// The real path: no symlink in it; `..` and `.` gone.
    pub(super) path: Vec<u8>,
    /// The first prefix of `path` (its length) that is not a directory, if
    /// any: then nothing can be created below it.
    pub(super) blocked: Option<usize>,
}

/// Resolving a parent passed more than [`MAX_LINKS`] symlinks.
pub(super) struct TooManyLinks;

impl<'a> Merge<'a> {
    /// Resolves the directory path `dir` through the symlinks of the tree
    /// as it is now, inside the root, as filepath-securejoin does: each
    /// component that is a symlink is replaced by its target (an absolute
    /// one starts again from the root), `..` drops the last real component
    /// (never above the root), a missing component is kept as it is.
    pub(super) fn resolve_dir<'p>(&self, dir: &'p [u8]) -> Result<Resolved, TooManyLinks>
    where
        'a: 'p,
    {
        let mut todo: Vec<&'p [u8]> = dir.rsplit(|b| *b == b'/').collect();
        let mut out: Vec<u8> = Vec::with_capacity(dir.len());
        // Per real component: where it starts in `out` (for `..`) and
        // whether a non-directory sits there.
        let mut comps: Vec<(usize, bool)> = Vec::new();
        let mut links = 0;
        while let Some(c) = todo.pop() {
            match c {
                b"" | b"." => continue,
                b".." => {
                    if let Some((start, _)) = comps.pop() {
                        out.truncate(start.saturating_sub(1));
                    }
                    continue;
                }
                _ => {}
            }
            let start = if out.is_empty() { 0 } else { out.len() + 1 };
            if !out.is_empty() {
                out.push(b'/');
            }
            out.extend_from_slice(c);
            let Some(n) = self.nodes.get(&out[..]) else {
                comps.push((start, false));
                continue;
            };
            let e = self.entry(*n);
            if e.kind() == Kind::Symlink {
                links += 1;
                if links > MAX_LINKS {
                    return Err(TooManyLinks);
                }
                out.truncate(start.saturating_sub(1));
                let target: &'a [u8] = e.link().unwrap_or_default();
                if target.starts_with(b"/") {
                    out.clear();
                    comps.clear();
                }
                todo.extend(target.rsplit(|b| *b == b'/'));
                continue;
            }
            comps.push((start, !e.kind().is_dir()));
        }
        let blocked = comps.iter().enumerate().find(|(_, c)| c.1).map(|(i, _)| {
            comps
                .get(i + 1)
                .map_or(out.len(), |(next, _)| next.saturating_sub(1))
        });
        Ok(Resolved { path: out, blocked })
    }

    /// Where `path` really is: its parent resolved, its last component as
    /// it is. `None` when the parent is not a directory.
    pub(super) fn real_path<'p>(
        &self,
        path: &'p [u8],
    ) -> Result<(Vec<u8>, Option<Vec<u8>>), TooManyLinks>
    where
        'a: 'p,
    {
        let (dir, base) = entry::split_parent(path);
        let r = self.resolve_dir(dir)?;
        let blocked = r.blocked.map(|n| r.path[..n].to_vec());
        Ok((entry::join(&r.path, base).into_vec(), blocked))
    }
}
