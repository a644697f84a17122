//! Layer blobs: decode ([`decode`], [`read`]: compressed blob -> entries +
//! spooled contents, within the bounds of [`limits`]), the entry model with
//! whiteouts ([`entry`]), and encode
//! ([`write`], [`encode`]: plan -> tar -> compressed blob, digests in the
//! same pass).

pub mod decode;
pub mod encode;
pub mod entry;
pub mod limits;
pub mod pipe;
pub mod read;
pub mod write;
