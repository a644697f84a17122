//! Tracing what a container opens: fanotify on the container's root.
//!
//! Each container of the sandbox runs on an overlay mounted for it alone
//! (`sandbox/runtime.rs`); [`Tracer::hook`] marks that overlay's whole
//! file system (`FAN_MARK_FILESYSTEM`) before the runtime starts, so every
//! open and exec by any process of the container is reported, whatever its
//! mount namespace: runc's own clone of the mount and `pivot_root` do not
//! hide it, statically linked programs are seen (the kernel reports the
//! open, not a libc), and nothing else on the host uses that superblock.
//! Directory opens (`FAN_ONDIR`) are the listings (`readdir`).
//!
//! Events carry an open file; its `/proc/self/fd` link names the path as
//! the container sees it (`/usr/lib/x.so`). What fanotify cannot see:
//! `stat`, `access`, `readlink` and failed lookups; [`super::keep`] adds
//! the static closure (symlinks to kept paths, ELF libraries, `#!`
//! interpreters, parents) for those.
//!
//! Needs `CAP_SYS_ADMIN` (root) and a kernel with `CONFIG_FANOTIFY`.

use std::collections::BTreeSet;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use nix::errno::Errno;
use nix::sys::fanotify::{EventFFlags, Fanotify, InitFlags, MarkFlags, MaskFlags};

use crate::sandbox::OnMount;

/// Distinct paths one trace may record (the paths are held in memory).
const MAX_PATHS: usize = 2_000_000;

/// What to tell a user whose machine cannot trace.
pub const NEEDS: &str = "tracing needs root (CAP_SYS_ADMIN) and a kernel with fanotify (CONFIG_FANOTIFY); a keep-list learned elsewhere applies without either: slim SOURCE -o DEST --profile LEARNED.toml";

/// A running trace: one fanotify group, read by a thread into a set of
/// paths.
pub struct Tracer {
    fan: Arc<Fanotify>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<Result<BTreeSet<Vec<u8>>>>>,
}

impl Tracer {
    pub fn start() -> Result<Tracer> {
        let fan = Fanotify::init(
            InitFlags::FAN_CLASS_NOTIF
                | InitFlags::FAN_CLOEXEC
                | InitFlags::FAN_NONBLOCK
                | InitFlags::FAN_UNLIMITED_QUEUE,
            // O_NONBLOCK: the file handed to slim with an event must never
            // block (a FIFO in the image).
            EventFFlags::O_RDONLY
                | EventFFlags::O_LARGEFILE
                | EventFFlags::O_CLOEXEC
                | EventFFlags::O_NONBLOCK,
        )
        .map_err(std::io::Error::from)
        .with_context(|| format!("cannot start a fanotify trace: {NEEDS}"))?;
        let fan = Arc::new(fan);
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let fan = fan.clone();
            let stop = stop.clone();
            std::thread::Builder::new()
                .name("slim-trace".into())
                .spawn(move || read_all(&fan, &stop))?
        };
        Ok(Tracer {
            fan,
            stop,
            reader: Some(reader),
        })
    }

    /// The sandbox hook that marks each container's root.
    pub fn hook(&self) -> OnMount {
        let fan = self.fan.clone();
        Arc::new(move |root: &Path| {
            fan.mark(
                MarkFlags::FAN_MARK_ADD | MarkFlags::FAN_MARK_FILESYSTEM,
                MaskFlags::FAN_OPEN | MaskFlags::FAN_OPEN_EXEC | MaskFlags::FAN_ONDIR,
                nix::fcntl::AT_FDCWD,
                Some(root),
            )
            .map_err(std::io::Error::from)
            .with_context(|| {
                format!(
                    "cannot trace the container's root {}: {NEEDS}",
                    root.display()
                )
            })
        })
    }

    /// Stops reading once the queue is empty (every traced container has
    /// ended, so no event is still coming) and returns the paths seen,
    /// relative to the image root (`usr/bin/x`; the root itself is `""`).
    pub fn finish(mut self) -> Result<BTreeSet<Vec<u8>>> {
        self.stop.store(true, Ordering::SeqCst);
        match self.reader.take().expect("running").join() {
            Ok(r) => r,
            Err(_) => bail!("the trace reader panicked"),
        }
    }
}

impl Drop for Tracer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

fn read_all(fan: &Fanotify, stop: &AtomicBool) -> Result<BTreeSet<Vec<u8>>> {
    let mut seen = BTreeSet::new();
    let mut overflow = false;
    loop {
        // Read before looking at `stop`, so that what was queued before
        // the stop is all read.
        let stopping = stop.load(Ordering::SeqCst);
        match fan.read_events() {
            Ok(events) => {
                for e in events {
                    if e.mask().contains(MaskFlags::FAN_Q_OVERFLOW) {
                        overflow = true;
                    }
                    let Some(fd) = e.fd() else { continue };
                    let link = format!("/proc/self/fd/{}", fd.as_raw_fd());
                    if let Ok(p) = std::fs::read_link(link)
                        && let Some(rel) = relative(p.as_os_str().as_encoded_bytes())
                    {
                        seen.insert(rel);
                        if seen.len() > MAX_PATHS {
                            bail!(
                                "the trace saw more than {MAX_PATHS} distinct paths; refusing to hold more"
                            );
                        }
                    }
                }
            }
            Err(Errno::EAGAIN) if stopping => break,
            Err(Errno::EAGAIN) => std::thread::sleep(Duration::from_millis(5)),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(std::io::Error::from(e)).context("reading fanotify events"),
        }
    }
    if overflow {
        bail!("the fanotify queue overflowed: events were lost, so the trace is incomplete");
    }
    Ok(seen)
}

/// `/usr/lib/x` -> `usr/lib/x`; `/` -> ``; a deleted file's
/// `" (deleted)"` suffix dropped; anything not absolute (pipes, sockets,
/// anonymous files) -> `None`.
fn relative(p: &[u8]) -> Option<Vec<u8>> {
    let p = p.strip_prefix(b"/")?;
    let p = p.strip_suffix(b" (deleted)").unwrap_or(p);
    Some(p.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_made_relative_to_the_root() {
        assert_eq!(relative(b"/usr/bin/x").unwrap(), b"usr/bin/x");
        assert_eq!(relative(b"/").unwrap(), b"");
        assert_eq!(relative(b"/tmp/x (deleted)").unwrap(), b"tmp/x");
        assert_eq!(relative(b"pipe:[123]"), None);
        assert_eq!(relative(b"anon_inode:[eventfd]"), None);
    }
}
