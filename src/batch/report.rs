//! The batch report: one result per image and the totals, as written by
//! `--report FILE` (JSON) and summed up by the progress lines.

use serde::Serialize;

use crate::stats::{CopyOutcome, Side};

use super::plan::ListingError;

/// What happened to one image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Written to the destination in this run.
    Slimmed,
    /// The destination was already slimmed from this source with these
    /// settings.
    Skipped,
    Failed,
    /// `--dry-run`: would be slimmed.
    Planned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Slimmed => "slimmed",
            Status::Skipped => "skipped",
            Status::Failed => "failed",
            Status::Planned => "planned",
        }
    }
}

/// One image's result.
#[derive(Clone, Debug, Serialize)]
pub struct ImageResult {
    pub source: String,
    pub destination: String,
    /// The job file entry it came from.
    pub entry: String,
    pub status: Status,
    /// Why it was slimmed, skipped or planned.
    pub reason: Option<String>,
    /// The error chain, for a failed image.
    pub error: Option<String>,
    pub source_digest: Option<String>,
    pub output_digest: Option<String>,
    /// Summed over platforms; for slimmed images only.
    pub sizes: Option<Sizes>,
    /// Per platform (a multi-arch image has several).
    pub platforms: Vec<PlatformResult>,
    pub duration_seconds: f64,
    /// `verify = true`: the probes on the original and the slim image (also
    /// when the slim image failed them: then nothing was written, exit 4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<crate::sandbox::verify::VerifyReport>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Sizes {
    pub source: Side,
    pub output: Side,
    /// Source minus output compressed bytes (negative if it grew).
    pub saved_bytes: i64,
    pub removed_files: u64,
    pub removed_bytes: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct PlatformResult {
    pub platform: Option<String>,
    pub source_digest: String,
    pub output_digest: String,
    pub source: Side,
    pub output: Side,
    pub removed_files: u64,
    pub removed_bytes: u64,
    /// Profiles in effect (what `auto` chose).
    pub profiles: Vec<String>,
}

impl ImageResult {
    /// Failed because the slim image failed a probe the original passes.
    pub fn verify_failed(&self) -> bool {
        self.status == Status::Failed && self.verify.as_ref().is_some_and(|v| !v.passed)
    }

    /// Sizes and per-platform details from a finished copy.
    pub fn fill_from(&mut self, outcome: &CopyOutcome) {
        self.source_digest = Some(outcome.source_digest.to_string());
        self.output_digest = Some(outcome.root.digest.to_string());
        if outcome.images.is_empty() {
            return;
        }
        let mut sizes = Sizes::default();
        for img in &outcome.images {
            let removed = img.removed.total();
            add(&mut sizes.source, &img.source);
            add(&mut sizes.output, &img.output);
            sizes.removed_files += removed.files;
            sizes.removed_bytes += removed.bytes;
            self.platforms.push(PlatformResult {
                platform: img.platform.as_ref().map(ToString::to_string),
                source_digest: img.source_digest.to_string(),
                output_digest: img.output_digest.to_string(),
                source: img.source.clone(),
                output: img.output.clone(),
                removed_files: removed.files,
                removed_bytes: removed.bytes,
                profiles: img.profiles.clone(),
            });
        }
        sizes.saved_bytes =
            sizes.source.compressed_bytes as i64 - sizes.output.compressed_bytes as i64;
        self.sizes = Some(sizes);
    }

    pub fn saved_bytes(&self) -> i64 {
        self.sizes.as_ref().map_or(0, |s| s.saved_bytes)
    }
}

fn add(total: &mut Side, one: &Side) {
    total.layers += one.layers;
    total.compressed_bytes += one.compressed_bytes;
    total.uncompressed_bytes += one.uncompressed_bytes;
    total.files += one.files;
}

/// A shard as reported.
#[derive(Clone, Debug, Serialize)]
pub struct ShardInfo {
    pub index: u32,
    pub count: u32,
}

/// An item this run left out, and why.
#[derive(Clone, Debug, Serialize)]
pub struct Excluded {
    pub source: String,
    pub destination: String,
    pub entry: String,
    pub reason: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Totals {
    pub images: usize,
    pub slimmed: usize,
    pub skipped: usize,
    pub failed: usize,
    pub planned: usize,
    pub excluded: usize,
    /// Over images slimmed in this run.
    pub source_compressed_bytes: u64,
    pub output_compressed_bytes: u64,
    pub saved_bytes: i64,
}

/// The whole run.
#[derive(Clone, Debug, Serialize)]
pub struct BatchReport {
    pub job_file: String,
    pub shard: Option<ShardInfo>,
    pub dry_run: bool,
    pub force: bool,
    pub images: Vec<ImageResult>,
    /// Entries whose catalog or tag listing failed.
    pub listing_errors: Vec<ListingError>,
    pub excluded: Vec<Excluded>,
    pub totals: Totals,
    pub duration_seconds: f64,
}

impl BatchReport {
    /// Anything failed: an image, or listing an entry.
    pub fn any_failed(&self) -> bool {
        self.totals.failed > 0 || !self.listing_errors.is_empty()
    }

    /// Every failure is a failed verification (exit 4 rather than 1).
    pub fn only_verify_failed(&self) -> bool {
        self.listing_errors.is_empty()
            && self.images.iter().any(|r| r.verify_failed())
            && self
                .images
                .iter()
                .all(|r| r.status != Status::Failed || r.verify_failed())
    }

    pub fn compute_totals(&mut self) {
        let mut t = Totals {
            images: self.images.len(),
            excluded: self.excluded.len(),
            ..Totals::default()
        };
        for r in &self.images {
            match r.status {
                Status::Slimmed => t.slimmed += 1,
                Status::Skipped => t.skipped += 1,
                Status::Failed => t.failed += 1,
                Status::Planned => t.planned += 1,
            }
            if let Some(s) = &r.sizes
                && r.status == Status::Slimmed
            {
                t.source_compressed_bytes += s.source.compressed_bytes;
                t.output_compressed_bytes += s.output.compressed_bytes;
                t.saved_bytes += s.saved_bytes;
            }
        }
        self.totals = t;
    }
}
