//! How to copy, and how to slim each image on the way: settings as the
//! copy stage takes them (settings.rs makes them from flags and job files).

use std::sync::Arc;

use crate::digest::Digest;
use crate::image::Platform;
use crate::image::media::Compression;
use crate::image::provenance;
use crate::profile::ProfileSet;
use crate::reference::ImageRef;
use crate::registry::RegistryClient;

/// How to copy.
pub struct CopyOptions {
    /// Platforms to keep from an index (empty: all).
    pub platforms: Vec<Platform>,
    /// Blobs moved at once.
    pub jobs: usize,
    /// Slim container images on the way (`None`: a faithful copy).
    pub rewrite: Option<RewriteOptions>,
    /// Opens a `--keep-base REF` registry image (the source and destination
    /// come opened; the base is opened by the copy stage that reads it).
    pub client: Arc<RegistryClient>,
}

/// `--squash` and `squash =`: one type from the flag and the job file to
/// the copy stage (settings.rs words its errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum SquashMode {
    /// One output layer.
    All,
    /// Each layer rewritten on its own.
    None,
}

/// `--format` and `format =`: the output's media types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Format {
    Oci,
    Docker,
}

/// Which lower layers stay byte-identical.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeepBase {
    None,
    Count(usize),
    /// The layers of this image (matched by diff_id, per platform); the
    /// copy stage opens it.
    Image(ImageRef),
}

/// How to slim each image.
pub struct RewriteOptions {
    pub squash: SquashMode,
    pub keep_base: KeepBase,
    /// `None`: keep the source's kind (plain tar becomes gzip).
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    /// `None`: OCI stays OCI, Docker stays Docker (zstd forces OCI).
    pub format: Option<Format>,
    pub hardlink_dedup: bool,
    /// Compression workers.
    pub threads: usize,
    /// What to strip.
    pub profiles: ProfileSet,
    /// Decide everything, write nothing.
    pub dry_run: bool,
    /// A description of the settings (profile names and their content
    /// digest included), recorded in the output; its digest identifies
    /// "slimmed the same way".
    pub settings: String,
    pub max_layer_bytes: u64,
    /// Entries the image's layers may hold together (`--max-files`).
    pub max_files: u64,
    /// Gather per-path data for reports (`slim analyze`, `--html`).
    pub details: Option<DetailRequest>,
    /// List every removed path in the report (`--report`; always with
    /// `dry_run`).
    pub list_removed: bool,
}

/// What per-path data to gather.
#[derive(Clone, Copy, Debug)]
pub struct DetailRequest {
    pub paths: crate::transform::paths::DetailOptions,
    /// The complete listing, spooled to a temporary file.
    pub files: bool,
}

impl RewriteOptions {
    pub fn settings_digest(&self) -> Digest {
        provenance::settings_digest(&self.settings)
    }
}
