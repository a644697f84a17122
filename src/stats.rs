//! What each stage did, as plain data: the copy's counters and outcome,
//! and per slimmed image the sizes of both sides, what was removed, and the
//! source's layers. Filled in by the copy stage (copy/); read
//! by report.rs, `slim analyze` and the batch report, which render it.

use crate::digest::Digest;
use crate::image::media::Compression;
use crate::image::{Manifest, Platform};
use std::sync::Arc;

use crate::transform::filter::{Count, FilterStats};
use crate::transform::paths::PathData;

/// Counts of what the copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    pub blobs_copied: usize,
    pub blobs_existing: usize,
    pub blobs_mounted: usize,
    pub bytes_copied: u64,
    pub manifests: usize,
}

/// The result of a copy.
#[derive(Debug)]
pub struct CopyOutcome {
    /// The root manifest or index as written.
    pub root: Manifest,
    /// The source's root digest.
    pub source_digest: Digest,
    /// Media types were converted to OCI for the destination.
    pub converted_to_oci: bool,
    /// Platforms written (empty for a single image without platform info).
    pub platforms: Vec<Platform>,
    pub stats: CopyStats,
    /// One per slimmed image (empty for a faithful copy).
    pub images: Vec<ImageReport>,
}

/// Sizes of one side of a slim.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Side {
    pub layers: usize,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub files: u64,
}

/// What slimming one platform image did.
#[derive(Clone, Debug)]
pub struct ImageReport {
    pub platform: Option<Platform>,
    pub source_digest: Digest,
    pub output_digest: Digest,
    pub source: Side,
    pub output: Side,
    pub removed: FilterStats,
    pub shadowed: Count,
    pub hardlinked: Count,
    pub compression: Compression,
    pub notes: Vec<String>,
    /// Profiles in effect (what `auto` chose).
    pub profiles: Vec<String>,
    /// Paths a rule would have removed that a safety keep saved: (path, why).
    pub kept_by_safety: Vec<(String, String)>,
    /// With `--dry-run` or a report: every removed path, its category and
    /// the bytes it freed.
    pub removed_paths: Vec<crate::transform::paths::RemovedPath>,
    /// Packages that left the package database (none of their files
    /// remain).
    pub packages_gone: Vec<crate::transform::pkgdb::GonePackage>,
    /// The source's layers, bottom first.
    pub layers: Vec<LayerStat>,
    /// Per-path data, when asked for.
    pub details: Option<Arc<Details>>,
}

/// Per-path data of one image, and its complete listing if asked for.
#[derive(Debug)]
pub struct Details {
    pub paths: PathData,
    /// One JSON line per path of the merged tree, in path order (an
    /// unnamed temporary file, read from the start).
    pub listing: Option<std::fs::File>,
}

/// One source layer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct LayerStat {
    pub digest: String,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    /// Non-directory entries (whiteouts not counted).
    pub files: u64,
    /// Bytes of regular file contents.
    pub file_bytes: u64,
    pub whiteouts: u64,
    /// The history entry that made it.
    pub created_by: String,
}
