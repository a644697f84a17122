//! Layer blobs: decode ([`read`]: compressed blob -> entries + spooled
//! contents, within the bounds of [`limits`]), the entry model with
//! whiteouts ([`entry`]), the output layer's [`plan`] (what the transform
//! stage hands the encoder), and encode ([`write`](mod@write), [`encode`]:
//! plan -> tar -> compressed blob, digests in the same pass). `pinned`
//! (tests) holds the exact digests of a written layer.
//!
//! Below transform, profile and transport: nothing here imports them.

pub mod encode;
pub mod entry;
pub mod limits;
pub mod pipe;
pub mod plan;
pub mod read;
pub mod shared_path;
pub mod write;

#[cfg(test)]
mod pinned;
