//! Writing an `oci-archive:` file: a layout built in a temp directory next
//! to the target, then a tar of it (sorted, fixed metadata) renamed over the
//! target.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};

use super::dest::set_readable;
use super::{LayoutDest, in_layout};
use crate::cleanup::{self, DirLock, StagingDir};
use crate::image::{Descriptor, Manifest};
use crate::transport::{Capabilities, Dest, Staged};

/// Writes an image as an OCI archive: a layout built in a temp directory,
/// then a tar of it renamed over the target.
pub struct ArchiveDest {
    target: PathBuf,
    tag: Option<String>,
    /// `.slim-archive-…` next to the target: the layout, then the tar.
    tmp: StagingDir,
    layout: LayoutDest,
}

impl ArchiveDest {
    pub fn create(target: &Path, tag: Option<String>) -> Result<ArchiveDest> {
        let parent = parent_dir(target);
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        // Sweeping what killed runs left needs the directory's lock, so that
        // another run's new directory is not taken for a stale one.
        let lock = DirLock::exclusive(&parent).ok();
        let tmp = StagingDir::create_in(&parent, ".slim-archive-", lock.is_some())
            .with_context(|| format!("creating a temp directory in {}", parent.display()))?;
        drop(lock);
        let layout = LayoutDest::create(&tmp.path().join("layout"), tag.clone())?;
        Ok(ArchiveDest {
            target: target.to_path_buf(),
            tag,
            tmp,
            layout,
        })
    }
}

pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Dest for ArchiveDest {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci-archive:{}:{t}", self.target.display()),
            None => format!("oci-archive:{}", self.target.display()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.layout.capabilities()
    }

    fn has_blob(&self, desc: &Descriptor) -> crate::transport::Result<bool> {
        self.layout.has_blob(desc)
    }

    fn staging_dir(&self) -> &Path {
        self.layout.staging_dir()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> crate::transport::Result<()> {
        self.layout.put_blob(desc, blob)
    }

    fn put_manifest(&self, m: &Manifest) -> crate::transport::Result<()> {
        self.layout.put_manifest(m)
    }

    fn commit(&self, root: &Manifest) -> crate::transport::Result<()> {
        self.layout.commit(root)?;
        in_layout(|| {
            let mut out = tempfile::NamedTempFile::new_in(self.tmp.path())?;
            {
                let mut builder = tar::Builder::new(io::BufWriter::new(out.as_file_mut()));
                append_tree(&mut builder, self.layout.dir(), Path::new(""))?;
                builder.into_inner()?.flush()?;
            }
            out.as_file().sync_all()?;
            set_readable(&mut out)?;
            let _permit = cleanup::permit()?;
            out.persist(&self.target)
                .map_err(|e| e.error)
                .with_context(|| format!("writing {}", self.target.display()))?;
            Ok(())
        })
    }
}

/// Appends a directory tree to a tar in sorted order with fixed metadata,
/// skipping slim's staging directories.
pub fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        if name.to_string_lossy().starts_with(".slim-") {
            continue;
        }
        let rel_path = rel.join(&name);
        let full = root.join(&rel_path);
        let meta = fs::metadata(&full)?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &rel_path, io::empty())?;
            append_tree(b, root, &rel_path)?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(meta.len());
            b.append_data(&mut h, &rel_path, fs::File::open(&full)?)?;
        }
    }
    Ok(())
}
