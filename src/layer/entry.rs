//! Tar entries of a layer as slim models them: a normalised path, a kind
//! (with whiteouts parsed into their own kinds at the edge), the header
//! fields extraction applies, and where the content sits in a spool file.
//!
//! Whiteouts follow the OCI image spec ("Representing Changes",
//! "Whiteouts"): `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq`
//! in a directory hides everything lower layers put in it. Other `.wh..wh.`
//! names are AUFS bookkeeping and are dropped.

use std::fmt;
use std::sync::Arc;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// A hard link to the path in `Entry::link`.
    Hardlink,
    Char,
    Block,
    Fifo,
    /// `.wh.NAME`: `path` is the deleted path.
    Whiteout,
    /// `.wh..wh..opq`: `path` is the directory made opaque.
    Opaque,
}

impl Kind {
    const ALL: [Kind; 9] = [
        Kind::File,
        Kind::Dir,
        Kind::Symlink,
        Kind::Hardlink,
        Kind::Char,
        Kind::Block,
        Kind::Fifo,
        Kind::Whiteout,
        Kind::Opaque,
    ];

    pub fn is_dir(self) -> bool {
        self == Kind::Dir
    }

    pub fn is_whiteout(self) -> bool {
        matches!(self, Kind::Whiteout | Kind::Opaque)
    }
}

/// A PAX record carried over from the source (xattrs, sub-second times,
/// large ids), in its original order.
pub type PaxRecord = (Box<str>, Box<[u8]>);

/// Who owns an entry: ids and names. A layer has few distinct owners, so
/// its entries share them ([`Owners`]).
/// Ordered by uid, gid, uname, gname (dedup groups by it).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Owner {
    pub uid: u64,
    pub gid: u64,
    pub uname: Box<[u8]>,
    pub gname: Box<[u8]>,
}

/// The parts of an entry most entries lack (a link target, device
/// numbers, PAX records, values wider than the entry holds), kept in the
/// entry's own [`Tail`] so that a plain file or directory pays nothing for
/// them. 48 bytes: a symlink has one of its own.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// Symlink target as written, or the normalised hard link target.
    pub link: Option<Box<[u8]>>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub pax: Option<Box<[PaxRecord]>>,
    /// Set by [`Entry::with`] (leave it `None`).
    pub wide: Option<Box<Wide>>,
}

const _: () = assert!(std::mem::size_of::<Extra>() <= 48);

/// Values wider than an [`Entry`] holds.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Wide {
    /// The content length, when 32 bits do not hold it.
    size: Option<u64>,
    /// The time, when it is before 1970 or after 2106.
    mtime: Option<i64>,
    /// The place in the spool, when 40 bits do not hold it.
    offset: Option<u64>,
    /// The mode, when 16 bits do not hold it.
    mode: Option<u32>,
}

/// An entry's owner and its [`Extra`]: shared by every plain entry of a
/// layer with that owner (one allocation for a million `root:root`
/// files), an entry's own when it has something extra.
#[derive(Debug, Default)]
pub struct Tail {
    pub owner: Arc<Owner>,
    pub extra: Extra,
}

/// One entry of a layer. Kept small (40 bytes and its path): an image can
/// hold millions, and every one is in memory until the image is written.
/// The size and time take 32 bits here, the place in the spool 40 and the
/// mode 16; the rare wider ones are kept in the entry's [`Tail`]. Read
/// them with [`Entry::size`], [`Entry::mtime`], [`Entry::offset`] and
/// [`Entry::mode`].
#[derive(Clone, Debug)]
pub struct Entry {
    /// Normalised: no leading `/` or `./`, no trailing `/`, no `.` or `..`
    /// components; the root directory is the empty path.
    /// Shared with the squash's tree and plan, which name the same path.
    pub path: super::shared_path::SharedPath,
    tail: Arc<Tail>,
    /// Where the content starts in the layer's spool file (40 bits), the
    /// mode (16) and the kind (8), or [`IN_TAIL`]'s bits for the first two.
    packed: u64,
    /// Content length (regular files), or [`IN_TAIL`].
    size: u32,
    /// Seconds since the epoch, or [`IN_TAIL`].
    mtime: u32,
}

/// A value the entry's own bits do not hold: its tail has it.
const IN_TAIL: u32 = u32::MAX;
const OFFSET_BITS: u32 = 40;
const OFFSET_IN_TAIL: u64 = (1 << OFFSET_BITS) - 1;
const MODE_IN_TAIL: u64 = 0xffff;

// Every entry of an image is in memory until it is written: keep it small.
const _: () = assert!(std::mem::size_of::<Entry>() <= 40);

impl Entry {
    /// A root-owned entry with no content, link or PAX record.
    pub fn new(path: &[u8], kind: Kind, mode: u32, mtime: i64) -> Entry {
        Entry::with(
            path.into(),
            kind,
            mode,
            mtime,
            0,
            0,
            &Arc::default(),
            Extra::default(),
        )
    }

    /// An entry of `kind` with its header fields, `size` bytes of content
    /// at `offset` in the spool; `plain` is its owner's shared tail
    /// ([`Owners::get`]), used as it is when there is nothing `extra`.
    #[allow(clippy::too_many_arguments)]
    pub fn with(
        path: super::shared_path::SharedPath,
        kind: Kind,
        mode: u32,
        mtime: i64,
        size: u64,
        offset: u64,
        plain: &Arc<Tail>,
        mut extra: Extra,
    ) -> Entry {
        let narrow = |v: Option<u32>| v.filter(|&v| v != IN_TAIL);
        let size32 = narrow(u32::try_from(size).ok());
        let mtime32 = narrow(u32::try_from(mtime).ok());
        if size32.is_none() {
            extra.wide.get_or_insert_default().size = Some(size);
        }
        if mtime32.is_none() {
            extra.wide.get_or_insert_default().mtime = Some(mtime);
        }
        let offset40 = if offset < OFFSET_IN_TAIL {
            offset
        } else {
            extra.wide.get_or_insert_default().offset = Some(offset);
            OFFSET_IN_TAIL
        };
        let mode16 = if u64::from(mode) < MODE_IN_TAIL {
            u64::from(mode)
        } else {
            extra.wide.get_or_insert_default().mode = Some(mode);
            MODE_IN_TAIL
        };
        let tail = if extra == Extra::default() {
            Arc::clone(plain)
        } else {
            Arc::new(Tail {
                owner: Arc::clone(&plain.owner),
                extra,
            })
        };
        Entry {
            path,
            tail,
            packed: offset40 | mode16 << OFFSET_BITS | (kind as u64) << (OFFSET_BITS + 16),
            size: size32.unwrap_or(IN_TAIL),
            mtime: mtime32.unwrap_or(IN_TAIL),
        }
    }

    fn wide(&self) -> &Wide {
        self.tail
            .extra
            .wide
            .as_deref()
            .expect("a value wider than the entry is in its tail")
    }

    pub fn kind(&self) -> Kind {
        Kind::ALL[(self.packed >> (OFFSET_BITS + 16)) as usize]
    }

    /// Mode bits as the header gave them.
    pub fn mode(&self) -> u32 {
        match (self.packed >> OFFSET_BITS) & 0xffff {
            MODE_IN_TAIL => self
                .wide()
                .mode
                .expect("a mode past 16 bits is in the tail"),
            m => m as u32,
        }
    }

    /// Where the content starts in the layer's spool file.
    pub fn offset(&self) -> u64 {
        match self.packed & OFFSET_IN_TAIL {
            OFFSET_IN_TAIL => self
                .wide()
                .offset
                .expect("an offset past 40 bits is in the tail"),
            o => o,
        }
    }

    /// Content length (regular files).
    pub fn size(&self) -> u64 {
        match self.size {
            IN_TAIL => self
                .wide()
                .size
                .expect("a size past 32 bits is in the tail"),
            s => u64::from(s),
        }
    }

    /// Seconds since the epoch; negative before 1970 (GNU base-256 fields).
    pub fn mtime(&self) -> i64 {
        match self.mtime {
            IN_TAIL => self
                .wide()
                .mtime
                .expect("a time past 32 bits is in the tail"),
            t => i64::from(t),
        }
    }

    pub fn owner(&self) -> &Owner {
        &self.tail.owner
    }

    pub fn uid(&self) -> u64 {
        self.tail.owner.uid
    }

    pub fn gid(&self) -> u64 {
        self.tail.owner.gid
    }

    pub fn uname(&self) -> &[u8] {
        &self.tail.owner.uname
    }

    pub fn gname(&self) -> &[u8] {
        &self.tail.owner.gname
    }

    /// Symlink target as written, or the normalised hard link target.
    pub fn link(&self) -> Option<&[u8]> {
        self.tail.extra.link.as_deref()
    }

    /// `(major, minor)` of a device node; `(0, 0)` for the rest.
    pub fn device(&self) -> (u32, u32) {
        (self.tail.extra.dev_major, self.tail.extra.dev_minor)
    }

    /// The PAX records carried over from the source, in their order.
    pub fn pax(&self) -> Option<&[PaxRecord]> {
        self.tail.extra.pax.as_deref()
    }

    /// The xattrs this entry carries (`SCHILY.xattr.*` PAX records).
    pub fn xattrs(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.pax()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| k.strip_prefix("SCHILY.xattr.").map(|name| (name, &v[..])))
    }

    pub fn display_path(&self) -> String {
        display(&self.path)
    }
}

/// The owners of a layer's entries, shared: `root:root` is one allocation
/// for a million entries, not a million. Bounded: past [`Owners::MAX`]
/// distinct owners, new ones are not remembered (a hostile layer cannot
/// grow the table).
#[derive(Default)]
pub struct Owners {
    set: std::collections::HashMap<Arc<Owner>, Arc<Tail>>,
    /// The tail returned last: most entries have their neighbour's owner,
    /// found without building a key.
    last: Option<Arc<Tail>>,
}

impl Owners {
    pub const MAX: usize = 1024;

    /// The shared tail of entries owned by `uid`/`gid` (`uname`/`gname`)
    /// with nothing extra.
    pub fn get(&mut self, uid: u64, gid: u64, uname: &[u8], gname: &[u8]) -> Arc<Tail> {
        if let Some(l) = &self.last {
            let o = &l.owner;
            if (o.uid, o.gid, &o.uname[..], &o.gname[..]) == (uid, gid, uname, gname) {
                return Arc::clone(l);
            }
        }
        let owner = Owner {
            uid,
            gid,
            uname: uname.into(),
            gname: gname.into(),
        };
        let tail = match self.set.get(&owner) {
            Some(t) => Arc::clone(t),
            None => {
                let owner = Arc::new(owner);
                let t = Arc::new(Tail {
                    owner: Arc::clone(&owner),
                    extra: Extra::default(),
                });
                if self.set.len() < Self::MAX {
                    self.set.insert(owner, Arc::clone(&t));
                }
                t
            }
        };
        self.last = Some(Arc::clone(&tail));
        tail
    }
}

/// A path for messages.
pub fn display(path: &[u8]) -> String {
    if path.is_empty() {
        "/".to_string()
    } else {
        format!("/{}", String::from_utf8_lossy(path))
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error(
        "entry {path:?} escapes the image root (contains '..'); the layer is malformed or malicious"
    )]
    Escapes { path: String },
    #[error(
        "entry {path:?} is a whiteout of an empty, '.' or '..' name, which would delete its own directory or the one above it; the layer is malformed or malicious"
    )]
    BadWhiteout { path: String },
}

/// Normalises a tar path: strips `/` and `./` prefixes, `.` components and
/// trailing slashes; rejects `..`.
pub fn normalize(raw: &[u8]) -> Result<Box<[u8]>, PathError> {
    let mut out: Vec<u8> = Vec::with_capacity(raw.len());
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                return Err(PathError::Escapes {
                    path: String::from_utf8_lossy(raw).into_owned(),
                });
            }
            c => {
                if !out.is_empty() {
                    out.push(b'/');
                }
                out.extend_from_slice(c);
            }
        }
    }
    Ok(out.into_boxed_slice())
}

/// What a normalised path means as a whiteout, if it is one.
#[derive(Debug, PartialEq, Eq)]
pub enum Whiteout {
    /// Delete this path.
    Delete(Box<[u8]>),
    /// Hide lower content of this directory.
    Opaque(Box<[u8]>),
    /// AUFS metadata (`.wh..wh.plnk` etc.): not part of the image.
    Meta,
}

pub const WHITEOUT_PREFIX: &[u8] = b".wh.";
pub const OPAQUE: &[u8] = b".wh..wh..opq";

/// `Ok(None)` for an ordinary path. A whiteout of `""`, `.` or `..` is
/// refused: it names no entry of the directory (umoci deletes the directory
/// itself, or its parent, and then fails).
pub fn parse_whiteout(path: &[u8]) -> Result<Option<Whiteout>, PathError> {
    let (dir, base) = split_parent(path);
    if dir
        .split(|b| *b == b'/')
        .any(|c| c.starts_with(b".wh..wh."))
    {
        return Ok(Some(Whiteout::Meta));
    }
    let Some(name) = base.strip_prefix(WHITEOUT_PREFIX) else {
        return Ok(None);
    };
    if base == OPAQUE {
        return Ok(Some(Whiteout::Opaque(dir.into())));
    }
    if name.starts_with(WHITEOUT_PREFIX) {
        return Ok(Some(Whiteout::Meta));
    }
    if matches!(name, b"" | b"." | b"..") {
        return Err(PathError::BadWhiteout {
            path: String::from_utf8_lossy(path).into_owned(),
        });
    }
    Ok(Some(Whiteout::Delete(join(dir, name))))
}

/// `(parent, basename)`; the parent of a top-level name is the root (empty).
pub fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub fn join(dir: &[u8], name: &[u8]) -> Box<[u8]> {
    if dir.is_empty() {
        name.into()
    } else {
        let mut v = Vec::with_capacity(dir.len() + 1 + name.len());
        v.extend_from_slice(dir);
        v.push(b'/');
        v.extend_from_slice(name);
        v.into_boxed_slice()
    }
}

/// The proper ancestors of a path, nearest first (`a/b/c` -> `a/b`, `a`).
pub fn ancestors(path: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = path.len();
    std::iter::from_fn(move || {
        let i = path[..end].iter().rposition(|b| *b == b'/')?;
        end = i;
        Some(&path[..i])
    })
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Kind::File => "file",
            Kind::Dir => "directory",
            Kind::Symlink => "symlink",
            Kind::Hardlink => "hard link",
            Kind::Char => "character device",
            Kind::Block => "block device",
            Kind::Fifo => "fifo",
            Kind::Whiteout => "whiteout",
            Kind::Opaque => "opaque whiteout",
        };
        f.write_str(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes() {
        assert_eq!(&*normalize(b"./usr/bin/").unwrap(), b"usr/bin");
        assert_eq!(&*normalize(b"/etc//passwd").unwrap(), b"etc/passwd");
        assert_eq!(&*normalize(b"./").unwrap(), b"");
        assert_eq!(&*normalize(b"a/./b").unwrap(), b"a/b");
        assert!(normalize(b"../etc/passwd").is_err());
        assert!(normalize(b"a/../../b").is_err());
    }

    #[test]
    fn whiteouts() {
        let parse = |p: &[u8]| parse_whiteout(p).unwrap();
        assert_eq!(
            parse(b"tmp/.wh.build.log"),
            Some(Whiteout::Delete(b"tmp/build.log"[..].into()))
        );
        assert_eq!(parse(b".wh.top"), Some(Whiteout::Delete(b"top"[..].into())));
        assert_eq!(
            parse(b"app/.wh..wh..opq"),
            Some(Whiteout::Opaque(b"app"[..].into()))
        );
        assert_eq!(
            parse(b".wh..wh..opq"),
            Some(Whiteout::Opaque(b""[..].into()))
        );
        assert_eq!(parse(b".wh..wh.plnk/12"), Some(Whiteout::Meta));
        assert_eq!(parse(b"x/.wh..wh.plnk"), Some(Whiteout::Meta));
        assert_eq!(parse(b"usr/bin/ls"), None);
        for bad in [&b"d/.wh."[..], b"d/.wh..", b"d/.wh...", b".wh."] {
            assert!(parse_whiteout(bad).is_err(), "{bad:?}");
        }
    }

    /// Sizes and times past 32 bits (and the one value that marks them)
    /// come back whole from the entry's own tail; plain entries of one
    /// owner share theirs.
    #[test]
    fn wide_sizes_and_times_come_back_and_plain_entries_share_a_tail() {
        let mut owners = Owners::default();
        let root = owners.get(0, 0, b"root", b"root");
        let make = |size: u64, mtime: i64| {
            Entry::with(
                b"f"[..].into(),
                Kind::File,
                0o644,
                mtime,
                size,
                7,
                &root,
                Extra::default(),
            )
        };
        for (size, mtime) in [
            (0, 0),
            (12, 1_700_000_000),
            (u64::from(u32::MAX) - 1, i64::from(u32::MAX) - 1),
            (u64::from(u32::MAX), i64::from(u32::MAX)),
            (5 << 30, -1),
            (u64::MAX, i64::MIN),
            (1 << 40, 1 << 33),
        ] {
            let e = make(size, mtime);
            assert_eq!((e.size(), e.mtime(), e.offset()), (size, mtime, 7));
            assert_eq!((e.uid(), e.uname()), (0, &b"root"[..]));
            let shared = Arc::ptr_eq(&e.tail, &root);
            let narrow = size < u64::from(u32::MAX) && (0..i64::from(u32::MAX)).contains(&mtime);
            assert_eq!(shared, narrow, "size {size}, mtime {mtime}");
        }
        // A link target makes the tail the entry's own, with its owner.
        let mut l = make(0, 0);
        l = Entry::with(
            l.path.clone(),
            Kind::Symlink,
            0o777,
            0,
            0,
            0,
            &owners.get(0, 0, b"root", b"root"),
            Extra {
                link: Some(b"target"[..].into()),
                ..Extra::default()
            },
        );
        assert_eq!(l.link(), Some(&b"target"[..]));
        assert!(!Arc::ptr_eq(&l.tail, &root));
        assert!(Arc::ptr_eq(&l.tail.owner, &root.owner));
        assert_eq!(std::mem::size_of::<Entry>(), 40);
    }

    /// Places in the spool past 40 bits and modes past 16 (and the values
    /// that mark them) come back whole, and every kind comes back as
    /// itself beside any mode and place.
    #[test]
    fn wide_places_and_modes_come_back_with_their_kind() {
        let plain = Arc::default();
        for kind in Kind::ALL {
            for (offset, mode) in [
                (0, 0),
                (4096, 0o644),
                (OFFSET_IN_TAIL - 1, 0o100_644),
                (OFFSET_IN_TAIL, 0xffff),
                (1 << 40, 0x1_0000),
                (u64::MAX, 0o7_777_777),
                (u64::MAX, u32::MAX),
            ] {
                let e = Entry::with(
                    b"x"[..].into(),
                    kind,
                    mode,
                    5,
                    3,
                    offset,
                    &plain,
                    Extra::default(),
                );
                assert_eq!(
                    (e.kind(), e.mode(), e.offset(), e.size(), e.mtime()),
                    (kind, mode, offset, 3, 5)
                );
                let narrow = offset < OFFSET_IN_TAIL && u64::from(mode) < MODE_IN_TAIL;
                assert_eq!(Arc::ptr_eq(&e.tail, &plain), narrow, "{offset} {mode:o}");
            }
        }
    }

    #[test]
    fn ancestors_nearest_first() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(ancestors(b"top").count(), 0);
    }
}
