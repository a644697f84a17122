//! `--attach-report` on `slim SOURCE -o DEST`, and the attached report in
//! `slim analyze` (see [`crate::attach`]).

use std::fmt::Write as _;

use anyhow::Result;
use serde_json::Value;

use super::UsageError;
use crate::reference::ImageRef;
use crate::report::{Report, human};
use crate::transport::resolve::Resolved;

/// Checked before any work: the report can only be attached to an image
/// pushed to a registry.
pub fn check(output: &Resolved, dry_run: bool) -> Result<()> {
    if !matches!(output.image, ImageRef::Registry(_)) {
        return Err(UsageError(
            "--attach-report attaches the report to the image in a registry: DEST must be a registry reference".into(),
        )
        .into());
    }
    if dry_run {
        return Err(UsageError(
            "--attach-report needs an image written: not with --dry-run".into(),
        )
        .into());
    }
    Ok(())
}

/// Attaches `report` to the root manifest just pushed to `output`.
pub fn attach(
    client: &std::sync::Arc<crate::registry::RegistryClient>,
    output: &Resolved,
    root: &crate::image::Descriptor,
    report: &Report,
    quiet: bool,
) -> Result<()> {
    let ImageRef::Registry(r) = &output.image else {
        unreachable!("checked by check()");
    };
    // The same bytes as `--report FILE` writes.
    let json = serde_json::to_string_pretty(report)? + "\n";
    let json = json.as_bytes();
    let (digest, listed) = crate::attach::attach_report(client, r, root, json)?;
    if !quiet {
        let how = match listed {
            crate::registry::Listed::Api => "the registry's referrers API lists it".to_string(),
            crate::registry::Listed::TagSchema => format!(
                "listed in the referrers tag {}",
                crate::registry::tag_of(&root.digest)
            ),
        };
        eprintln!("  attached the report as {}@{digest} ({how})", r.repository);
    }
    Ok(())
}

/// The report attached to `image` (a registry image whose root manifest
/// is `digest`): `None` when there is none or the image is not in a
/// registry. A registry that cannot list referrers is a warning, not a
/// failure of the analysis.
pub fn attached(
    client: &std::sync::Arc<crate::registry::RegistryClient>,
    image: &Resolved,
    digest: &crate::digest::Digest,
) -> Option<(crate::digest::Digest, Value)> {
    let ImageRef::Registry(r) = &image.image else {
        return None;
    };
    match crate::attach::read_attached_report(client, r, digest) {
        Ok(found) => found,
        Err(e) => {
            tracing::warn!("cannot read the report attached to {}: {e:#}", image.typed);
            None
        }
    }
}

/// The attached report for people: where the image came from, how much
/// smaller it got, and what was removed, by category.
pub fn describe(artifact: &crate::digest::Digest, report: &Value) -> String {
    let mut out = String::new();
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let (src, dst) = (&report["source"], &report["output"]);
    let _ = writeln!(
        out,
        "\nslimmed by slim (report attached as {artifact}):\n  from {} ({})",
        src["reference"].as_str().unwrap_or("?"),
        src["digest"].as_str().unwrap_or("?")
    );
    let (before, after) = (n(&src["compressed_bytes"]), n(&dst["compressed_bytes"]));
    let _ = writeln!(
        out,
        "  compressed {} -> {}, files {} -> {}; profiles: {}",
        human(before),
        human(after),
        n(&src["files"]),
        n(&dst["files"]),
        report["profiles"]
            .as_array()
            .map(|p| p
                .iter()
                .filter_map(Value::as_str)
                .collect::<Vec<_>>()
                .join(", "))
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "none".into())
    );
    let removed = &report["removed"];
    let _ = writeln!(
        out,
        "  removed {} files ({}):",
        n(&removed["files"]),
        human(n(&removed["bytes"]))
    );
    let mut cats: Vec<(&String, &Value)> = removed["by_category"]
        .as_object()
        .map(|m| m.iter().collect())
        .unwrap_or_default();
    cats.sort_by_key(|(k, c)| (std::cmp::Reverse(n(&c["bytes"])), k.to_string()));
    for (k, c) in cats {
        let _ = writeln!(
            out,
            "    {k:<24} {:>7} files {:>10}",
            n(&c["files"]),
            human(n(&c["bytes"]))
        );
    }
    out
}
