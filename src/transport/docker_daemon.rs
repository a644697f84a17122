//! `docker-daemon:NAME[:TAG]` (skopeo's name for it): an image in a local
//! Docker or Podman engine, through the engine's API ([`super::engine`]).
//!
//! Reading: `GET /images/{name}/get` is a `docker save` stream; the
//! docker-archive reader spools it (bounded, up to its end-of-archive
//! marker) and serves it like any `docker-archive:` file.
//!
//! Writing: blobs are staged by the docker-archive writer; at commit the
//! archive it writes streams into `POST /images/load`, and only then does
//! the engine learn the name. Until the last few KiB of the archive go out
//! (under a [`permit`](crate::cleanup::permit)) the engine cannot complete
//! the load, so a run that fails or is stopped before commit loads
//! nothing. After the load, the engine is asked for the image by name and
//! its layers are checked against what was sent.

use std::path::Path;

use anyhow::{Context, Result, bail};

use super::docker_archive::{DockerArchiveDest, DockerArchiveSource, Spool};
use super::engine::{Engine, EngineError};
use super::{Capabilities, Dest, Staged};
use crate::image::{Descriptor, Manifest};
use crate::reference::RegistryRef;

/// Opens image `name` of `engine` for reading, spooling at most
/// `max_archive` bytes of its export.
pub fn open_source(engine: &Engine, name: &str, max_archive: u64) -> Result<DockerArchiveSource> {
    let location = format!("docker-daemon:{name}");
    let missing = || EngineError::NoSuchImage {
        address: engine.address(),
        name: name.to_string(),
    };
    if engine.image(name)?.is_none() {
        return Err(anyhow::Error::new(missing()).context(format!(
            "{location}: not in the local engine (see `docker images` or `podman images`)"
        )));
    }
    let export = engine.export(name)?;
    DockerArchiveSource::from_stream(
        export,
        Spool {
            location,
            reading: format!("reading the image from the engine at {}", engine.address()),
            prefix: "slim-engine-",
            max: max_archive,
        },
        None,
    )
}

/// An image loaded into an engine at commit.
pub struct DockerDaemonDest {
    engine: Engine,
    archive: DockerArchiveDest,
}

impl DockerDaemonDest {
    /// `name` must be `NAME[:TAG]` (`:latest` when no tag): an engine
    /// names what it loads by tag.
    pub fn create(engine: Engine, name: &str) -> Result<DockerDaemonDest> {
        let parsed = RegistryRef::parse(name)?;
        if parsed.digest.is_some() {
            bail!(
                "docker-daemon:{name}: an engine names a loaded image NAME:TAG, not by digest; drop the @digest"
            );
        }
        Ok(DockerDaemonDest {
            engine,
            archive: DockerArchiveDest::staged(Some(name.to_string()), "slim-engine-")?,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    fn tag(&self) -> &str {
        self.archive.repo_tag().expect("created with a name")
    }
}

/// Runs a transport step, its failure worded by this module.
fn in_load<T>(f: impl FnOnce() -> Result<T>) -> crate::transport::Result<T> {
    f().map_err(crate::transport::Error::load)
}

impl Dest for DockerDaemonDest {
    fn name(&self) -> String {
        format!("docker-daemon:{}", self.tag())
    }

    fn capabilities(&self) -> Capabilities {
        self.archive.capabilities()
    }

    fn has_blob(&self, desc: &Descriptor) -> crate::transport::Result<bool> {
        self.archive.has_blob(desc)
    }

    fn staging_dir(&self) -> &Path {
        self.archive.staging_dir()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> crate::transport::Result<()> {
        self.archive.put_blob(desc, blob)
    }

    fn put_manifest(&self, m: &Manifest) -> crate::transport::Result<()> {
        self.archive.put_manifest(m)
    }

    fn commit(&self, root: &Manifest) -> crate::transport::Result<()> {
        in_load(|| {
            let name = self.name();
            let address = self.engine.address();
            let diff_ids = self.archive.diff_ids(root)?;
            let mut load = self
                .engine
                .load()
                .with_context(|| format!("loading {name}"))?;
            if let Err(e) = self.archive.write_archive(&mut load, root) {
                return Err(load.fail(e)).with_context(|| format!("loading {name} into {address}"));
            }
            // The engine has all but the archive's tail: from here the load
            // completes, so a stop waits for it.
            let _permit = crate::cleanup::permit()?;
            let said = load
                .finish()
                .with_context(|| format!("loading {name} into {address}"))?;
            tracing::info!("{address}: {}", said.join("; "));
            match self.engine.image(self.tag())? {
                Some(info) if info.diff_ids == diff_ids => Ok(()),
                Some(info) => bail!(
                    "loading {name} into {address}: the engine's {} has layers {:?}, not the {:?} slim sent",
                    self.tag(),
                    info.diff_ids,
                    diff_ids
                ),
                None => bail!(
                    "loading {name} into {address}: the engine answered the load ({}) but has no image {} afterwards",
                    said.join("; "),
                    self.tag()
                ),
            }
        })
    }
}
