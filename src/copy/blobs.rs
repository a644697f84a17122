//! The blob mover of the copy stage: one blob from the source to the
//! destination, or one blob slim made to the destination.
//!
//! A blob is skipped when the destination has it, mounted when source and
//! destination share a registry, and otherwise spooled to a temp file
//! through a digest-verifying reader (the destination may upload from the
//! growing file meanwhile) and handed over only once verified. Each blob is
//! handled once per run (layers shared across platforms), and every outcome
//! is counted.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};

use crate::digest::Digest;
use crate::image::Descriptor;
use crate::progress::{BlobOutcome, ProgressReader, Reporter};
use crate::spool::{Announce, Growing};
use crate::stats::CopyStats;
use crate::transport::growing::Started;
use crate::transport::{BlobStream, Dest, Source, Staged, StreamKind, io_error, open_verified};

/// Moves blobs to `dst`, each once per run.
pub struct Blobs<'a> {
    pub(super) src: &'a dyn Source,
    pub(super) dst: &'a dyn Dest,
    pub(super) reporter: &'a dyn Reporter,
    /// Blobs moved at once.
    jobs: usize,
    /// Blobs already handled in this run (shared layers across platforms).
    done: Mutex<HashSet<Digest>>,
    stats: Mutex<CopyStats>,
}

impl<'a> Blobs<'a> {
    pub fn new(
        src: &'a dyn Source,
        dst: &'a dyn Dest,
        reporter: &'a dyn Reporter,
        jobs: usize,
    ) -> Self {
        Blobs {
            src,
            dst,
            reporter,
            jobs,
            done: Mutex::new(HashSet::new()),
            stats: Mutex::new(CopyStats::default()),
        }
    }

    /// The blob counters so far (`manifests` is the tree walk's to count).
    pub fn stats(&self) -> CopyStats {
        self.stats.lock().expect("stats lock").clone()
    }

    /// Marks a blob as handled in this run; `false` if it already was.
    fn mark_done(&self, d: &Digest) -> bool {
        self.done.lock().expect("done lock").insert(d.clone())
    }

    /// Copies blobs on up to `jobs` threads; the first error wins.
    pub fn copy_all(&self, blobs: &[Descriptor]) -> Result<()> {
        let todo: Vec<&Descriptor> = {
            let mut done = self.done.lock().expect("done lock");
            blobs
                .iter()
                .filter(|d| done.insert(d.digest.clone()))
                .collect()
        };
        crate::parallel::try_map(todo, self.jobs.clamp(1, 16), |d| self.copy_blob(d))
            .map_err(|failed| failed.first())?;
        Ok(())
    }

    fn copy_blob(&self, d: &Descriptor) -> Result<()> {
        let outcome = if self.dst.has_blob(d)? {
            BlobOutcome::Existed
        } else if let Some(from) = self.src.registry_location()
            && self.dst.mount_blob(d, from)?
        {
            BlobOutcome::Mounted
        } else {
            self.reporter.blob_start(d, "copying");
            if let Some(staged) = self.stage_streaming(d)? {
                self.dst
                    .put_blob(d, staged)
                    .with_context(|| format!("writing blob {} to {}", d.digest, self.dst.name()))?;
            }
            BlobOutcome::Copied
        };
        self.count_blob(d, outcome);
        self.reporter.blob_done(d, outcome);
        Ok(())
    }

    /// Spools a blob from the source while the destination, where it can,
    /// uploads it from the growing spool file. The upload is committed only
    /// once the whole blob has been verified against its digest (and the
    /// registry checks it again); on any failure the session is cancelled.
    /// Returns the spooled blob when it still has to be stored.
    fn stage_streaming(&self, d: &Descriptor) -> Result<Option<Staged>> {
        let Started {
            file,
            growing,
            stream,
        } = crate::transport::growing::start(self.dst, StreamKind::Copy)?;
        let staged = stage_blob(self.src, d, file, self.reporter, Some(&growing));
        match (staged, stream) {
            (Err(e), Some(s)) => {
                s.abort();
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(staged), None) => Ok(Some(staged)),
            (Ok(staged), Some(s)) => match s.commit(d) {
                Ok(()) => Ok(None),
                Err(e) => {
                    tracing::warn!(error = %e, blob = %d.digest, "the streamed upload failed; uploading the blob again");
                    Ok(Some(staged))
                }
            },
        }
    }

    fn count_blob(&self, d: &Descriptor, outcome: BlobOutcome) {
        let mut st = self.stats.lock().expect("stats lock");
        match outcome {
            BlobOutcome::Copied => {
                st.blobs_copied += 1;
                st.bytes_copied += d.size;
            }
            BlobOutcome::Existed => st.blobs_existing += 1,
            BlobOutcome::Mounted => st.blobs_mounted += 1,
            BlobOutcome::Read => {}
        }
    }

    /// Writes a blob slim made, unless the destination has it already; a
    /// stream that carried all of it is committed instead of uploading the
    /// file (and is dropped when the blob is not needed).
    pub fn put_new(
        &self,
        desc: &Descriptor,
        file: tempfile::NamedTempFile,
        stream: Option<(Box<dyn BlobStream>, Arc<Growing>)>,
    ) -> Result<()> {
        if !self.mark_done(&desc.digest) || self.dst.has_blob(desc)? {
            if let Some((s, growing)) = stream {
                // Stop reading the file; the session is cancelled.
                growing.cancel();
                s.abort();
            }
            self.count_blob(desc, BlobOutcome::Existed);
            return Ok(());
        }
        self.count_blob(desc, BlobOutcome::Copied);
        if let Some((s, _)) = stream {
            match s.commit(desc) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    tracing::warn!(error = %e, "the streamed upload failed; uploading the blob again")
                }
            }
        }
        self.dst
            .put_blob(
                desc,
                Staged {
                    file,
                    digest: desc.digest.clone(),
                    size: desc.size,
                },
            )
            .with_context(|| format!("writing blob {} to {}", desc.digest, self.dst.name()))
    }

    pub fn put_bytes(&self, desc: &Descriptor, bytes: &[u8]) -> Result<()> {
        let mut file = tempfile::NamedTempFile::new_in(self.dst.staging_dir())?;
        file.write_all(bytes)?;
        file.flush()?;
        self.put_new(desc, file, None)
    }
}

/// Spools a blob from the source into `file`, verifying digest and size on
/// the way; `growing` (an upload following the file) is told how far the
/// file is written, and that it is complete only once it is verified.
fn stage_blob(
    src: &dyn Source,
    d: &Descriptor,
    mut file: tempfile::NamedTempFile,
    reporter: &dyn Reporter,
    growing: Option<&Growing>,
) -> Result<Staged> {
    let result = (|| -> Result<()> {
        let reader = open_verified(src, d)?;
        let mut reader = ProgressReader::new(reader, d, reporter);
        let mut w = BufWriter::with_capacity(
            crate::spool::IO_CHUNK,
            Announce::new(file.as_file_mut(), growing),
        );
        // Errors name the blob and the source already (the verifying reader
        // and the transports say which).
        io::copy(&mut reader, &mut w).map_err(io_error)?;
        w.flush()?;
        Ok(())
    })();
    if let Some(g) = growing {
        g.end(result.is_ok());
    }
    result.map(|()| Staged {
        file,
        digest: d.digest.clone(),
        size: d.size,
    })
}
