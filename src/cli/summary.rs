//! The terminal summary of a `slim SOURCE -o DEST` run: what was written
//! where, before and after, what was removed and kept, what the gate and
//! the minimization did.

use std::io::Write;
use std::time::Instant;

use anyhow::Result;

use crate::report::{Report, human};

pub(super) fn print_summary(
    outcome: &crate::copy::CopyOutcome,
    report: &Report,
    dst: &dyn crate::transport::Dest,
    into_engine: Option<String>,
    started: Instant,
    dry_run: bool,
    verbose: bool,
) -> Result<()> {
    let s = &outcome.stats;
    let mut err = std::io::stderr().lock();
    let keeps_manifests = dst.capabilities().keeps_manifests;
    if dry_run {
        let _ = writeln!(err, "dry run: nothing was written");
    } else if keeps_manifests {
        let _ = writeln!(err, "wrote {} ({})", dst.name(), outcome.root.digest);
    } else {
        let config = outcome
            .root
            .config()?
            .map(|c| c.digest.to_string())
            .unwrap_or_default();
        match into_engine {
            Some(engine) => {
                let _ = writeln!(
                    err,
                    "wrote {} (image config {config}), loaded into {engine}",
                    dst.name()
                );
            }
            None => {
                let _ = writeln!(err, "wrote {} (image config {config})", dst.name());
            }
        }
    }
    if !outcome.images.is_empty() && !dry_run {
        let _ = write!(err, "{}", report.table());
    }
    if let Some(v) = &report.verify {
        let _ = writeln!(
            err,
            "  verified{}: {} passed on the original and the slim image",
            if v.default_probes {
                " (default probes)"
            } else {
                ""
            },
            v.probes.len()
        );
        for p in &v.probes {
            let side = |s: &crate::sandbox::verify::SideVerdict| {
                let mut f = Vec::new();
                if let Some(t) = s.time_to_ready {
                    f.push(format!("ready in {t:.2} s"));
                }
                if let Some(m) = s.peak_memory {
                    f.push(format!("peak {}", human(m)));
                }
                if let (Some(m), Some(p95)) = (s.latency_median, s.latency_p95) {
                    f.push(format!(
                        "latency median {:.1} ms, p95 {:.1} ms",
                        m * 1000.0,
                        p95 * 1000.0
                    ));
                }
                if f.is_empty() {
                    "passed".to_string()
                } else {
                    f.join(", ")
                }
            };
            let _ = writeln!(
                err,
                "    {}: original {}; slim {}",
                p.probe,
                side(&p.original),
                side(&p.slim)
            );
        }
        for s in &v.skipped {
            let _ = writeln!(err, "    skipped {s}");
        }
        for n in &v.notes {
            let _ = writeln!(err, "    note: {n}");
        }
    }
    for img in &outcome.images {
        let platform = img
            .platform
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let profiles = if img.profiles.is_empty() {
            "none".to_string()
        } else {
            img.profiles.join(", ")
        };
        if outcome.images.len() > 1 {
            let _ = writeln!(
                err,
                "  {platform}: {} -> {} compressed (profiles: {profiles})",
                human(img.source.compressed_bytes),
                human(img.output.compressed_bytes)
            );
        } else {
            let _ = writeln!(err, "  {platform}, profiles: {profiles}");
        }
        let removed = img.removed.total();
        let verb = if dry_run { "would remove" } else { "removed" };
        let _ = writeln!(
            err,
            "  {verb} {} files ({}); shadowed by later layers {} ({}); hard-linked {} ({})",
            removed.files,
            human(removed.bytes),
            img.shadowed.files,
            human(img.shadowed.bytes),
            img.hardlinked.files,
            human(img.hardlinked.bytes),
        );
        let mut cats: Vec<(&String, &crate::transform::filter::Count)> =
            img.removed.by_category.iter().collect();
        cats.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        for (cat, c) in cats {
            let _ = writeln!(
                err,
                "    {cat:<24} {:>7} files {:>10}",
                c.files,
                human(c.bytes)
            );
        }
        if !img.packages_gone.is_empty() {
            let mut managers: Vec<&str> = img.packages_gone.iter().map(|p| p.manager).collect();
            managers.dedup();
            let _ = writeln!(
                err,
                "  {} packages none of whose files remain {} the {} database",
                img.packages_gone.len(),
                if dry_run { "would leave" } else { "left" },
                managers.join(" and ")
            );
            if verbose {
                for p in &img.packages_gone {
                    let _ = writeln!(err, "    {} {} ({})", p.name, p.version, p.manager);
                }
            }
        }
        if !img.kept_by_safety.is_empty() {
            let mut by_reason: std::collections::BTreeMap<&str, usize> =
                std::collections::BTreeMap::new();
            for (_, r) in &img.kept_by_safety {
                *by_reason.entry(r.as_str()).or_default() += 1;
            }
            let _ = writeln!(err, "  kept by safety: {} paths", img.kept_by_safety.len());
            for (r, n) in by_reason.iter().take(12) {
                let _ = writeln!(err, "    {n:>5}  {r}");
            }
            if verbose {
                for (p, r) in &img.kept_by_safety {
                    let _ = writeln!(err, "    keep {p}  ({r})");
                }
            }
        }
        if dry_run && verbose {
            for r in &img.removed_paths {
                let _ = writeln!(err, "    remove {}  ({})", r.path, r.category);
            }
        }
    }
    if dry_run {
        return Ok(());
    }
    if keeps_manifests && outcome.images.is_empty() && outcome.root.digest == outcome.source_digest
    {
        let _ = writeln!(err, "  same manifest digest as the source");
    }
    let _ = writeln!(
        err,
        "  {} blobs written ({}), {} already there, {} mounted; {} manifests; {:.1}s",
        s.blobs_copied,
        human(s.bytes_copied),
        s.blobs_existing,
        s.blobs_mounted,
        s.manifests,
        started.elapsed().as_secs_f64()
    );
    if outcome.platforms.len() > 1 {
        let ps: Vec<String> = outcome.platforms.iter().map(ToString::to_string).collect();
        let _ = writeln!(err, "  platforms: {}", ps.join(", "));
    }
    Ok(())
}
