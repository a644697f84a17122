//! OCI image layouts (image-layout spec): `oci:DIR[:TAG]` and
//! `oci-archive:FILE[:TAG]`.
//!
//! Reading: `index.json` names images by the `org.opencontainers.image.ref.name`
//! annotation; blobs live at `blobs/<alg>/<hex>`. An archive is read in place
//! through a [`TarIndex`].
//!
//! Writing: blobs are renamed into place as they arrive; `index.json` is
//! replaced atomically in [`Dest::commit`], so the tag appears only when
//! every blob it needs is there. An archive is built as a layout in a temp
//! directory next to the target and renamed over it at the end.

mod archive;
mod dest;

use std::fs;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::tarindex::TarIndex;
use super::{Source, read_manifest_blob};
use crate::digest::Digest;
use crate::image::{Descriptor, MAX_MANIFEST_BYTES, Manifest};

pub use archive::{ArchiveDest, append_tree, parent_dir};
pub use dest::LayoutDest;

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Files of a layout: a directory or a tar of one.
enum Files {
    Dir(PathBuf),
    Tar(TarIndex),
}

impl Files {
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        match self {
            Files::Dir(d) => {
                let p = d.join(name);
                let f = fs::File::open(&p).with_context(|| format!("reading {}", p.display()))?;
                let mut out = Vec::new();
                f.take(limit + 1).read_to_end(&mut out)?;
                if out.len() as u64 > limit {
                    bail!(
                        "{} is larger than the {limit} bytes slim accepts",
                        p.display()
                    );
                }
                Ok(out)
            }
            Files::Tar(t) => t.read(name, limit),
        }
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            Files::Dir(d) => {
                let p = d.join(name);
                Box::new(io::BufReader::with_capacity(
                    256 << 10,
                    fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?,
                ))
            }
            Files::Tar(t) => Box::new(io::BufReader::with_capacity(256 << 10, t.open(name)?)),
        })
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar(t) => t.contains(name),
        }
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// Reads an image from an OCI layout directory or archive.
pub struct LayoutSource {
    files: Files,
    location: String,
    tag: Option<String>,
}

impl LayoutSource {
    pub fn open_dir(path: &Path, tag: Option<String>) -> Result<LayoutSource> {
        if !path.is_dir() {
            // The caller's context names the reference, path and all.
            bail!("no such directory (an OCI layout is a directory with index.json)");
        }
        let s = LayoutSource {
            files: Files::Dir(path.to_path_buf()),
            location: format!("oci:{}", path.display()),
            tag,
        };
        s.check_layout()?;
        Ok(s)
    }

    pub fn open_archive(path: &Path, tag: Option<String>) -> Result<LayoutSource> {
        if !path.is_file() {
            bail!("no such file");
        }
        let s = LayoutSource {
            files: Files::Tar(TarIndex::build(path)?),
            location: format!("oci-archive:{}", path.display()),
            tag,
        };
        s.check_layout()?;
        Ok(s)
    }

    fn check_layout(&self) -> Result<()> {
        if !self.files.exists("index.json") {
            bail!("{}: not an OCI image layout (no index.json)", self.location);
        }
        if self.files.exists("oci-layout") {
            let v: Value = serde_json::from_slice(&self.files.read("oci-layout", 4096)?)
                .with_context(|| format!("{}: oci-layout is not JSON", self.location))?;
            let version = v
                .get("imageLayoutVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !version.starts_with("1.") {
                bail!(
                    "{}: unsupported imageLayoutVersion {version:?}",
                    self.location
                );
            }
        }
        Ok(())
    }

    fn index(&self) -> Result<Vec<Descriptor>> {
        let bytes = self.files.read("index.json", MAX_MANIFEST_BYTES)?;
        let m = Manifest::parse(&format!("{} index.json", self.location), bytes, None)?;
        Ok(m.manifests()?)
    }
}

/// Lists the names in an index.json's entries, for messages.
fn names(entries: &[Descriptor]) -> String {
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

/// Runs a transport step, its failure worded by this module.
fn in_layout<T>(f: impl FnOnce() -> Result<T>) -> crate::transport::Result<T> {
    f().map_err(crate::transport::Error::layout)
}

impl Source for LayoutSource {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.location),
            None => self.location.clone(),
        }
    }

    fn root(&self) -> crate::transport::Result<Manifest> {
        let entry = in_layout(|| {
            let entries = self.index()?;
            let entry = match &self.tag {
                Some(tag) => entries
                    .iter()
                    .find(|d| d.annotations.get(REF_NAME) == Some(tag))
                    .with_context(|| {
                        format!(
                            "{}: no image tagged {tag:?} (tags: {})",
                            self.location,
                            names(&entries)
                        )
                    })?,
                None => match entries.as_slice() {
                    [only] => only,
                    [] => bail!("{}: the layout holds no image", self.location),
                    _ => bail!(
                        "{}: the layout holds {} images; name one with {}:TAG (tags: {})",
                        self.location,
                        entries.len(),
                        self.location,
                        names(&entries)
                    ),
                },
            };
            Ok(entry.clone())
        })?;
        self.manifest(&entry)
    }

    fn manifest(&self, desc: &Descriptor) -> crate::transport::Result<Manifest> {
        let what = format!("manifest {} in {}", desc.digest, self.location);
        let reader = in_layout(|| {
            self.files
                .open(&blob_path(&desc.digest))
                .with_context(|| format!("{what}: missing from the layout"))
        })?;
        read_manifest_blob(&what, reader, desc)
    }

    fn open_blob(&self, desc: &Descriptor) -> crate::transport::Result<Box<dyn Read + Send + '_>> {
        in_layout(|| {
            self.files
                .open(&blob_path(&desc.digest))
                .with_context(|| format!("blob {} is missing from {}", desc.digest, self.location))
        })
    }
}
