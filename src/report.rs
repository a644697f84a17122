//! Reports: what a run did, as JSON (`--report`), as the table a person
//! reads at the end of a run, and as Markdown for CI summaries.
//!
//! Numbers come from what was written: the output digest is the digest of
//! the root manifest or index slim pushed.

pub mod html;
mod treemap;

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::sandbox::verify::{VerifyReport, seconds};
use crate::stats::{CopyOutcome, ImageReport, Side};
use crate::transform::filter::Count;
pub use crate::units::human;

#[derive(Debug, Serialize)]
pub struct Report {
    pub source: SideReport,
    pub output: SideReport,
    pub removed: Removed,
    pub kept_by_safety: Vec<Kept>,
    /// Per platform for a multi-arch image; empty for a single image.
    pub platforms: Vec<PlatformReport>,
    pub profiles: Vec<String>,
    pub shadowed: Count,
    pub hardlinked: Count,
    pub duration_seconds: f64,
    pub dry_run: bool,
    /// The probes `--verify` ran on the original and the slim image.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub verify: Option<VerifyReport>,
    /// The project config file (`slim.toml`) whose defaults the run took.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub config: Option<String>,
    /// What `--minimize` traced and kept.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub minimize: Option<crate::minimize::Summary>,
}

#[derive(Debug, Serialize, Default)]
pub struct SideReport {
    pub reference: String,
    /// Where the image was read from (`the local engine
    /// (unix:///var/run/docker.sock)`, `the registry docker.io`, …); set
    /// for the source of a run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<String>,
    pub digest: Option<String>,
    pub layers: usize,
    pub compressed_bytes: u64,
    pub uncompressed_bytes: u64,
    pub files: u64,
}

#[derive(Debug, Serialize, Default)]
pub struct Removed {
    pub files: u64,
    pub bytes: u64,
    pub by_category: BTreeMap<String, Count>,
    /// Every removed path with its category and the bytes it freed (a
    /// hard-linked file's once), when the run was asked for a report; per
    /// platform for an index.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<crate::transform::paths::RemovedPath>,
    /// Packages that left the package database because none of their
    /// files remain (per platform for an index).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<crate::transform::pkgdb::GonePackage>,
}

#[derive(Debug, Serialize)]
pub struct Kept {
    pub path: String,
    pub reason: String,
}

#[derive(Debug, Serialize)]
pub struct PlatformReport {
    pub platform: String,
    pub source: SideReport,
    pub output: SideReport,
    pub removed: Removed,
    pub kept_by_safety: Vec<Kept>,
    pub profiles: Vec<String>,
}

fn side(reference: &str, digest: Option<String>, s: &Side) -> SideReport {
    SideReport {
        reference: reference.to_string(),
        from: None,
        digest,
        layers: s.layers,
        compressed_bytes: s.compressed_bytes,
        uncompressed_bytes: s.uncompressed_bytes,
        files: s.files,
    }
}

fn removed(img: &ImageReport) -> Removed {
    let total = img.removed.total();
    Removed {
        files: total.files,
        bytes: total.bytes,
        by_category: img.removed.by_category.clone(),
        paths: img.removed_paths.clone(),
        packages: img.packages_gone.clone(),
    }
}

fn kept(img: &ImageReport) -> Vec<Kept> {
    img.kept_by_safety
        .iter()
        .map(|(path, reason)| Kept {
            path: path.clone(),
            reason: reason.clone(),
        })
        .collect()
}

impl Report {
    pub fn new(
        source: &str,
        output: &str,
        outcome: &CopyOutcome,
        output_digest: Option<String>,
        seconds: f64,
        dry_run: bool,
    ) -> Report {
        let multi = outcome.root.is_index();
        let mut src = SideReport {
            reference: source.to_string(),
            digest: Some(outcome.source_digest.to_string()),
            ..SideReport::default()
        };
        let mut out = SideReport {
            reference: output.to_string(),
            digest: output_digest,
            ..SideReport::default()
        };
        let mut rem = Removed::default();
        let mut kept_all = Vec::new();
        let mut profiles: Vec<String> = Vec::new();
        let mut shadowed = Count::default();
        let mut hardlinked = Count::default();
        let mut platforms = Vec::new();
        for img in &outcome.images {
            for (s, t) in [(&img.source, &mut src), (&img.output, &mut out)] {
                t.layers = t.layers.max(s.layers);
                t.compressed_bytes += s.compressed_bytes;
                t.uncompressed_bytes += s.uncompressed_bytes;
                t.files += s.files;
            }
            let r = removed(img);
            rem.files += r.files;
            rem.bytes += r.bytes;
            for (k, c) in &r.by_category {
                rem.by_category
                    .entry(k.clone())
                    .or_default()
                    .add(c.files, c.bytes);
            }
            kept_all.extend(kept(img));
            for p in &img.profiles {
                if !profiles.contains(p) {
                    profiles.push(p.clone());
                }
            }
            shadowed.add(img.shadowed.files, img.shadowed.bytes);
            hardlinked.add(img.hardlinked.files, img.hardlinked.bytes);
            if !multi {
                rem.paths.extend(r.paths.iter().cloned());
                rem.packages.extend(r.packages.iter().cloned());
            }
            if multi {
                platforms.push(PlatformReport {
                    platform: img
                        .platform
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default(),
                    source: side(source, Some(img.source_digest.to_string()), &img.source),
                    output: side(
                        output,
                        (!dry_run).then(|| img.output_digest.to_string()),
                        &img.output,
                    ),
                    removed: r,
                    kept_by_safety: kept(img),
                    profiles: img.profiles.clone(),
                });
            }
        }
        if outcome.images.is_empty() {
            // A faithful copy: the same image on both sides.
            let layers = outcome.root.layers().map(|l| l.len()).unwrap_or(0);
            let bytes: u64 = outcome
                .root
                .layers()
                .map(|l| l.iter().map(|d| d.size).sum())
                .unwrap_or(0);
            for s in [&mut src, &mut out] {
                s.layers = layers;
                s.compressed_bytes = bytes;
            }
        }
        Report {
            source: src,
            output: out,
            removed: rem,
            kept_by_safety: kept_all,
            platforms,
            profiles,
            shadowed,
            hardlinked,
            duration_seconds: (seconds * 1000.0).round() / 1000.0,
            dry_run,
            verify: None,
            config: None,
            minimize: None,
        }
    }

    /// Compressed bytes saved, as a percentage of the source (negative when
    /// the output is larger).
    pub fn savings_percent(&self) -> f64 {
        if self.source.compressed_bytes == 0 {
            return 0.0;
        }
        100.0 * (1.0 - self.output.compressed_bytes as f64 / self.source.compressed_bytes as f64)
    }

    /// The before/after table for a terminal.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let pct = |a: u64, b: u64| {
            if a == 0 {
                String::new()
            } else {
                format!("{:+.1}%", 100.0 * (b as f64 - a as f64) / a as f64)
            }
        };
        let _ = writeln!(
            t,
            "  {:<14} {:>12} {:>12} {:>9}",
            "", "before", "after", "change"
        );
        let rows = [
            (
                "compressed",
                human(self.source.compressed_bytes),
                human(self.output.compressed_bytes),
                pct(self.source.compressed_bytes, self.output.compressed_bytes),
            ),
            (
                "uncompressed",
                human(self.source.uncompressed_bytes),
                human(self.output.uncompressed_bytes),
                pct(
                    self.source.uncompressed_bytes,
                    self.output.uncompressed_bytes,
                ),
            ),
            (
                "layers",
                self.source.layers.to_string(),
                self.output.layers.to_string(),
                String::new(),
            ),
            (
                "files",
                self.source.files.to_string(),
                self.output.files.to_string(),
                pct(self.source.files, self.output.files),
            ),
        ];
        for (name, a, b, c) in rows {
            let _ = writeln!(t, "  {name:<14} {a:>12} {b:>12} {c:>9}");
        }
        for (name, a, b) in self.runtime_rows() {
            let _ = writeln!(t, "  {name:<14} {a:>12} {b:>12}");
        }
        t
    }

    /// `time to ready` and `peak memory` of the original and the slim
    /// image (the slowest and the highest over the probes), with `--verify`.
    fn runtime_rows(&self) -> Vec<(&'static str, String, String)> {
        let Some(v) = &self.verify else {
            return Vec::new();
        };
        let [(ready_a, peak_a), (ready_b, peak_b)] = v.figures();
        let mem = |m: Option<u64>| m.map_or_else(|| "-".into(), human);
        let mut rows = Vec::new();
        if ready_a.is_some() || ready_b.is_some() {
            rows.push(("time to ready", seconds(ready_a), seconds(ready_b)));
        }
        if peak_a.is_some() || peak_b.is_some() {
            rows.push(("peak memory", mem(peak_a), mem(peak_b)));
        }
        let ms = |s: Option<f64>| s.map_or_else(|| "-".into(), |s| format!("{:.1} ms", s * 1000.0));
        let [(median_a, p95_a), (median_b, p95_b)] = v.latency();
        if median_a.is_some() || median_b.is_some() {
            rows.push(("latency median", ms(median_a), ms(median_b)));
            rows.push(("latency p95", ms(p95_a), ms(p95_b)));
        }
        rows
    }

    /// The report as a Markdown section (for `$GITHUB_STEP_SUMMARY`).
    pub fn markdown(&self) -> String {
        let mut m = String::new();
        let _ = writeln!(
            m,
            "### slim: {} → {}\n",
            self.source.reference, self.output.reference
        );
        let _ = writeln!(m, "| | before | after |\n|---|---:|---:|");
        let _ = writeln!(
            m,
            "| compressed | {} | {} |",
            human(self.source.compressed_bytes),
            human(self.output.compressed_bytes)
        );
        let _ = writeln!(
            m,
            "| uncompressed | {} | {} |",
            human(self.source.uncompressed_bytes),
            human(self.output.uncompressed_bytes)
        );
        let _ = writeln!(
            m,
            "| layers | {} | {} |",
            self.source.layers, self.output.layers
        );
        let _ = writeln!(
            m,
            "| files | {} | {} |",
            self.source.files, self.output.files
        );
        for (name, a, b) in self.runtime_rows() {
            let _ = writeln!(m, "| {name} | {a} | {b} |");
        }
        let _ = writeln!(
            m,
            "\n**{:.1}% smaller** (compressed); profiles: {}\n",
            self.savings_percent(),
            if self.profiles.is_empty() {
                "none".into()
            } else {
                self.profiles.join(", ")
            }
        );
        if let Some(v) = &self.verify {
            let _ = writeln!(
                m,
                "| probe{} | original | slim |\n|---|---|---|",
                if v.default_probes { " (default)" } else { "" }
            );
            let cell = |s: &crate::sandbox::verify::SideVerdict| {
                format!(
                    "{} {}",
                    if s.passed { "pass" } else { "**FAIL**" },
                    s.message.replace('|', "\\|")
                )
            };
            for p in &v.probes {
                let _ = writeln!(
                    m,
                    "| {} | {} | {} |",
                    p.probe.replace('|', "\\|"),
                    cell(&p.original),
                    cell(&p.slim)
                );
            }
            for n in v.notes.iter().chain(&v.skipped) {
                let _ = writeln!(m, "\n_{}_", n.replace('_', "\\_"));
            }
            if !v.passed {
                let _ = writeln!(
                    m,
                    "\n**Verification failed**: the slim image fails a probe the original passes; nothing was written."
                );
            }
            m.push('\n');
        }
        if !self.removed.by_category.is_empty() {
            let _ = writeln!(m, "| removed | files | bytes |\n|---|---:|---:|");
            let mut cats: Vec<_> = self.removed.by_category.iter().collect();
            cats.sort_by_key(|c| std::cmp::Reverse(c.1.bytes));
            for (k, c) in cats {
                let _ = writeln!(m, "| {k} | {} | {} |", c.files, human(c.bytes));
            }
        }
        m
    }
}
