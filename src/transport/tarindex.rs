//! Random access into an uncompressed tar file (an `oci-archive:` or a
//! `docker save` tar): one pass records where each member's bytes start,
//! then members are read by seeking, without unpacking anything.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::clean_archive_path;

#[derive(Clone, Debug)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(String),
    Other,
}

/// The members of a tar file, by normalised path.
pub struct TarIndex {
    path: PathBuf,
    members: BTreeMap<String, Member>,
}

impl TarIndex {
    pub fn build(path: &Path) -> Result<TarIndex> {
        let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
        let mut archive = tar::Archive::new(file);
        let mut members = BTreeMap::new();
        let entries = archive
            .entries_with_seek()
            .with_context(|| format!("reading {} as a tar archive", path.display()))?;
        for entry in entries {
            let entry =
                entry.with_context(|| format!("{}: malformed tar archive", path.display()))?;
            let name = entry
                .path()
                .with_context(|| format!("{}: malformed member name", path.display()))?
                .to_string_lossy()
                .into_owned();
            let name = clean_archive_path(&name);
            if name.split('/').any(|c| c == "..") {
                bail!(
                    "{}: member {name:?} escapes the archive (contains '..')",
                    path.display()
                );
            }
            let member = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => Member::File {
                    offset: entry.raw_file_position(),
                    size: entry.size(),
                },
                tar::EntryType::Symlink => Member::Symlink(
                    entry
                        .link_name()
                        .ok()
                        .flatten()
                        .map(|l| l.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
                _ => Member::Other,
            };
            members.insert(name, member);
        }
        Ok(TarIndex {
            path: path.to_path_buf(),
            members,
        })
    }

    /// Follows symlinks (relative to the member's directory) to a file.
    fn resolve(&self, name: &str) -> Option<(u64, u64)> {
        let mut name = clean_archive_path(name);
        for _ in 0..16 {
            match self.members.get(&name)? {
                Member::File { offset, size } => return Some((*offset, *size)),
                Member::Symlink(target) => {
                    let dir = name.rsplit_once('/').map_or("", |(d, _)| d);
                    let joined = if target.starts_with('/') || dir.is_empty() {
                        target.clone()
                    } else {
                        format!("{dir}/{target}")
                    };
                    name = normalise(&joined)?;
                }
                Member::Other => return None,
            }
        }
        None
    }

    pub fn contains(&self, name: &str) -> bool {
        self.resolve(name).is_some()
    }

    pub fn size_of(&self, name: &str) -> Option<u64> {
        self.resolve(name).map(|(_, s)| s)
    }

    /// A reader of one member's bytes.
    pub fn open(&self, name: &str) -> Result<io::Take<File>> {
        let (offset, size) = self
            .resolve(name)
            .with_context(|| format!("{}: no file {name:?} in the archive", self.path.display()))?;
        let mut f =
            File::open(&self.path).with_context(|| format!("opening {}", self.path.display()))?;
        f.seek(SeekFrom::Start(offset))?;
        Ok(f.take(size))
    }

    /// A small member read whole, refused when larger than `limit`.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        let size = self
            .size_of(name)
            .with_context(|| format!("{}: no file {name:?} in the archive", self.path.display()))?;
        if size > limit {
            bail!(
                "{}: {name} is {size} bytes, more than the {limit} slim accepts",
                self.path.display()
            );
        }
        let mut out = Vec::with_capacity(size as usize);
        self.open(name)?.read_to_end(&mut out)?;
        Ok(out)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Resolves `.` and `..` in a member path; `None` if it leaves the archive.
fn normalise(p: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            c => parts.push(c),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_members_and_follows_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.tar");
        let mut b = tar::Builder::new(File::create(&path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, "./blobs/sha256/abc", &b"hello"[..])
            .unwrap();
        let mut l = tar::Header::new_gnu();
        l.set_entry_type(tar::EntryType::Symlink);
        l.set_size(0);
        b.append_link(&mut l, "layer/layer.tar", "../blobs/sha256/abc")
            .unwrap();
        b.finish().unwrap();
        drop(b);
        let idx = TarIndex::build(&path).unwrap();
        assert_eq!(idx.read("blobs/sha256/abc", 100).unwrap(), b"hello");
        assert_eq!(idx.read("layer/layer.tar", 100).unwrap(), b"hello");
        assert!(idx.read("blobs/sha256/abc", 2).is_err());
        assert!(!idx.contains("missing"));
    }
}
