//! An upload that follows a blob file while it is written: the file is
//! created in the destination's staging directory and, where the
//! destination can take a stream, its upload starts at once, reading the
//! file through [`crate::spool::GrowingReader`] as it grows.

use std::sync::Arc;

use anyhow::{Context, Result};
use tempfile::NamedTempFile;

use super::{BlobStream, Dest, StreamKind};
use crate::spool::Growing;

/// A blob file to write in `dst`'s staging directory and, where `dst` can
/// take it, an upload already following that file. Whoever writes the file
/// reports through the [`Growing`] (with [`crate::spool::Announce`] and [`Growing::end`]).
pub fn start(dst: &dyn Dest, kind: StreamKind) -> Result<Started> {
    let file = NamedTempFile::new_in(dst.staging_dir())
        .with_context(|| format!("creating a temp file in {}", dst.staging_dir().display()))?;
    let growing = Arc::new(Growing::default());
    let stream = match dst.stream_blob(Box::new(growing.reader(file.reopen()?)), kind) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "no streamed upload; uploading the finished file");
            None
        }
    };
    Ok(Started {
        file,
        growing,
        stream,
    })
}

/// What [`start`] gives.
pub struct Started {
    pub file: NamedTempFile,
    pub growing: Arc<Growing>,
    pub stream: Option<Box<dyn BlobStream>>,
}
