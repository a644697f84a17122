//! `slim analyze IMAGE`: where the bytes of an image go, and what slimming
//! would save, without writing anything. Per layer: sizes, files, the step
//! that made it; wasted bytes (content later layers shadow or delete, and
//! duplicate files); an efficiency score in the manner of dive's (the share
//! of file bytes that are not wasted); and what the profiles would remove,
//! by category. Per path (`--json`): the largest directories and files,
//! every wasted path, every path the profiles would remove; `--files` the
//! complete listing, streamed from a temporary file; `--html FILE` the
//! report as one self-contained page.

use std::fmt::Write;

use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;

use super::GlobalArgs;
use crate::copy::{CopyOptions, DetailRequest, copy_image};
use crate::report::{html, human};
use crate::settings::Settings;
use crate::stats::{ImageReport, LayerStat};
use crate::transform::filter::Count;
use crate::transform::paths::{
    DetailOptions, DuplicatePath, PathData, RemovedPath, ShadowedPath, TopPath,
};
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

    /// How many of the largest directories and files to list.
    #[arg(long, value_name = "N", default_value_t = 50)]
    pub top: usize,

    /// List every path of the final tree too: path, type, size, mode, the layer that last wrote it (with --json: a `files` array per image).
    #[arg(long)]
    pub files: bool,

    /// Write the report as one self-contained HTML page to FILE.
    #[arg(long, value_name = "FILE")]
    pub html: Option<std::path::PathBuf>,

    /// Refuse images whose layers hold more entries than this together (slim indexes every entry in memory, about 700 bytes each).
    #[arg(long = "max-files", value_name = "N", default_value_t = crate::layer::limits::DEFAULT_MAX_FILES)]
    pub max_files: u64,
}

/// Per-path data as slim gathers it for reports: the `--top` largest, and
/// treemaps of about this many nodes (small files grouped), which keeps
/// the HTML of a large image near a megabyte.
pub fn detail_request(top: usize, files: bool) -> DetailRequest {
    DetailRequest {
        paths: DetailOptions {
            top,
            treemap_nodes: 2500,
        },
        files,
    }
}

/// Writes the HTML report to `path`.
pub fn write_html(path: &std::path::Path, page: &html::Page<'_>) -> Result<()> {
    let t = std::time::Instant::now();
    let text = html::render(page);
    std::fs::write(path, &text)
        .with_context(|| format!("writing the HTML report to {}", path.display()))?;
    tracing::info!(elapsed = ?t.elapsed(), bytes = text.len(), "HTML report written");
    Ok(())
}

#[derive(Serialize)]
struct Analysis<'a> {
    reference: String,
    /// Where the image was read from (the local engine, a registry, …).
    from: String,
    digest: String,
    images: Vec<ImageAnalysis<'a>>,
    /// The report slim attached to this image (`--attach-report`), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    attached_report: Option<serde_json::Value>,
}

#[derive(Serialize)]
struct ImageAnalysis<'a> {
    platform: String,
    layers: Vec<LayerStat>,
    compressed_bytes: u64,
    uncompressed_bytes: u64,
    /// Bytes of file contents across all layers.
    file_bytes: u64,
    /// The largest directories of the final tree.
    top_dirs: &'a [TopPath],
    /// The largest files of the final tree.
    top_files: &'a [TopPath],
    wasted: Wasted<'a>,
    /// 1 - wasted / file_bytes.
    efficiency: f64,
    profiles: Vec<String>,
    would_remove: Count,
    would_remove_by_category: std::collections::BTreeMap<String, Count>,
    /// Every path the profiles would remove, with its category.
    would_remove_paths: &'a [RemovedPath],
    kept_by_safety: usize,
    /// With `--files`: every path of the final tree.
    #[serde(skip_serializing_if = "Option::is_none")]
    files: Option<Listing<'a>>,
}

#[derive(Serialize)]
struct Wasted<'a> {
    /// Content replaced or deleted by a later layer.
    shadowed: Count,
    /// Extra copies of identical files (what hard-link dedup saves).
    duplicates: Count,
    bytes: u64,
    /// Every shadowed path: the layer that wrote it, its bytes, the layer
    /// that replaced or deleted it.
    shadowed_paths: &'a [ShadowedPath],
    /// Every duplicate file, and the file that keeps its content.
    duplicate_paths: &'a [DuplicatePath],
}

/// The listing spooled by the copy stage, one JSON object a line, written
/// out as a JSON array without holding it in memory.
struct Listing<'a>(&'a std::fs::File);

impl Serialize for Listing<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::{Error, SerializeSeq};
        let mut seq = s.serialize_seq(None)?;
        for line in lines(self.0).map_err(S::Error::custom)? {
            let line = line.map_err(S::Error::custom)?;
            let raw: &serde_json::value::RawValue =
                serde_json::from_str(&line).map_err(S::Error::custom)?;
            seq.serialize_element(raw)?;
        }
        seq.end()
    }
}

/// The lines of a spooled listing, from its start.
fn lines(
    mut f: &std::fs::File,
) -> std::io::Result<std::io::Lines<std::io::BufReader<&std::fs::File>>> {
    use std::io::{BufRead, Seek};
    f.seek(std::io::SeekFrom::Start(0))?;
    Ok(std::io::BufReader::new(f).lines())
}

/// What an image without per-path data shows.
static NO_PATHS: std::sync::LazyLock<PathData> = std::sync::LazyLock::new(PathData::default);

fn analysis(img: &ImageReport) -> ImageAnalysis<'_> {
    let paths = img.details.as_ref().map_or(&*NO_PATHS, |d| &d.paths);
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
        top_dirs: &paths.top_dirs,
        top_files: &paths.top_files,
        wasted: Wasted {
            shadowed: img.shadowed,
            duplicates: img.hardlinked,
            bytes: wasted,
            shadowed_paths: &paths.shadowed,
            duplicate_paths: &paths.duplicates,
        },
        efficiency: if file_bytes == 0 {
            1.0
        } else {
            1.0 - wasted as f64 / file_bytes as f64
        },
        profiles: img.profiles.clone(),
        would_remove: img.removed.total(),
        would_remove_by_category: img.removed.by_category.clone(),
        would_remove_paths: &paths.would_remove,
        kept_by_safety: img.kept_by_safety.len(),
        files: img
            .details
            .as_ref()
            .and_then(|d| d.listing.as_ref())
            .map(Listing),
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
        max_files: Some(args.max_files),
        ..Settings::default()
    };
    let platforms = settings.platforms()?;
    let client = global.client()?;
    let mut rewrite = settings.rewrite(true)?;
    if let Some(r) = rewrite.as_mut() {
        r.details = Some(detail_request(args.top, args.files));
    }
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
    let digest = outcome.source_digest.to_string();
    let from = image.describe();
    if let Some(path) = &args.html {
        write_html(
            path,
            &html::Page {
                reference: &src.name(),
                digest: &digest,
                from: &from,
                output: None,
                images: &outcome.images,
            },
        )?;
    }
    let attached = super::attach::attached(&opts.client, &image, &outcome.source_digest);
    let result = Analysis {
        reference: src.name(),
        from,
        digest,
        images: outcome.images.iter().map(analysis).collect(),
        attached_report: attached.as_ref().map(|(_, r)| r.clone()),
    };
    if args.json {
        json_out(&result)?;
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
        let shown = img.top_files.len().min(10);
        if shown > 0 {
            writeln!(out, "  largest files:")?;
            for t in &img.top_files[..shown] {
                writeln!(out, "    {:>10}  {}", human(t.bytes), t.path)?;
            }
        }
        if let Some(Listing(file)) = &img.files {
            super::out(&out)?;
            out.clear();
            list_files(file)?;
        }
    }
    if let Some((artifact, report)) = &attached {
        out.push_str(&super::attach::describe(artifact, report));
    }
    super::out(&out)?;
    Ok(0)
}

/// The analysis as JSON on stdout, streamed (the listing can be large).
fn json_out(result: &Analysis<'_>) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    let done = serde_json::to_writer_pretty(&mut w, result)
        .map_err(std::io::Error::from)
        .and_then(|()| w.write_all(b"\n"))
        .and_then(|()| w.flush());
    match done {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other.context("writing the analysis to stdout")?),
    }
}

/// The listing as lines: mode, type, size, layer, path (-> target).
fn list_files(file: &std::fs::File) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::with_capacity(1 << 16, stdout.lock());
    writeln!(
        w,
        "  {:<5} {:<8} {:>12} {:>5}  path",
        "mode", "type", "size", "layer"
    )?;
    let mut each = || -> Result<()> {
        for line in lines(file)? {
            let v: serde_json::Value = serde_json::from_str(&line?)?;
            let target = v["target"]
                .as_str()
                .map(|t| format!(" -> {t}"))
                .unwrap_or_default();
            writeln!(
                w,
                "  {:<5} {:<8} {:>12} {:>5}  {}{target}",
                v["mode"].as_str().unwrap_or(""),
                v["type"].as_str().unwrap_or(""),
                v["size"].as_u64().unwrap_or(0),
                v["layer"].as_u64().unwrap_or(0),
                v["path"].as_str().unwrap_or("")
            )?;
        }
        Ok(w.flush()?)
    };
    match each() {
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe) =>
        {
            Ok(())
        }
        other => other,
    }
}
