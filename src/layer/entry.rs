//! Tar entries of a layer as slim models them: a normalised path, a kind
//! (with whiteouts parsed into their own kinds at the edge), the header
//! fields extraction applies, and where the content sits in a spool file.
//!
//! Whiteouts follow the OCI image spec ("Representing Changes",
//! "Whiteouts"): `.wh.NAME` deletes NAME from lower layers; `.wh..wh..opq`
//! in a directory hides everything lower layers put in it. Other `.wh..wh.`
//! names are AUFS bookkeeping and are dropped.

use std::fmt;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
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
/// numbers, PAX records), boxed so that a plain file or directory pays 8
/// bytes for them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Extra {
    /// Symlink target as written, or the normalised hard link target.
    pub link: Option<Box<[u8]>>,
    pub dev_major: u32,
    pub dev_minor: u32,
    pub pax: Option<Box<[PaxRecord]>>,
}

impl Extra {
    /// `None` when there is nothing to keep.
    pub fn boxed(self) -> Option<Box<Extra>> {
        (self != Extra::default()).then(|| Box::new(self))
    }
}

/// One entry of a layer. Kept small (64 bytes and its path): an image can
/// hold millions, and every one is in memory until the image is written.
#[derive(Clone, Debug)]
pub struct Entry {
    /// Normalised: no leading `/` or `./`, no trailing `/`, no `.` or `..`
    /// components; the root directory is the empty path.
    /// Shared with the squash's tree and plan, which name the same path.
    pub path: super::shared_path::SharedPath,
    /// Content length (regular files).
    pub size: u64,
    /// Where the content starts in the layer's spool file.
    pub offset: u64,
    /// Seconds since the epoch; negative before 1970 (GNU base-256 fields).
    pub mtime: i64,
    pub owner: std::sync::Arc<Owner>,
    pub extra: Option<Box<Extra>>,
    pub mode: u32,
    pub kind: Kind,
}

// Every entry of an image is in memory until it is written: keep it small.
const _: () = assert!(std::mem::size_of::<Entry>() <= 64);

impl Entry {
    /// A root-owned entry with no content, link or PAX record.
    pub fn new(path: &[u8], kind: Kind, mode: u32, mtime: i64) -> Entry {
        Entry {
            path: path.into(),
            size: 0,
            offset: 0,
            mtime,
            owner: Default::default(),
            extra: None,
            mode,
            kind,
        }
    }

    pub fn uid(&self) -> u64 {
        self.owner.uid
    }

    pub fn gid(&self) -> u64 {
        self.owner.gid
    }

    pub fn uname(&self) -> &[u8] {
        &self.owner.uname
    }

    pub fn gname(&self) -> &[u8] {
        &self.owner.gname
    }

    /// Symlink target as written, or the normalised hard link target.
    pub fn link(&self) -> Option<&[u8]> {
        self.extra.as_ref().and_then(|x| x.link.as_deref())
    }

    /// `(major, minor)` of a device node; `(0, 0)` for the rest.
    pub fn device(&self) -> (u32, u32) {
        self.extra
            .as_ref()
            .map_or((0, 0), |x| (x.dev_major, x.dev_minor))
    }

    /// The PAX records carried over from the source, in their order.
    pub fn pax(&self) -> Option<&[PaxRecord]> {
        self.extra.as_ref().and_then(|x| x.pax.as_deref())
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
    set: std::collections::HashSet<std::sync::Arc<Owner>>,
    /// The owner returned last: most entries have their neighbour's, found
    /// without building a key.
    last: Option<std::sync::Arc<Owner>>,
}

impl Owners {
    pub const MAX: usize = 1024;

    pub fn get(&mut self, uid: u64, gid: u64, uname: &[u8], gname: &[u8]) -> std::sync::Arc<Owner> {
        if let Some(l) = &self.last
            && (l.uid, l.gid, &l.uname[..], &l.gname[..]) == (uid, gid, uname, gname)
        {
            return l.clone();
        }
        let owner = Owner {
            uid,
            gid,
            uname: uname.into(),
            gname: gname.into(),
        };
        let a = match self.set.get(&owner) {
            Some(a) => a.clone(),
            None => {
                let a = std::sync::Arc::new(owner);
                if self.set.len() < Self::MAX {
                    self.set.insert(a.clone());
                }
                a
            }
        };
        self.last = Some(a.clone());
        a
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

    #[test]
    fn ancestors_nearest_first() {
        let a: Vec<&[u8]> = ancestors(b"a/b/c").collect();
        assert_eq!(a, vec![&b"a/b"[..], &b"a"[..]]);
        assert_eq!(ancestors(b"top").count(), 0);
    }
}
