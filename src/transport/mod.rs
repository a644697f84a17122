//! Transports: where images are read from and written to.
//!
//! A [`Source`] hands out the root manifest (or index) a reference names,
//! child manifests and raw blob streams; a [`Dest`] takes verified blobs,
//! child manifests, and finally the root manifest in [`Dest::commit`], which
//! is the only step that makes the image visible under its name (a registry
//! tag, an `index.json` entry, an archive file). A run that fails before
//! `commit` leaves the destination's name as it was.
//!
//! | transport | source | destination |
//! | --- | --- | --- |
//! | registry | [`registry::RegistrySource`] | [`registry::RegistryDest`] |
//! | `oci:` | [`layout::LayoutSource`] over a directory | [`layout::LayoutDest`] |
//! | `oci-archive:` | [`layout::LayoutSource`] over a tar index | [`layout::ArchiveDest`] |
//! | `docker-archive:` | [`docker_archive::DockerArchiveSource`] | [`docker_archive::DockerArchiveDest`] |
//! | `docker-daemon:` | [`docker_daemon::open_source`] (a docker-archive stream) | [`docker_daemon::DockerDaemonDest`] |
//!
//! [`resolve`] decides what a short name (`myapp:latest`) means: the local
//! engine's image, or a registry's. [`engine`] speaks the Docker Engine API
//! over [`unix_http`].
//!
//! Sources and destinations fail with an [`Error`]: the failure of the layer
//! below (registry, digest, manifest, engine, I/O) as that layer words it,
//! or what a layout or archive says is wrong with it.

pub mod docker_archive;
pub mod docker_daemon;
pub mod engine;
mod error;
pub mod growing;
pub mod layout;
pub mod registry;
pub mod resolve;
pub mod tarindex;
pub mod unix_http;

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tempfile::NamedTempFile;

use crate::digest::{Digest, VerifyingReader};
use crate::image::{Descriptor, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Manifest};
use crate::reference::{ImageRef, RegistryRef};
use crate::registry::RegistryClient;

pub use error::{Cause, Error, Result};

/// Where an image is read from.
pub trait Source: Send + Sync {
    /// The reference, for messages.
    fn name(&self) -> String;
    /// The manifest or index the reference names (digest verified).
    fn root(&self) -> Result<Manifest>;
    /// A child manifest of an index (digest verified).
    fn manifest(&self, desc: &Descriptor) -> Result<Manifest>;
    /// The raw bytes of a blob. Not verified: read it through [`open_verified`].
    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>>;
    /// The registry repository this source lives in, for cross-repository
    /// mounts.
    fn registry_location(&self) -> Option<&RegistryRef> {
        None
    }
}

/// What a destination can hold.
#[derive(Clone, Copy, Debug)]
pub struct Capabilities {
    /// Only OCI media types (OCI layouts and archives): Docker v2s2 input is
    /// converted.
    pub oci_only: bool,
    /// One platform image, no index (`docker save` format).
    pub single_image: bool,
    /// Stores manifests as given, so the image keeps its manifest digest
    /// (not so in `docker save` format, which has no manifest).
    pub keeps_manifests: bool,
}

impl Default for Capabilities {
    fn default() -> Self {
        Capabilities {
            oci_only: false,
            single_image: false,
            keeps_manifests: true,
        }
    }
}

/// Where an image is written to.
pub trait Dest: Send + Sync {
    fn name(&self) -> String;
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
    /// Whether the destination already holds this blob (it is not read
    /// again, only its presence and size are checked).
    fn has_blob(&self, desc: &Descriptor) -> Result<bool>;
    /// Mounts a blob from another repository of the same registry; `false`
    /// when that is not possible here.
    fn mount_blob(&self, _desc: &Descriptor, _from: &RegistryRef) -> Result<bool> {
        Ok(false)
    }
    /// The directory to spool blobs in, so that [`Dest::put_blob`] can take
    /// them cheaply (a rename within one file system).
    fn staging_dir(&self) -> &Path;
    /// Stores a verified blob.
    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> Result<()>;
    /// Starts sending a blob slim is still writing, read from `data` as it
    /// grows (`None`: not supported or not worth it here; the blob goes
    /// through [`Dest::put_blob`] once written).
    fn stream_blob(
        &self,
        _data: Box<dyn std::io::Read + Send>,
        _kind: StreamKind,
    ) -> Result<Option<Box<dyn BlobStream>>> {
        Ok(None)
    }
    /// Stores a child manifest (by digest; not named).
    fn put_manifest(&self, m: &Manifest) -> Result<()>;
    /// Stores the root manifest and names it: the last step of a copy.
    fn commit(&self, root: &Manifest) -> Result<()>;
    /// Cleans up after a failed run (the name was never written).
    fn abort(&self) {}
}

/// What a streamed blob is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamKind {
    /// A layer slim is compressing: its digest is known only at the end,
    /// and compression competes for the CPUs.
    NewLayer,
    /// A blob copied as it is, while it is downloaded and verified: its
    /// digest is known and the destination lacks it.
    Copy,
}

/// A blob upload under way while the blob is written; committed under its
/// digest at the end, or abandoned.
pub trait BlobStream: Send {
    fn commit(self: Box<Self>, desc: &Descriptor) -> Result<()>;
    fn abort(self: Box<Self>);
}

/// A blob spooled to a temp file, its digest and size verified.
pub struct Staged {
    pub file: NamedTempFile,
    pub digest: Digest,
    pub size: u64,
}

/// Opens a blob through a reader that fails at the end unless the bytes
/// match the descriptor's digest and size.
pub fn open_verified<'a>(
    src: &'a dyn Source,
    desc: &Descriptor,
) -> anyhow::Result<VerifyingReader<Box<dyn Read + Send + 'a>>> {
    let raw = src.open_blob(desc)?;
    Ok(VerifyingReader::new(
        raw,
        format!("blob {} from {}", desc.digest, src.name()),
        desc.digest.clone(),
        Some(desc.size),
    ))
}

/// Reads a manifest blob of known descriptor, bounded and verified.
pub fn read_manifest_blob(
    what: &str,
    mut reader: impl Read,
    desc: &Descriptor,
) -> Result<Manifest> {
    if desc.size > MAX_MANIFEST_BYTES {
        return Err(crate::image::ImageError::Invalid {
            what: what.to_string(),
            reason: format!(
                "manifest of {} bytes is larger than slim accepts ({MAX_MANIFEST_BYTES})",
                desc.size
            ),
        }
        .into());
    }
    let mut bytes = Vec::with_capacity(desc.size as usize);
    VerifyingReader::new(&mut reader, what, desc.digest.clone(), Some(desc.size))
        .read_to_end(&mut bytes)?;
    Ok(Manifest::parse_with_digest(
        what,
        bytes,
        desc.digest.clone(),
        Some(&desc.media_type),
    )?)
}

/// An image config: at most [`MAX_CONFIG_BYTES`], verified against its
/// descriptor, parsed within [`crate::image::MAX_JSON_VALUES`].
pub fn read_config(src: &dyn Source, desc: &Descriptor) -> anyhow::Result<serde_json::Value> {
    if desc.size > MAX_CONFIG_BYTES {
        anyhow::bail!(
            "config {} is {} bytes, more than slim accepts",
            desc.digest,
            desc.size
        );
    }
    let mut bytes = Vec::new();
    open_verified(src, desc)?
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    Ok(crate::image::parse_json(
        &format!("config {} of {}", desc.digest, src.name()),
        &bytes,
        crate::image::MAX_JSON_VALUES,
    )?)
}

/// An `io::Error` as an `anyhow::Error`, for the pipeline's stages that
/// read blobs. An `io::Error` carrying another error (a verifying reader's
/// [`crate::digest::DigestError`], a download's
/// [`crate::registry::RegistryError`]) shows that error's message and
/// causes as they are, so nothing is unwrapped.
pub fn io_error(e: std::io::Error) -> anyhow::Error {
    anyhow::Error::new(e)
}

/// Bounds on what opening a source may take.
#[derive(Clone, Copy, Debug)]
pub struct SourceLimits {
    /// How much of a `docker-archive:-` stream, or of an engine's export, is
    /// spooled at most.
    pub max_archive_bytes: u64,
}

impl Default for SourceLimits {
    fn default() -> Self {
        SourceLimits {
            max_archive_bytes: 64 << 30,
        }
    }
}

/// Opens a reference for reading.
pub fn open_source(
    r: &ImageRef,
    client: &Arc<RegistryClient>,
    limits: SourceLimits,
) -> anyhow::Result<Box<dyn Source>> {
    Ok(match r {
        ImageRef::Registry(rr) => {
            Box::new(registry::RegistrySource::new(client.clone(), rr.clone()))
        }
        ImageRef::OciLayout { path, tag } => Box::new(
            layout::LayoutSource::open_dir(path, tag.clone())
                .with_context(|| format!("opening {r}"))?,
        ),
        ImageRef::OciArchive { path, tag } => Box::new(
            layout::LayoutSource::open_archive(path, tag.clone())
                .with_context(|| format!("opening {r}"))?,
        ),
        ImageRef::DockerArchive { path, name } => Box::new(
            docker_archive::DockerArchiveSource::open(
                path.as_deref(),
                name.clone(),
                limits.max_archive_bytes,
            )
            .with_context(|| format!("opening {r}"))?,
        ),
        ImageRef::DockerDaemon { name } => {
            let engine = engine::Engine::discover().with_context(|| format!("opening {r}"))?;
            Box::new(docker_daemon::open_source(
                &engine,
                name,
                limits.max_archive_bytes,
            )?)
        }
    })
}

/// Opens a reference for writing. `default_tag` names the image when the
/// reference has no tag of its own (the source's tag).
pub fn open_dest(r: &ImageRef, client: &Arc<RegistryClient>) -> anyhow::Result<Box<dyn Dest>> {
    Ok(match r {
        ImageRef::Registry(rr) => {
            Box::new(registry::RegistryDest::new(client.clone(), rr.clone())?)
        }
        ImageRef::OciLayout { path, tag } => Box::new(
            layout::LayoutDest::create(path, tag.clone())
                .with_context(|| format!("opening {r} for writing"))?,
        ),
        ImageRef::OciArchive { path, tag } => Box::new(
            layout::ArchiveDest::create(path, tag.clone())
                .with_context(|| format!("opening {r} for writing"))?,
        ),
        ImageRef::DockerArchive { path, name } => Box::new(
            docker_archive::DockerArchiveDest::create(path.as_deref(), name.clone())
                .with_context(|| format!("opening {r} for writing"))?,
        ),
        ImageRef::DockerDaemon { name } => {
            let engine =
                engine::Engine::discover().with_context(|| format!("opening {r} for writing"))?;
            Box::new(
                docker_daemon::DockerDaemonDest::create(engine, name)
                    .with_context(|| format!("opening {r} for writing"))?,
            )
        }
    })
}

/// Normalises a path inside an archive: no leading `./` or `/`.
pub fn clean_archive_path(p: &str) -> String {
    let mut s = p;
    loop {
        if let Some(r) = s.strip_prefix("./") {
            s = r;
        } else if let Some(r) = s.strip_prefix('/') {
            s = r;
        } else {
            break;
        }
    }
    s.trim_end_matches('/').to_string()
}

/// A destination that keeps nothing (`--dry-run`): every blob counts as
/// present, so nothing is read or written.
pub struct Discard {
    staging: crate::cleanup::StagingDir,
}

impl Discard {
    pub fn new() -> anyhow::Result<Discard> {
        Ok(Discard {
            staging: crate::cleanup::StagingDir::create_temp("slim-dry-")?,
        })
    }
}

impl Dest for Discard {
    fn name(&self) -> String {
        "nowhere (dry run)".to_string()
    }

    fn has_blob(&self, _: &Descriptor) -> Result<bool> {
        Ok(true)
    }

    fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    fn put_blob(&self, _: &Descriptor, _: Staged) -> Result<()> {
        Ok(())
    }

    fn put_manifest(&self, _: &Manifest) -> Result<()> {
        Ok(())
    }

    fn commit(&self, _: &Manifest) -> Result<()> {
        Ok(())
    }
}
