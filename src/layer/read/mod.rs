//! Decode and index one layer: the compressed blob is read once, through the
//! digest check, decompressed on one thread, and parsed as tar on another;
//! file contents go to a spool file and every entry's header to an
//! [`Entry`]. The result lets later stages read any file's bytes at random
//! without decompressing again.
//!
//! Checks on the way: the blob's digest (the caller's verifying reader is
//! drained to its end), the uncompressed content against the diff_id the
//! config names, a bound on the uncompressed size (decompression bombs,
//! sparse files counted at their expanded size), paths that would escape the
//! root, and the bounds of [`Limits`] on what one entry's headers hold and
//! what the index keeps (so memory follows the number of files, not what a
//! layer declares).

mod header;
mod index;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result, bail};

use super::entry::Entry;
use super::limits::{self, Limits};
use super::pipe;
use crate::decompress as decode;
use crate::digest::Digest;
use crate::image::media::Compression;
use index::parse_entries;

/// A decoded layer: its entries in tar order and the spool holding their
/// contents.
pub struct LayerIndex {
    pub entries: Vec<Entry>,
    pub spool: Arc<File>,
    pub diff_id: Digest,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

impl LayerIndex {
    /// Streams the content of `e` (one of this layer's entries) from the
    /// spool into `out`, `buf` at a time.
    pub fn copy_content<W: Write + ?Sized>(
        &self,
        e: &Entry,
        out: &mut W,
        buf: &mut [u8],
    ) -> io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut done = 0u64;
        while done < e.size() {
            let n = buf.len().min((e.size() - done) as usize);
            self.spool.read_exact_at(&mut buf[..n], e.offset() + done)?;
            out.write_all(&buf[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    /// Up to `limit` bytes of the content of `e` from `offset` (fewer at
    /// its end).
    pub fn read_content(&self, e: &Entry, offset: u64, limit: usize) -> io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let offset = offset.min(e.size());
        let mut buf = vec![0u8; (e.size() - offset).min(limit as u64) as usize];
        self.spool.read_exact_at(&mut buf, e.offset() + offset)?;
        Ok(buf)
    }
}

#[derive(Clone, Debug)]
pub struct IndexOptions {
    /// Refuse layers that decompress to more than this.
    pub max_uncompressed: u64,
    /// What the indexes of the image's layers may hold together (`None`:
    /// unbounded).
    pub budget: Option<std::sync::Arc<limits::IndexBudget>>,
}

impl Default for IndexOptions {
    fn default() -> Self {
        IndexOptions {
            max_uncompressed: 64 << 30,
            budget: None,
        }
    }
}

/// Decodes and indexes a layer. `raw` yields the blob's bytes and must fail
/// at its end if they do not match the blob digest; `expected_diff_id`, when
/// known, is checked against the uncompressed bytes.
pub fn index_layer(
    raw: impl Read + Send,
    what: &str,
    expected_diff_id: Option<&Digest>,
    spool_dir: &Path,
    opts: &IndexOptions,
) -> Result<LayerIndex> {
    index_layer_with(
        raw,
        what,
        expected_diff_id,
        spool_dir,
        opts,
        &Limits::default(),
    )
}

/// [`index_layer`] within `limits` instead of the defaults.
pub fn index_layer_with(
    mut raw: impl Read + Send,
    what: &str,
    expected_diff_id: Option<&Digest>,
    spool_dir: &Path,
    opts: &IndexOptions,
    limits: &Limits,
) -> Result<LayerIndex> {
    let spool = tempfile::tempfile_in(spool_dir)
        .with_context(|| format!("creating a spool file in {}", spool_dir.display()))?;
    let spool_writer = spool.try_clone()?;
    let (writer, reader) = pipe::pipe(8);
    let max = opts.max_uncompressed;

    let (decoded, parsed) = std::thread::scope(|s| {
        // Decompression (and the blob digest) on this thread; the tar
        // parse, the diff_id and the spool on the other.
        let decoder = s.spawn(move || -> Result<Compression> {
            let (compression, mut dec) = decode::decoder(BufReader::with_capacity(256 << 10, &mut raw))
                .map_err(io_error)?;
            let mut w = writer;
            let mut written = 0u64;
            loop {
                // Inflated straight into the pipe's chunk.
                let n = match w.fill_from(&mut dec) {
                    Ok(0) => break,
                    Ok(n) => n,
                    Err(pipe::Fill::Stopped) => {
                        return Err(io::Error::from(io::ErrorKind::BrokenPipe))
                            .with_context(|| format!("{what}: the tar reader stopped"));
                    }
                    Err(pipe::Fill::Read(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // The verifying reader under the decoder failed: that
                    // is the error, not the compression.
                    Err(pipe::Fill::Read(e)) if crate::digest::digest_error_in(&e).is_some() => {
                        return Err(io_error(e));
                    }
                    Err(pipe::Fill::Read(e)) => {
                        drop(dec);
                        // A blob that does not match its digest mostly fails
                        // to decode before its end; read the rest so that the
                        // verifying reader can say so, and report that.
                        if let Err(d) = io::copy(&mut raw, &mut io::sink())
                            && crate::digest::digest_error_in(&d).is_some()
                        {
                            return Err(io_error(d));
                        }
                        return Err(io_error(e)).with_context(|| {
                            format!(
                                "{what}: corrupt {} stream, though the blob matches its digest: the image was stored damaged (build and push it again)",
                                compression.name()
                            )
                        });
                    }
                };
                written += n as u64;
                if written > max {
                    return Err(too_big(what, max));
                }
            }
            drop(dec);
            // Trailing bytes after the compressed stream still count for the
            // blob digest: read to the end so the verifying reader checks it.
            io::copy(&mut raw, &mut io::sink()).map_err(io_error)?;
            w.finish().with_context(|| format!("{what}: the tar reader stopped"))?;
            Ok(compression)
        });
        let parser = s.spawn(move || parse_entries(reader, spool_writer, what, opts, limits));
        (
            decoder.join().expect("decoder thread panicked"),
            parser.join().expect("tar parser thread panicked"),
        )
    });
    // When both fail, one stopped because the other did: report the cause.
    let compression = match (decoded, &parsed) {
        (Err(e), Err(_)) if is_broken_pipe(&e) => return parsed.map(|_| unreachable!()),
        (d, _) => d?,
    };
    let (entries, diff_id, uncompressed_size) = parsed?;
    if let Some(expected) = expected_diff_id
        && expected != &diff_id
    {
        bail!(
            "{what}: uncompressed content hashes to {diff_id}, but the image config says {expected} (corrupt layer or config)"
        );
    }
    Ok(LayerIndex {
        entries,
        spool: Arc::new(spool),
        diff_id,
        uncompressed_size,
        compression,
    })
}

/// An I/O error from the blob reader as an error: a digest failure the
/// verifying reader raised comes out as that [`crate::digest::DigestError`]
/// (so the message names the blob); anything else stays the `io::Error` it
/// is, which prints the same (an `io::Error` shows its inner error).
fn io_error(e: io::Error) -> anyhow::Error {
    if crate::digest::digest_error_in(&e).is_some() {
        let inner = e.into_inner().expect("checked");
        match inner.downcast::<crate::digest::DigestError>() {
            Ok(d) => anyhow::Error::new(*d),
            Err(other) => anyhow::anyhow!(other),
        }
    } else {
        anyhow::Error::new(e)
    }
}

/// The decompression-bomb refusal, naming the flag that sets the bound.
pub(super) fn too_big(what: &str, max: u64) -> anyhow::Error {
    let bound = if max >= 1 << 30 && max.is_multiple_of(1 << 30) {
        format!("{} GiB", max >> 30)
    } else {
        format!("{max} bytes")
    };
    anyhow::anyhow!(
        "{what}: decompresses to more than {bound} (--max-layer-size); refusing it as a likely decompression bomb (raise --max-layer-size, in GiB, if the layer really is that big)"
    )
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<io::Error>()
            .is_some_and(|io| io.kind() == io::ErrorKind::BrokenPipe)
    })
}
