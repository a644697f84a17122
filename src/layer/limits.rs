//! Bounds on what one tar entry's headers may hold and what a layer's index
//! keeps, so that memory follows the number of files, not what a hostile
//! layer declares.
//!
//! Two places need them. The tar crate reads a PAX extended header or a
//! GNU long name whole into memory, at the size its header declares, before
//! it hands out the entry: [`HeaderGuard`] sits under the tar reader, follows
//! the stream's headers as the tar crate does, and fails the read of an
//! extension header larger than its bound before its data is read. The
//! records an entry carries over (xattrs, sub-second times) stay in the
//! index until the image is written: [`Limits`] bounds them per entry, as
//! Linux bounds xattrs, and per layer.

use std::fmt;
use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};

/// What one entry may hold and a layer's index may keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of one PAX extended header (all its records).
    pub pax_header: u64,
    /// Bytes of a path or link target: PATH_MAX. A GNU long name entry may
    /// hold one more, its NUL.
    pub name: usize,
    /// PAX records one entry carries over.
    pub pax_records: usize,
    /// Bytes of one xattr value: XATTR_SIZE_MAX.
    pub xattr_value: usize,
    /// Bytes of one entry's xattr names, each with its NUL: XATTR_LIST_MAX.
    pub xattr_names: usize,
    /// Bytes of PAX records (keys and values) a layer's index keeps.
    pub layer_pax: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            pax_header: 256 << 10,
            name: 4096,
            pax_records: 256,
            xattr_value: 64 << 10,
            xattr_names: 64 << 10,
            layer_pax: 64 << 20,
        }
    }
}

/// `1024` -> "1 KiB"; bytes when not a whole number of KiB.
pub fn size(n: u64) -> String {
    match n {
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{} KiB", n >> 10),
        n => format!("{n} bytes"),
    }
}

/// An extension header larger than its bound, found by [`HeaderGuard`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OversizedHeader {
    /// "a PAX header" or "a GNU long name".
    pub what: &'static str,
    /// The extension header's own name field (`PaxHeaders.0/usr/bin/x`).
    pub name: String,
    pub declared: u64,
    /// The bound, in words.
    pub limit: String,
}

impl fmt::Display for OversizedHeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({:?}) declares {} bytes, more than {}; refused before reading it (the layer is malformed or malicious)",
            self.what, self.name, self.declared, self.limit
        )
    }
}

impl std::error::Error for OversizedHeader {}

const BLOCK: u64 = 512;

enum State {
    /// Assembling the header block that starts at `next`.
    Header,
    /// Skipping to `until` (data and padding the guard need not see).
    Skip { until: u64 },
    /// Keeping a PAX header's data (to learn its `size` record) up to
    /// `end`, then skipping to `until`.
    Pax { end: u64, until: u64, data: Vec<u8> },
    /// Old-GNU sparse extension blocks follow; then `data` bytes.
    SparseExt { data: u64 },
    /// The archive ended (or the tar reader will fail on this header):
    /// nothing more to check.
    Done,
}

/// A reader under the tar crate's, following the same header walk
/// (tar 0.4.46 `EntriesFields::next_entry`: PAX `size` applying to the next
/// non-extension header, old-GNU sparse extension blocks) so that it knows
/// each extension header's declared size before the tar crate reads it.
pub struct HeaderGuard<R> {
    inner: R,
    limits: Limits,
    pos: u64,
    block: [u8; 512],
    filled: usize,
    state: State,
    /// The PAX records of the extension header before the next entry.
    pending_pax: Option<Vec<u8>>,
    /// The failure, kept: every later read fails the same way.
    failed: Option<OversizedHeader>,
}

impl<R: Read> HeaderGuard<R> {
    pub fn new(inner: R, limits: &Limits) -> Self {
        HeaderGuard {
            inner,
            limits: limits.clone(),
            pos: 0,
            block: [0; 512],
            filled: 0,
            state: State::Header,
            pending_pax: None,
            failed: None,
        }
    }

    pub fn into_inner(self) -> R {
        self.inner
    }

    fn fail(&self) -> io::Error {
        io::Error::new(
            io::ErrorKind::InvalidData,
            self.failed.clone().expect("a failure"),
        )
    }

    /// Follows `data`, the bytes at `self.pos` the tar reader is about to
    /// see.
    fn follow(&mut self, mut data: &[u8]) -> Result<(), OversizedHeader> {
        while !data.is_empty() {
            match &mut self.state {
                State::Done => return Ok(()),
                State::Skip { until } => {
                    let n = (*until - self.pos).min(data.len() as u64) as usize;
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.pos == *until {
                        self.state = State::Header;
                    }
                }
                State::Pax {
                    end,
                    until,
                    data: kept,
                } => {
                    let n = (*until - self.pos).min(data.len() as u64) as usize;
                    let keep = (end.saturating_sub(self.pos)).min(n as u64) as usize;
                    kept.extend_from_slice(&data[..keep]);
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.pos == *until {
                        self.pending_pax = Some(std::mem::take(kept));
                        self.state = State::Header;
                    }
                }
                State::Header | State::SparseExt { .. } => {
                    let n = (512 - self.filled).min(data.len());
                    self.block[self.filled..self.filled + n].copy_from_slice(&data[..n]);
                    self.filled += n;
                    self.pos += n as u64;
                    data = &data[n..];
                    if self.filled == 512 {
                        self.filled = 0;
                        if let State::SparseExt { data: len } = self.state {
                            // `isextended` of a GnuExtSparseHeader.
                            if self.block[504] != 1 {
                                self.state = self.skip(len);
                            }
                        } else {
                            self.header()?;
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// The state after a header, for an entry of `len` data bytes.
    fn skip(&self, len: u64) -> State {
        match len
            .checked_add(BLOCK - 1)
            .and_then(|l| self.pos.checked_add(l & !(BLOCK - 1)))
        {
            Some(until) if until == self.pos => State::Header,
            Some(until) => State::Skip { until },
            None => State::Done, // the tar reader fails: "size overflow"
        }
    }

    fn header(&mut self) -> Result<(), OversizedHeader> {
        let block = self.block;
        if block.iter().all(|b| *b == 0) {
            self.state = State::Done;
            return Ok(());
        }
        let h = tar::Header::from_byte_slice(&block);
        let sum = block[..148]
            .iter()
            .chain(&block[156..])
            .fold(0u32, |a, b| a + u32::from(*b))
            + 8 * 32;
        if h.cksum().ok() != Some(sum) {
            self.state = State::Done;
            return Ok(());
        }
        let ty = h.entry_type();
        let extension = ty.is_gnu_longname()
            || ty.is_gnu_longlink()
            || ty.is_pax_local_extensions()
            || ty.is_pax_global_extensions();
        let pax_size = match (&self.pending_pax, extension) {
            (Some(p), false) => pax_size(p),
            _ => None,
        };
        let Ok(mut len) = h.entry_size() else {
            self.state = State::Done;
            return Ok(());
        };
        if let Some(s) = pax_size {
            len = s;
        }
        let recognized = h.as_gnu().is_some() || h.as_ustar().is_some();
        let name = || String::from_utf8_lossy(&h.path_bytes()).into_owned();
        if extension && recognized && !ty.is_pax_global_extensions() {
            let name_limit = || format!("PATH_MAX ({}) and its NUL", self.limits.name);
            let (what, limit, text) = if ty.is_pax_local_extensions() {
                let text = format!(
                    "the {} one entry's PAX header may hold",
                    size(self.limits.pax_header)
                );
                ("a PAX header", self.limits.pax_header, text)
            } else if ty.is_gnu_longname() {
                ("a GNU long name", self.limits.name as u64 + 1, name_limit())
            } else {
                ("a GNU long link", self.limits.name as u64 + 1, name_limit())
            };
            if len > limit {
                return Err(OversizedHeader {
                    what,
                    name: name(),
                    declared: len,
                    limit: text,
                });
            }
            if ty.is_pax_local_extensions() {
                let end = self.pos + len;
                self.state = match self.skip(len) {
                    State::Skip { until } => State::Pax {
                        end,
                        until,
                        data: Vec::with_capacity(len as usize),
                    },
                    _ => {
                        self.pending_pax = Some(Vec::new());
                        State::Header
                    }
                };
                return Ok(());
            }
            self.state = self.skip(len);
            return Ok(());
        }
        // An entry: it takes the pending PAX records with it.
        self.pending_pax = None;
        if ty.is_gnu_sparse() {
            match h.as_gnu() {
                Some(g) if g.is_extended() => {
                    self.state = State::SparseExt { data: len };
                    return Ok(());
                }
                Some(_) => {}
                None => {
                    self.state = State::Done; // the tar reader fails
                    return Ok(());
                }
            }
        }
        self.state = self.skip(len);
        Ok(())
    }
}

/// The `size` record as the tar crate reads it (`pax_extensions_value`):
/// the first one, if every record before it parses.
fn pax_size(data: &[u8]) -> Option<u64> {
    for ext in tar::PaxExtensions::new(data) {
        let ext = ext.ok()?;
        if ext.key() != Ok("size") {
            continue;
        }
        return ext.value().ok()?.parse().ok();
    }
    None
}

impl<R: Read> Read for HeaderGuard<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.failed.is_some() {
            return Err(self.fail());
        }
        let n = self.inner.read(buf)?;
        if let Err(e) = self.follow(&buf[..n]) {
            self.failed = Some(e);
            return Err(self.fail());
        }
        Ok(n)
    }
}

/// The guard's refusal, if `e` (an error from the tar reader) carries one.
pub fn oversized_in(e: &io::Error) -> Option<&OversizedHeader> {
    e.get_ref()?.downcast_ref::<OversizedHeader>()
}

/// What the indexes of one image's layers may hold together. Each entry of
/// a layer index costs memory until the image is written (its header, its
/// place in the squash tree and the plan: 400–700 bytes measured at a
/// million entries), plus its path and link target. Shared by the layers
/// decoded for one image, so a stack of layers is bounded as a whole.
#[derive(Debug)]
pub struct IndexBudget {
    max_entries: u64,
    max_name_bytes: u64,
    entries: AtomicU64,
    name_bytes: AtomicU64,
}

/// An image past its [`IndexBudget`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OverBudget {
    #[error(
        "the image's layers hold more than {0} entries (--max-files); slim keeps an index of every entry in memory (raise --max-files if the machine has the memory: about 700 bytes per entry)"
    )]
    Entries(u64),
    #[error(
        "the image's paths and link targets take more than {} together; slim keeps them in memory (the layers are unusual or malicious)",
        size(*.0)
    )]
    Names(u64),
}

impl IndexBudget {
    pub fn new(max_entries: u64, max_name_bytes: u64) -> IndexBudget {
        IndexBudget {
            max_entries,
            max_name_bytes,
            entries: AtomicU64::new(0),
            name_bytes: AtomicU64::new(0),
        }
    }

    /// Counts one entry with `name_bytes` of path and link target.
    pub fn charge(&self, name_bytes: u64) -> Result<(), OverBudget> {
        if self.entries.fetch_add(1, Ordering::Relaxed) >= self.max_entries {
            return Err(OverBudget::Entries(self.max_entries));
        }
        if self.name_bytes.fetch_add(name_bytes, Ordering::Relaxed) + name_bytes
            > self.max_name_bytes
        {
            return Err(OverBudget::Names(self.max_name_bytes));
        }
        Ok(())
    }
}

/// The default `--max-files`: at about 700 bytes an entry, it keeps one
/// image's index under 400 MB.
pub const DEFAULT_MAX_FILES: u64 = 500_000;
/// Paths and link targets of one image, together.
pub const MAX_NAME_BYTES: u64 = 128 << 20;

#[cfg(test)]
mod budget_tests {
    use super::*;

    #[test]
    fn the_budget_counts_entries_and_names_across_layers() {
        let b = IndexBudget::new(3, 100);
        b.charge(10).unwrap();
        b.charge(10).unwrap();
        b.charge(10).unwrap();
        assert_eq!(b.charge(1), Err(OverBudget::Entries(3)));
        let b = IndexBudget::new(10, 100);
        b.charge(60).unwrap();
        assert_eq!(b.charge(41), Err(OverBudget::Names(100)));
    }
}
