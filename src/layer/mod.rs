//! Layer blobs: decoding compressed tar streams (this module), tar entries
//! and whiteouts, and encoding with digests computed in the same pass.

pub mod decode;
