//! `slim analyze IMAGE`: where the bytes of an image go, and what slimming
//! would save, without writing anything. Per layer: sizes, files, the step
//! that made it; wasted bytes (content later layers shadow or delete, and
//! duplicate files); an efficiency score in the manner of dive's (the share
//! of file bytes that are not wasted); and what the profiles would remove,
//! by category.

use std::fmt::Write;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::GlobalArgs;
use crate::copy::{CopyOptions, copy_image};
use crate::report::human;
use crate::settings::Settings;
use crate::stats::{ImageReport, LayerStat};
use crate::transform::filter::Count;
use crate::transport::Discard;
use crate::transport::resolve;

#[derive(Args, Debug)]
pub struct AnalyzeArgs {
    /// The image to look at (any transport).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// Print JSON on stdout instead of tables.
    #[arg(long)]
    pub json: bool,

    /// Profiles whose removals to estimate.
    #[arg(long, default_value = "auto", value_name = "NAMES")]
    pub profile: String,

    /// Platforms of a multi-arch image to analyze (default: all).
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    pub platform: Vec<String>,
}

#[derive(Serialize)]
struct Analysis {
    reference: String,
    /// Where the image was read from (the local engine, a registry, …).
    from: String,
    digest: String,
    images: Vec<ImageAnalysis>,
    /// The report slim attached to this image (`--attach-report`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    attached_report: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ImageAnalysis {
    platform: String,
    layers: Vec<LayerStat>,
    compressed_bytes: u64,
    uncompressed_bytes: u64,
    /// Bytes of file contents across all layers.
    file_bytes: u64,
    wasted: Wasted,
    /// 1 - wasted / file_bytes.
    efficiency: f64,
    profiles: Vec<String>,
    would_remove: Count,
    would_remove_by_category: std::collections::BTreeMap<String, Count>,
    kept_by_safety: usize,
}

#[derive(Serialize)]
struct Wasted {
    /// Content replaced or deleted by a later layer.
    shadowed: Count,
    /// Extra copies of identical files (what hard-link dedup saves).
    duplicates: Count,
    bytes: u64,
}

fn analysis(img: &ImageReport) -> ImageAnalysis {
    let file_bytes: u64 = img.layers.iter().map(|l| l.file_bytes).sum();
    let wasted = img.shadowed.bytes + img.hardlinked.bytes;
    ImageAnalysis {
        platform: img
            .platform
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        layers: img.layers.clone(),
        compressed_bytes: img.source.compressed_bytes,
        uncompressed_bytes: img.source.uncompressed_bytes,
        file_bytes,
        wasted: Wasted {
            shadowed: img.shadowed,
            duplicates: img.hardlinked,
            bytes: wasted,
        },
        efficiency: if file_bytes == 0 {
            1.0
        } else {
            1.0 - wasted as f64 / file_bytes as f64
        },
        profiles: img.profiles.clone(),
        would_remove: img.removed.total(),
        would_remove_by_category: img.removed.by_category.clone(),
        kept_by_safety: img.kept_by_safety.len(),
    }
}

pub fn run(args: AnalyzeArgs, global: &GlobalArgs) -> Result<u8> {
    let image = resolve::source(&args.image)?;
    if !global.quiet {
        super::say_where(&image);
    }
    let settings = Settings {
        profile: Some(args.profile.clone()),
        platforms: args.platform.clone(),
        ..Settings::default()
    };
    let platforms = settings.platforms()?;
    let client = global.client()?;
    let rewrite = settings.rewrite(true)?;
    let src = image.open_source(&client, global.source_limits())?;
    let dst = Discard::new()?;
    let terminal = super::progress::Terminal::new(global.quiet, !args.json);
    let opts = CopyOptions {
        platforms,
        jobs: 3,
        rewrite,
        client,
    };
    let outcome = copy_image(src.as_ref(), &dst, &opts, &terminal);
    terminal.finish();
    let outcome = outcome.with_context(|| format!("analyzing {}", src.name()))?;
    let attached = super::attach::attached(&opts.client, &image, &outcome.source_digest);
    let result = Analysis {
        reference: src.name(),
        from: image.describe(),
        digest: outcome.source_digest.to_string(),
        images: outcome.images.iter().map(analysis).collect(),
        attached_report: attached.as_ref().map(|(_, r)| r.clone()),
    };
    if args.json {
        super::out(&(serde_json::to_string_pretty(&result)? + "\n"))?;
        return Ok(0);
    }
    let mut out = String::new();
    writeln!(
        out,
        "{} ({}), from {}",
        result.reference, result.digest, result.from
    )?;
    for img in &result.images {
        writeln!(
            out,
            "\n{}: {} compressed, {} uncompressed",
            img.platform,
            human(img.compressed_bytes),
            human(img.uncompressed_bytes)
        )?;
        writeln!(
            out,
            "  {:>3} {:>10} {:>10} {:>7}  created by",
            "#", "compressed", "tar", "files"
        )?;
        for (i, l) in img.layers.iter().enumerate() {
            let by: String = l.created_by.chars().take(70).collect();
            writeln!(
                out,
                "  {:>3} {:>10} {:>10} {:>7}  {by}",
                i + 1,
                human(l.compressed_bytes),
                human(l.uncompressed_bytes),
                l.files
            )?;
        }
        writeln!(
            out,
            "  wasted: {} ({} shadowed or deleted by later layers in {} files, {} in {} duplicate files)",
            human(img.wasted.bytes),
            human(img.wasted.shadowed.bytes),
            img.wasted.shadowed.files,
            human(img.wasted.duplicates.bytes),
            img.wasted.duplicates.files
        )?;
        writeln!(out, "  efficiency: {:.1}%", img.efficiency * 100.0)?;
        writeln!(
            out,
            "  profiles {} would remove {} files ({}):",
            if img.profiles.is_empty() {
                "none".to_string()
            } else {
                img.profiles.join(", ")
            },
            img.would_remove.files,
            human(img.would_remove.bytes)
        )?;
        let mut cats: Vec<_> = img.would_remove_by_category.iter().collect();
        cats.sort_by_key(|c| std::cmp::Reverse(c.1.bytes));
        for (k, c) in cats {
            writeln!(
                out,
                "    {k:<24} {:>7} files {:>10}",
                c.files,
                human(c.bytes)
            )?;
        }
        if img.kept_by_safety > 0 {
            writeln!(out, "  {} paths kept by safety rules", img.kept_by_safety)?;
        }
    }
    if let Some((artifact, report)) = &attached {
        out.push_str(&super::attach::describe(artifact, report));
    }
    super::out(&out)?;
    Ok(0)
}
