//! How to copy, and how to slim each image on the way: settings as the
//! copy stage takes them (settings.rs makes them from flags and job files).

use crate::digest::Digest;
use crate::image::Platform;
use crate::image::media::Compression;
use crate::image::provenance;
use crate::profile::ProfileSet;
use crate::transport::Source;

/// How to copy.
pub struct CopyOptions {
    /// Platforms to keep from an index (empty: all).
    pub platforms: Vec<Platform>,
    /// Blobs moved at once.
    pub jobs: usize,
    /// Slim container images on the way (`None`: a faithful copy).
    pub rewrite: Option<RewriteOptions>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platforms: Vec::new(),
            jobs: 3,
            rewrite: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SquashMode {
    All,
    None,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Oci,
    Docker,
}

/// Which lower layers stay byte-identical.
pub enum KeepBase {
    None,
    Count(usize),
    /// The layers of this image (matched by diff_id, per platform).
    Image(Box<dyn Source>),
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
}

impl RewriteOptions {
    pub fn settings_digest(&self) -> Digest {
        provenance::settings_digest(&self.settings)
    }
}
