//! [`SharedPath`]: an entry's path, shared by the layer's index, the squash
//! tree and the plan, stored with thousands of other paths in one chunk.
//!
//! An image can hold millions of paths of a few dozen bytes each. One
//! allocation per path (an `Arc<[u8]>`) costs its 16-byte counts and the
//! allocator's rounding: 64 bytes for a 29-byte path. Here a layer's paths
//! are appended to chunks of [`CHUNK`] bytes ([`PathChunks`]), and a path
//! is a counted reference to its chunk with its place in it (16 bytes, like
//! the `Arc<[u8]>` it replaces); a clone costs no allocation.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// Bytes of paths one chunk holds (a longer path gets a chunk of its own).
pub const CHUNK: usize = 64 << 10;

/// A path (bytes) in a shared chunk. Compares, orders and hashes as its
/// bytes, and borrows as `[u8]`, so maps keyed by it are looked up with a
/// `&[u8]`.
#[derive(Clone)]
pub struct SharedPath {
    chunk: Arc<Box<[u8]>>,
    start: u32,
    len: u32,
}

// Entries, tree keys and plan items hold one each: keep it two words.
const _: () = assert!(std::mem::size_of::<SharedPath>() == 16);

impl SharedPath {
    fn new(chunk: Arc<Box<[u8]>>, start: usize, len: usize) -> SharedPath {
        debug_assert!(start + len <= chunk.len());
        SharedPath {
            chunk,
            start: u32::try_from(start).expect("a chunk is smaller than 4 GiB"),
            len: u32::try_from(len).expect("a path is shorter than 4 GiB"),
        }
    }
}

impl Deref for SharedPath {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.chunk[self.start as usize..][..self.len as usize]
    }
}

impl Borrow<[u8]> for SharedPath {
    fn borrow(&self) -> &[u8] {
        self
    }
}

impl AsRef<[u8]> for SharedPath {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl PartialEq for SharedPath {
    fn eq(&self, other: &SharedPath) -> bool {
        self[..] == other[..]
    }
}

impl Eq for SharedPath {}

impl PartialOrd for SharedPath {
    fn partial_cmp(&self, other: &SharedPath) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedPath {
    fn cmp(&self, other: &SharedPath) -> std::cmp::Ordering {
        self[..].cmp(&other[..])
    }
}

impl std::hash::Hash for SharedPath {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self[..].hash(state)
    }
}

impl fmt::Debug for SharedPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", String::from_utf8_lossy(self))
    }
}

impl Default for SharedPath {
    fn default() -> SharedPath {
        SharedPath::from(&b""[..])
    }
}

/// A path of its own (one allocation for the bytes, one for the count):
/// for the few paths made outside a layer's index.
impl From<&[u8]> for SharedPath {
    fn from(path: &[u8]) -> SharedPath {
        SharedPath::from(Box::<[u8]>::from(path))
    }
}

impl From<Box<[u8]>> for SharedPath {
    fn from(path: Box<[u8]>) -> SharedPath {
        let len = path.len();
        SharedPath::new(Arc::new(path), 0, len)
    }
}

impl From<Vec<u8>> for SharedPath {
    fn from(path: Vec<u8>) -> SharedPath {
        SharedPath::from(path.into_boxed_slice())
    }
}

/// Appends a layer's paths to shared chunks. A path added is pending until
/// its chunk is sealed (full, or [`PathChunks::seal`]); then the caller gets
/// its [`SharedPath`] with its number (0 for the first path added).
#[derive(Default)]
pub struct PathChunks {
    chunk: Vec<u8>,
    /// `(start, len)` of the paths in `chunk`, in the order added.
    pending: Vec<(u32, u32)>,
    /// Paths added so far.
    added: usize,
}

impl PathChunks {
    /// Adds `path`. When the current chunk cannot take it, the chunk is
    /// sealed first (see [`PathChunks::seal`]).
    pub fn add(&mut self, path: &[u8], sealed: &mut dyn FnMut(usize, SharedPath)) {
        if !self.chunk.is_empty() && self.chunk.len() + path.len() > CHUNK {
            self.seal(sealed);
        }
        if self.chunk.capacity() == 0 {
            self.chunk.reserve_exact(CHUNK.max(path.len()));
        }
        self.pending
            .push((self.chunk.len() as u32, path.len() as u32));
        self.chunk.extend_from_slice(path);
        self.added += 1;
    }

    /// The path added last, if its chunk is not sealed yet.
    pub fn last(&self) -> Option<&[u8]> {
        let &(start, len) = self.pending.last()?;
        Some(&self.chunk[start as usize..][..len as usize])
    }

    /// Seals the current chunk: `sealed` gets each pending path with its
    /// number, in order.
    pub fn seal(&mut self, sealed: &mut dyn FnMut(usize, SharedPath)) {
        if self.pending.is_empty() {
            return;
        }
        let chunk = Arc::new(std::mem::take(&mut self.chunk).into_boxed_slice());
        let first = self.added - self.pending.len();
        for (i, (start, len)) in self.pending.drain(..).enumerate() {
            sealed(
                first + i,
                SharedPath::new(chunk.clone(), start as usize, len as usize),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn paths_in_chunks_read_order_and_look_up_as_their_bytes() {
        let names: Vec<Vec<u8>> = (0..10_000)
            .map(|i| format!("usr/lib/python3/{i:05}/module.py").into_bytes())
            .chain([vec![b'x'; CHUNK + 7], Vec::new(), b"a".to_vec()])
            .collect();
        let mut chunks = PathChunks::default();
        let mut out: Vec<SharedPath> = Vec::new();
        for n in &names {
            chunks.add(n, &mut |i, p| {
                assert_eq!(i, out.len());
                out.push(p)
            });
            assert_eq!(chunks.last(), Some(&n[..]));
        }
        chunks.seal(&mut |i, p| {
            assert_eq!(i, out.len());
            out.push(p)
        });
        assert_eq!(out.len(), names.len());
        for (p, n) in out.iter().zip(&names) {
            assert_eq!(&p[..], &n[..]);
        }
        // More than one chunk was made, and paths share them.
        let chunks_used: std::collections::HashSet<*const Box<[u8]>> =
            out.iter().map(|p| Arc::as_ptr(&p.chunk)).collect();
        assert!(
            chunks_used.len() > 2 && chunks_used.len() < 20,
            "{}",
            chunks_used.len()
        );

        let map: BTreeMap<SharedPath, usize> = out
            .iter()
            .cloned()
            .enumerate()
            .map(|(i, p)| (p, i))
            .collect();
        assert_eq!(map.get(&b"usr/lib/python3/00042/module.py"[..]), Some(&42));
        assert_eq!(map.get(&b""[..]), Some(&(names.len() - 2)));
        let mut sorted = names.clone();
        sorted.sort();
        let keys: Vec<&[u8]> = map.keys().map(|k| &k[..]).collect();
        assert_eq!(keys, sorted.iter().map(|n| &n[..]).collect::<Vec<_>>());
        assert_eq!(SharedPath::from(&b"a"[..]), out[names.len() - 1]);
        assert_eq!(
            format!("{:?}", SharedPath::from(&b"etc/x"[..])),
            "\"etc/x\""
        );
    }
}
