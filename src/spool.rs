//! A blob file being written while another thread reads it: the upload of
//! a layer slim is still compressing, or of a blob still being downloaded
//! (and verified), follows the file as it grows. The reader ends only when
//! the writer says the file is complete, and fails when it says it failed,
//! so an upload is never finished from a partial or unverified file.
//!
//! Stage-neutral: the encoder (`layer::encode`) announces what it writes,
//! the transport's uploads read it; neither knows the other.

use std::io::{self, Read, Write};

/// Spool files are read and written in pieces of this size: an upload
/// reads its blob, a download writes it, 1 MiB at a time (HTTP clients
/// move 8–16 KiB pieces; a buffer between them and the file keeps the
/// file's system calls few).
pub const IO_CHUNK: usize = 1 << 20;

/// A file being written, as seen by a reader of it: how many bytes are in
/// it so far, and whether the writer finished (or failed).
#[derive(Default)]
pub struct Growing {
    state: std::sync::Mutex<(u64, Option<bool>)>,
    changed: std::sync::Condvar,
    cancelled: std::sync::atomic::AtomicBool,
}

impl Growing {
    /// Makes readers fail from now on (the upload is not wanted).
    pub fn cancel(&self) {
        self.cancelled
            .store(true, std::sync::atomic::Ordering::SeqCst);
        self.changed.notify_all();
    }

    fn grew(&self, n: u64) {
        self.state.lock().expect("growing lock").0 += n;
        self.changed.notify_all();
    }

    /// Marks the file complete (`ok`) or failed; readers end accordingly.
    pub fn end(&self, ok: bool) {
        self.state.lock().expect("growing lock").1 = Some(ok);
        self.changed.notify_all();
    }

    /// Reads `file` (another handle on the growing file) up to what has
    /// been written, waiting for more; ends when the writer ends.
    pub fn reader(self: &std::sync::Arc<Self>, file: std::fs::File) -> GrowingReader {
        GrowingReader {
            file,
            growing: self.clone(),
            pos: 0,
        }
    }
}

/// Counts bytes into [`Growing`] as they reach the file.
pub struct Announce<'a, W: Write> {
    inner: W,
    growing: Option<&'a Growing>,
}

impl<'a, W: Write> Announce<'a, W> {
    pub fn new(inner: W, growing: Option<&'a Growing>) -> Self {
        Announce { inner, growing }
    }
}

impl<W: Write> Write for Announce<'_, W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(data)?;
        if let Some(g) = self.growing {
            g.grew(n as u64);
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// A reader of a file another thread is writing (see [`Growing`]).
pub struct GrowingReader {
    file: std::fs::File,
    growing: std::sync::Arc<Growing>,
    pos: u64,
}

impl Read for GrowingReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let cancelled = || {
            self.growing
                .cancelled
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        loop {
            let (written, end) = {
                let mut st = self.growing.state.lock().expect("growing lock");
                while st.0 == self.pos && st.1.is_none() && !cancelled() {
                    st = self.growing.changed.wait(st).expect("growing lock");
                }
                *st
            };
            if cancelled() {
                return Err(io::Error::other("upload cancelled"));
            }
            if written > self.pos {
                let want = buf.len().min((written - self.pos) as usize);
                let n = self.file.read_at(&mut buf[..want], self.pos)?;
                self.pos += n as u64;
                return Ok(n);
            }
            return match end {
                Some(true) => Ok(0),
                Some(false) => Err(io::Error::other("the blob being uploaded was not finished")),
                None => continue,
            };
        }
    }
}
