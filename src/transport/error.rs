//! What can go wrong reading an image from, or writing it to, a transport.
//!
//! Each variant is the error of the layer that failed, shown as that layer
//! words it (`transparent`): the registry client, digest verification, the
//! manifest model, the engine API, plain I/O. An OCI layout, a
//! docker-archive and the engine's load word their own failures (naming the
//! path or the engine and what to do); the cause below, when there is one,
//! stays the error's `source`, so a printed chain says each thing once.

use std::io;

use crate::digest::{Digest, DigestError};
use crate::image::ImageError;
use crate::registry::RegistryError;

use super::engine::EngineError;

/// A failure worded by a transport's own code, with its causes as its
/// `source` chain.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A registry request (registry sources and destinations).
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// Content that does not hash to its digest, or has another size.
    #[error(transparent)]
    Digest(#[from] DigestError),
    /// A manifest, index or config that slim does not accept.
    #[error(transparent)]
    Image(#[from] ImageError),
    /// The Docker or Podman engine (`docker-daemon:`).
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// An OCI layout directory or `oci-archive:` file.
    #[error(transparent)]
    Layout(Cause),
    /// A `docker-archive:` file or stream (also an engine's export).
    #[error(transparent)]
    Archive(Cause),
    /// Loading an archive into the engine (`docker-daemon:` destination).
    #[error(transparent)]
    Load(Cause),
    /// The destination is pinned to a digest the written image does not
    /// have.
    #[error(
        "the destination {destination} names digest {pinned}, but the image written is {written}; drop the @digest or name a tag"
    )]
    PinnedDigest {
        destination: String,
        pinned: Digest,
        written: Digest,
    },
    /// Reading a blob stream or a file, writing a file. An `io::Error`
    /// that carries another error (a digest mismatch from a verifying
    /// reader, a registry error from a blob download) shows that error's
    /// message and causes as they are, so it needs no unwrapping.
    #[error(transparent)]
    Io(#[from] io::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(super) fn layout(e: anyhow::Error) -> Error {
        Error::Layout(e.into())
    }

    pub(super) fn archive(e: anyhow::Error) -> Error {
        Error::Archive(e.into())
    }

    pub(super) fn load(e: anyhow::Error) -> Error {
        Error::Load(e.into())
    }
}
