//! The plan of an output layer: the contract between the transform stage,
//! which decides what each output layer holds, and the encoder
//! ([`write`](super::write)), which writes it. An [`Item`] points back into
//! the decoded layers (`layers[layer].entries[index]`), so the encoder
//! streams file contents from their spool files; nothing is copied here.

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
#[derive(Clone, Debug, Default)]
pub struct Plan {
    pub items: Vec<Item>,
}
