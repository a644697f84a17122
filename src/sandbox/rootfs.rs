//! Materialize an image's tree: apply decoded layers ([`LayerIndex`]), bottom
//! first, into a directory, as an extractor does (OCI image spec, "Applying
//! Changesets"): whiteouts and opaque directories of a layer remove what
//! lower layers put there, then its entries are written in tar order with
//! their modes, owners, times, hard links, symlinks, device nodes and
//! xattrs (where the kernel allows them).
//!
//! Names in layers are hostile. Every path is resolved against the root with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: a symlink in a parent
//! directory is followed as the container will see it, inside the root,
//! never out of it; the last component is never followed (files are made
//! with `O_CREAT | O_EXCL | O_NOFOLLOW`, owners and times set with
//! `AT_SYMLINK_NOFOLLOW`, whatever was there is unlinked first). Paths were
//! already normalised, `..` refused, by the layer reader.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, ResolveFlags};

use crate::layer::entry::{self, Entry, Kind};
use crate::layer::read::LayerIndex;

/// A directory an image tree is materialized in.
pub struct Rootfs {
    path: PathBuf,
    root: OwnedFd,
    /// Directory times, set when all layers are in (writing a child
    /// changes its parent's mtime).
    dir_times: Vec<(Box<[u8]>, i64)>,
    /// What could not be applied as the layer says (xattrs the file system
    /// refuses, device nodes without the privilege), one line each.
    pub warnings: Vec<String>,
}

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

fn io_err(e: rustix::io::Errno) -> io::Error {
    io::Error::from(e)
}

impl Rootfs {
    /// Uses `path` (an empty directory, created if missing) as the root.
    pub fn create(path: &Path) -> Result<Rootfs> {
        std::fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
        Self::open(path)
    }

    /// Opens an existing tree (to read from it).
    pub fn open(path: &Path) -> Result<Rootfs> {
        let root = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)
        .with_context(|| format!("opening {}", path.display()))?;
        Ok(Rootfs {
            path: path.to_path_buf(),
            root,
            dir_times: Vec::new(),
            warnings: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Applies one layer: its whiteouts first (they hide only what lower
    /// layers hold, OCI image spec "Whiteouts"), then its entries in order.
    pub fn apply(&mut self, layer: &LayerIndex, what: &str) -> Result<()> {
        for e in &layer.entries {
            let r = match e.kind() {
                Kind::Whiteout => self.remove(&e.path),
                Kind::Opaque => self.clear_dir(&e.path),
                _ => continue,
            };
            r.with_context(|| {
                format!("{what}: applying the {} of {}", e.kind(), e.display_path())
            })?;
        }
        for e in &layer.entries {
            if e.kind().is_whiteout() {
                continue;
            }
            self.write_entry(e, &layer.spool)
                .with_context(|| format!("{what}: extracting {}", e.display_path()))?;
        }
        Ok(())
    }

    /// Sets directory times, once every layer is in.
    pub fn finish(&mut self) -> Result<()> {
        let times = std::mem::take(&mut self.dir_times);
        for (path, mtime) in times.iter().rev() {
            if let Ok(fd) = self.open_in_root(
                path,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            ) {
                let _ = rfs::futimens(&fd, &stamps(*mtime));
            }
        }
        Ok(())
    }

    fn open_in_root(&self, path: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        let p: &[u8] = if path.is_empty() { b"." } else { path };
        rfs::openat2(
            &self.root,
            p,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            in_root(),
        )
        .map_err(io_err)
    }

    /// The parent directory of `path`, resolved in the root, and the last
    /// component. `None` when the parent does not exist.
    fn parent<'p>(&self, path: &'p [u8]) -> io::Result<Option<(OwnedFd, &'p [u8])>> {
        let (dir, name) = entry::split_parent(path);
        match self.open_in_root(dir, OFlags::PATH | OFlags::DIRECTORY) {
            Ok(fd) => Ok(Some((fd, name))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The directory `path`, made (0755, root-owned, as extractors do for
    /// parents a layer omits) where missing.
    fn ensure_dir(&self, path: &[u8]) -> io::Result<OwnedFd> {
        match self.open_in_root(path, OFlags::PATH | OFlags::DIRECTORY) {
            Err(e) if e.kind() == io::ErrorKind::NotFound && !path.is_empty() => {
                let (dir, name) = entry::split_parent(path);
                let parent = self.ensure_dir(dir)?;
                match rfs::mkdirat(&parent, name, Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(io_err(e)),
                }
                self.open_in_root(path, OFlags::PATH | OFlags::DIRECTORY)
            }
            r => r,
        }
    }

    /// Removes `path` (recursively) if it exists.
    fn remove(&self, path: &[u8]) -> io::Result<()> {
        if path.is_empty() {
            return self.clear_dir(path);
        }
        match self.parent(path)? {
            Some((dir, name)) => remove_at(dir.as_fd(), name),
            None => Ok(()),
        }
    }

    /// Removes everything in the directory `path` (an opaque whiteout).
    fn clear_dir(&self, path: &[u8]) -> io::Result<()> {
        let dir =
            match self.open_in_root(path, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW) {
                Ok(d) => d,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc_errno::ENOENT | libc_errno::ENOTDIR | libc_errno::ELOOP)
                    ) =>
                {
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
        clear_children(dir.as_fd())
    }

    fn write_entry(&mut self, e: &Entry, spool: &File) -> Result<()> {
        if e.path.is_empty() {
            // The root directory itself: its metadata only.
            let fd = self.open_in_root(b"", OFlags::RDONLY | OFlags::DIRECTORY)?;
            self.set_owner_mode(fd.as_fd(), e)?;
            self.dir_times.push((e.path.as_ref().into(), e.mtime()));
            return Ok(());
        }
        let (dir, name) = entry::split_parent(&e.path);
        let parent = self.ensure_dir(dir).map_err(|err| {
            anyhow::anyhow!(
                "its parent {} is not a directory in the tree ({err})",
                entry::display(dir)
            )
        })?;
        let parent = parent.as_fd();
        // What lower layers (or earlier entries) left under this name.
        let existing = rfs::statat(parent, name, AtFlags::SYMLINK_NOFOLLOW).ok();
        let existing_is_dir = existing
            .as_ref()
            .is_some_and(|st| rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory);
        if existing.is_some() && !(e.kind() == Kind::Dir && existing_is_dir) {
            remove_at(parent, name)?;
        }
        let mode = Mode::from_raw_mode(e.mode() & 0o7777);
        match e.kind() {
            Kind::Dir => {
                if !existing_is_dir {
                    rfs::mkdirat(parent, name, Mode::from_raw_mode(0o700)).map_err(io_err)?;
                }
                let fd = rfs::openat(
                    parent,
                    name,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(io_err)?;
                self.set_owner_mode(fd.as_fd(), e)?;
                self.set_xattrs(fd.as_fd(), e);
                self.dir_times.push((e.path.as_ref().into(), e.mtime()));
            }
            Kind::File => {
                let fd = rfs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(io_err)?;
                let mut out = File::from(fd);
                copy_range(spool, e.offset(), e.size(), &mut out)?;
                self.set_owner_mode(out.as_fd(), e)?;
                self.set_xattrs(out.as_fd(), e);
                rfs::futimens(&out, &stamps(e.mtime())).map_err(io_err)?;
            }
            Kind::Symlink => {
                let target = e.link().unwrap_or_default();
                rfs::symlinkat(target, parent, name).map_err(io_err)?;
                self.chown_at(parent, name, e);
                let _ = rfs::utimensat(parent, name, &stamps(e.mtime()), AtFlags::SYMLINK_NOFOLLOW);
            }
            Kind::Hardlink => {
                let target = e.link().unwrap_or_default();
                let (tdir, tname) = self.parent(target)?.with_context(|| {
                    format!(
                        "hard link to {}, which the tree does not hold",
                        entry::display(target)
                    )
                })?;
                // Flags 0: the link names the target itself, a symlink
                // included, never what a symlink points at.
                rfs::linkat(&tdir, tname, parent, name, AtFlags::empty())
                    .map_err(io_err)
                    .with_context(|| format!("hard link to {}", entry::display(target)))?;
            }
            Kind::Char | Kind::Block | Kind::Fifo => {
                let ty = match e.kind() {
                    Kind::Char => rfs::FileType::CharacterDevice,
                    Kind::Block => rfs::FileType::BlockDevice,
                    _ => rfs::FileType::Fifo,
                };
                let dev = {
                    let (major, minor) = e.device();
                    rfs::makedev(major, minor)
                };
                match rfs::mknodat(parent, name, ty, mode, dev) {
                    Ok(()) => {
                        self.chown_at(parent, name, e);
                        let _ = rfs::chmodat(parent, name, mode, AtFlags::empty());
                    }
                    Err(err) => self.warnings.push(format!(
                        "{}: {} not created ({err})",
                        e.display_path(),
                        e.kind()
                    )),
                }
            }
            Kind::Whiteout | Kind::Opaque => unreachable!("applied before"),
        }
        Ok(())
    }

    /// Owner, then mode (chown clears setuid bits, so mode comes second).
    fn set_owner_mode(&mut self, fd: BorrowedFd<'_>, e: &Entry) -> Result<()> {
        if let Err(err) = rfs::fchown(fd, Some(uid(e.uid())), Some(gid(e.gid()))) {
            self.warnings.push(format!(
                "{}: owner {}:{} not set ({err})",
                e.display_path(),
                e.uid(),
                e.gid()
            ));
        }
        rfs::fchmod(fd, Mode::from_raw_mode(e.mode() & 0o7777)).map_err(io_err)?;
        Ok(())
    }

    fn chown_at(&mut self, dir: BorrowedFd<'_>, name: &[u8], e: &Entry) {
        if let Err(err) = rfs::chownat(
            dir,
            name,
            Some(uid(e.uid())),
            Some(gid(e.gid())),
            AtFlags::SYMLINK_NOFOLLOW,
        ) {
            self.warnings.push(format!(
                "{}: owner {}:{} not set ({err})",
                e.display_path(),
                e.uid(),
                e.gid()
            ));
        }
    }

    /// Xattrs after owner and mode: `security.capability` does not survive
    /// a chown.
    fn set_xattrs(&mut self, fd: BorrowedFd<'_>, e: &Entry) {
        for (name, value) in e.xattrs() {
            if let Err(err) = rfs::fsetxattr(fd, name, value, rfs::XattrFlags::empty()) {
                self.warnings.push(format!(
                    "{}: xattr {name} not set ({err})",
                    e.display_path()
                ));
            }
        }
    }

    /// Reads a file of the tree (at most `max` bytes), resolving symlinks
    /// inside the root: `/etc/passwd -> /host/etc/shadow` reads the tree's
    /// own `host/etc/shadow`, never the host's.
    pub fn read_file(&self, path: &str, max: u64) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        self.open_file(path)?.take(max).read_to_end(&mut out)?;
        Ok(out)
    }

    /// Opens a file of the tree for reading, symlinks resolved inside the
    /// root as [`Rootfs::read_file`] does.
    pub fn open_file(&self, path: &str) -> io::Result<File> {
        let fd = self.open_in_root(path.trim_start_matches('/').as_bytes(), OFlags::RDONLY)?;
        Ok(File::from(fd))
    }

    /// Whether `path` resolves, in the root, to something that is not a
    /// directory (symlinks followed).
    pub fn is_file(&self, path: &str) -> bool {
        self.open_in_root(path.trim_start_matches('/').as_bytes(), OFlags::PATH)
            .ok()
            .and_then(|fd| rfs::fstat(&fd).ok())
            .is_some_and(|st| rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::Directory)
    }

    /// Why `path` cannot be executed in the tree, naming the missing piece:
    /// the path itself, the target a symlink chain ends at, or a script's
    /// interpreter (`#!`). `None` when it is there.
    pub fn missing(&self, path: &str) -> Option<String> {
        let mut current = path.to_string();
        let mut chain = Vec::new();
        for _ in 0..40 {
            let rel = current.trim_start_matches('/').to_string();
            let (dir, name) = entry::split_parent(rel.as_bytes());
            let parent = match self.open_in_root(dir, OFlags::PATH | OFlags::DIRECTORY) {
                Ok(p) => p,
                Err(_) => return Some(describe_missing(&current, &chain)),
            };
            match rfs::readlinkat(&parent, name, Vec::new()) {
                Ok(target) => {
                    let target = target.to_string_lossy().into_owned();
                    chain.push(current.clone());
                    current = if target.starts_with('/') {
                        target
                    } else {
                        format!("/{}/{}", String::from_utf8_lossy(dir), target).replace("//", "/")
                    };
                }
                Err(rustix::io::Errno::NOENT) => {
                    return Some(describe_missing(&current, &chain));
                }
                Err(_) => break,
            }
        }
        // It exists: a script's interpreter must too, and so must a
        // dynamic executable's ELF interpreter (without it, exec fails with
        // a bare "no such file or directory").
        let head = self.read_file(path, 64 << 10).ok()?;
        if let Some(line) = head.strip_prefix(b"#!") {
            let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next()?).into_owned();
            let interp = line.split_whitespace().next()?.to_string();
            return self
                .missing(&interp)
                .map(|why| format!("{path} is a script for {interp}, but {why}"));
        }
        let interp = elf_interpreter(&head)?;
        self.missing(&interp)
            .map(|why| format!("{path} needs the ELF interpreter {interp}, but {why}"))
    }
}

/// `PT_INTERP` of an ELF executable, from its first bytes (the program
/// headers and the interpreter's name sit at the start of the file).
fn elf_interpreter(head: &[u8]) -> Option<String> {
    use goblin::elf::Elf;
    use goblin::elf::program_header::{PT_INTERP, ProgramHeader};
    if !head.starts_with(b"\x7fELF") {
        return None;
    }
    let h = Elf::parse_header(head).ok()?;
    let ctx = goblin::container::Ctx::new(h.container().ok()?, h.endianness().ok()?);
    let phs = ProgramHeader::parse(head, h.e_phoff as usize, h.e_phnum as usize, ctx).ok()?;
    let p = phs.iter().find(|p| p.p_type == PT_INTERP)?;
    let start = usize::try_from(p.p_offset).ok()?;
    let bytes = head.get(start..start.checked_add(usize::try_from(p.p_filesz).ok()?)?)?;
    let name = bytes.split(|b| *b == 0).next()?;
    (!name.is_empty()).then(|| String::from_utf8_lossy(name).into_owned())
}

fn describe_missing(path: &str, chain: &[String]) -> String {
    if chain.is_empty() {
        format!("the image has no {path}")
    } else {
        format!(
            "the image has no {path} (what {} links to)",
            chain.join(" -> ")
        )
    }
}

mod libc_errno {
    pub const ENOENT: i32 = 2;
    pub const ENOTDIR: i32 = 20;
    pub const ELOOP: i32 = 40;
}

fn uid(n: u64) -> rfs::Uid {
    rfs::Uid::from_raw(n as u32)
}

fn gid(n: u64) -> rfs::Gid {
    rfs::Gid::from_raw(n as u32)
}

fn stamps(mtime: i64) -> rfs::Timestamps {
    let t = rfs::Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    rfs::Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// Copies `len` bytes at `offset` of the spool.
fn copy_range(spool: &File, mut offset: u64, len: u64, out: &mut File) -> io::Result<()> {
    let mut buf = vec![0u8; (len.min(256 << 10)) as usize];
    let mut left = len;
    while left > 0 {
        let want = left.min(buf.len() as u64) as usize;
        let n = spool.read_at(&mut buf[..want], offset)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the layer spool ended early",
            ));
        }
        out.write_all(&buf[..n])?;
        offset += n as u64;
        left -= n as u64;
    }
    Ok(())
}

/// Removes `name` in `dir`, a directory with all it holds; never follows a
/// symlink.
fn remove_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<()> {
    let st = match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(io_err(e)),
    };
    if rfs::FileType::from_raw_mode(st.st_mode) == rfs::FileType::Directory {
        let sub = rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(io_err)?;
        clear_children(sub.as_fd())?;
        rfs::unlinkat(dir, name, AtFlags::REMOVEDIR).map_err(io_err)
    } else {
        rfs::unlinkat(dir, name, AtFlags::empty()).map_err(io_err)
    }
}

fn clear_children(dir: BorrowedFd<'_>) -> io::Result<()> {
    let mut names = Vec::new();
    {
        let it = rfs::Dir::read_from(dir).map_err(io_err)?;
        for ent in it {
            let ent = ent.map_err(io_err)?;
            let n = ent.file_name().to_bytes();
            if n != b"." && n != b".." {
                names.push(n.to_vec());
            }
        }
    }
    for n in names {
        remove_at(dir, &n)?;
    }
    Ok(())
}

#[cfg(test)]
#[path = "rootfs_tests.rs"]
mod tests;
