//! Progress events. The pipeline calls a [`Reporter`]; only the CLI draws
//! anything (bars on a terminal, plain lines elsewhere).

use std::io::Read;

use crate::image::Descriptor;

/// What happened to one blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlobOutcome {
    /// Read from the source and written to the destination.
    Copied,
    /// The destination had it already.
    Existed,
    /// Mounted from another repository of the same registry.
    Mounted,
    /// Read and decoded (a layer being slimmed).
    Read,
}

pub trait Reporter: Send + Sync {
    /// A blob starts moving (`size` bytes expected).
    fn blob_start(&self, _desc: &Descriptor, _label: &str) {}
    /// `bytes` more bytes of the blob were read.
    fn blob_progress(&self, _desc: &Descriptor, _bytes: u64) {}
    fn blob_done(&self, _desc: &Descriptor, _outcome: BlobOutcome) {}
    /// slim starts writing a new layer of about `estimate` tar bytes.
    fn layer_start(&self, _id: u64, _label: &str, _estimate: u64) {}
    /// `bytes` more tar bytes of layer `id` were written.
    fn layer_progress(&self, _id: u64, _bytes: u64) {}
    /// Layer `id` is written (and pushed, where pushing streams).
    fn layer_done(&self, _id: u64, _desc: &Descriptor) {}
    /// Something the user should know (a conversion, a skipped platform).
    fn note(&self, _message: &str) {}
}

/// Reports nothing.
pub struct Silent;

impl Reporter for Silent {}

/// Counts bytes read through it into a reporter.
pub struct ProgressReader<'a, R> {
    inner: R,
    desc: &'a Descriptor,
    reporter: &'a dyn Reporter,
}

impl<'a, R> ProgressReader<'a, R> {
    pub fn new(inner: R, desc: &'a Descriptor, reporter: &'a dyn Reporter) -> Self {
        ProgressReader {
            inner,
            desc,
            reporter,
        }
    }
}

impl<R: Read> Read for ProgressReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.reporter.blob_progress(self.desc, n as u64);
        }
        Ok(n)
    }
}
