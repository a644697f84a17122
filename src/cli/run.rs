//! `slim SOURCE -o DEST`: the main command.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::{GlobalArgs, Squash};
use crate::copy::{CopyOptions, copy_image};
use crate::image::Descriptor;
use crate::progress::{BlobOutcome, Reporter};
use crate::reference::ImageRef;
use crate::settings::Settings;
use crate::transport::{open_dest, open_source};

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum CompressionArg {
    Gzip,
    Zstd,
    None,
}

#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormatArg {
    Oci,
    Docker,
}

#[derive(Args, Debug)]
pub struct RunArgs {
    /// The image to slim (see "Image references" below).
    #[arg(value_name = "SOURCE", required = true)]
    pub source: Option<String>,

    /// Where to write the result.
    #[arg(short = 'o', long = "output", value_name = "DEST", required = true)]
    pub output: Option<String>,

    /// How to combine layers: all = one layer; none = each layer on its own.
    #[arg(long, value_enum, default_value = "all")]
    pub squash: Squash,

    /// Keep the first N layers, or the layers of base image REF, byte-identical (squash the rest).
    #[arg(long = "keep-base", value_name = "N|REF")]
    pub keep_base: Option<String>,

    /// Strip profiles, comma-separated (`none` strips nothing).
    #[arg(long, default_value = "auto", value_name = "NAMES")]
    pub profile: String,

    /// Layer compression (default: the source's; plain tar becomes gzip).
    #[arg(long, value_enum)]
    pub compression: Option<CompressionArg>,

    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,

    /// Output media types (default: the source's; zstd needs oci).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,

    /// Do not turn identical files into hard links.
    #[arg(long = "no-hardlink-dedup")]
    pub no_hardlink_dedup: bool,

    /// Keep paths matching GLOB whatever the profiles say (repeatable), e.g. '**/__pycache__/**'.
    #[arg(long, value_name = "GLOB")]
    pub keep: Vec<String>,

    /// Also remove paths matching GLOB (repeatable), e.g. '/opt/app/fixtures/**'.
    #[arg(long, value_name = "GLOB")]
    pub remove: Vec<String>,

    /// Turn off the safety keeps (entrypoint, interpreters, shared libraries, licences, CA certificates, /etc).
    #[arg(long = "no-safety-keeps")]
    pub no_safety_keeps: bool,

    /// Decide everything and print what would be removed; write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Platforms to keep from a multi-arch image: os/arch[/variant]. Repeatable or comma-separated.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    pub platform: Vec<String>,

    /// Blobs to move at once.
    #[arg(short = 'j', long, default_value_t = 3, value_name = "N")]
    pub jobs: usize,

    /// Compression threads (default: the number of CPUs).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,

    /// Refuse layers that decompress to more than this many GiB.
    #[arg(long = "max-layer-size", value_name = "GIB", default_value_t = 64)]
    pub max_layer_gib: u64,
}

impl RunArgs {
    /// The flags as settings.
    pub fn settings(&self) -> Settings {
        Settings {
            squash: Some(match self.squash {
                Squash::All => "all".into(),
                Squash::None => "none".into(),
            }),
            keep_base: self.keep_base.clone(),
            profile: Some(self.profile.clone()),
            keep: self.keep.clone(),
            remove: self.remove.clone(),
            safety_keeps: Some(!self.no_safety_keeps),
            compression: self.compression.map(|c| {
                match c {
                    CompressionArg::Gzip => "gzip",
                    CompressionArg::Zstd => "zstd",
                    CompressionArg::None => "none",
                }
                .to_string()
            }),
            level: self.level,
            format: self.format.map(|f| {
                match f {
                    FormatArg::Oci => "oci",
                    FormatArg::Docker => "docker",
                }
                .to_string()
            }),
            hardlink_dedup: Some(!self.no_hardlink_dedup),
            platforms: self.platform.clone(),
            threads: self.threads,
            max_layer_gib: Some(self.max_layer_gib),
        }
    }
}

pub fn run(args: RunArgs, global: &GlobalArgs) -> Result<u8> {
    let started = Instant::now();
    let source: ImageRef = args.source.as_deref().unwrap_or_default().parse()?;
    let output: ImageRef = args.output.as_deref().unwrap_or_default().parse()?;
    let settings = args.settings();
    let platforms = settings.platforms()?;
    let client = global.client()?;
    let rewrite = settings.rewrite(&client, args.dry_run)?;
    let src = open_source(&source, &client)?;
    let dst: Box<dyn crate::transport::Dest> = if args.dry_run {
        Box::new(crate::transport::Discard::new()?)
    } else {
        open_dest(&output, &client)?
    };
    let printer = Printer::new(global.quiet);
    let opts = CopyOptions {
        platforms,
        jobs: args.jobs.max(1),
        rewrite,
    };
    let outcome = copy_image(src.as_ref(), dst.as_ref(), &opts, &printer)
        .with_context(|| format!("slimming {} into {}", src.name(), dst.name()))?;
    if !global.quiet {
        print_summary(
            &outcome,
            dst.as_ref(),
            started,
            args.dry_run,
            global.verbose > 0,
        )?;
    }
    Ok(0)
}

fn print_summary(
    outcome: &crate::copy::CopyOutcome,
    dst: &dyn crate::transport::Dest,
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
        let _ = writeln!(err, "wrote {} (image config {config})", dst.name());
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
        let _ = writeln!(err, "  {platform} (profiles: {profiles})");
        if !dry_run {
            let saved = 100.0
                * (1.0
                    - img.output.compressed_bytes as f64
                        / img.source.compressed_bytes.max(1) as f64);
            let _ = writeln!(
                err,
                "    compressed {} -> {} ({saved:.0}% smaller); uncompressed {} -> {}; layers {} -> {}; files {} -> {}",
                human_bytes(img.source.compressed_bytes),
                human_bytes(img.output.compressed_bytes),
                human_bytes(img.source.uncompressed_bytes),
                human_bytes(img.output.uncompressed_bytes),
                img.source.layers,
                img.output.layers,
                img.source.files,
                img.output.files,
            );
        }
        let removed = img.removed.total();
        let verb = if dry_run { "would remove" } else { "removed" };
        let _ = writeln!(
            err,
            "    {verb} {} files ({}); shadowed by later layers {} ({}); hard-linked {} ({})",
            removed.files,
            human_bytes(removed.bytes),
            img.shadowed.files,
            human_bytes(img.shadowed.bytes),
            img.hardlinked.files,
            human_bytes(img.hardlinked.bytes),
        );
        let mut cats: Vec<(&String, &crate::transform::filter::Count)> =
            img.removed.by_category.iter().collect();
        cats.sort_by(|a, b| b.1.bytes.cmp(&a.1.bytes).then(a.0.cmp(b.0)));
        for (cat, c) in cats {
            let _ = writeln!(
                err,
                "      {cat:<24} {:>7} files {:>10}",
                c.files,
                human_bytes(c.bytes)
            );
        }
        if !img.kept_by_safety.is_empty() {
            let mut by_reason: std::collections::BTreeMap<&str, usize> =
                std::collections::BTreeMap::new();
            for (_, r) in &img.kept_by_safety {
                *by_reason.entry(r.as_str()).or_default() += 1;
            }
            let _ = writeln!(
                err,
                "    kept by safety: {} paths",
                img.kept_by_safety.len()
            );
            for (r, n) in by_reason.iter().take(12) {
                let _ = writeln!(err, "      {n:>5}  {r}");
            }
            if verbose {
                for (p, r) in &img.kept_by_safety {
                    let _ = writeln!(err, "      keep {p}  ({r})");
                }
            }
        }
        if dry_run && verbose {
            for (p, c) in &img.removed_paths {
                let _ = writeln!(err, "      remove {p}  ({c})");
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
        human_bytes(s.bytes_copied),
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

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Plain-line progress on stderr (bars come with the terminal UI).
struct Printer {
    quiet: bool,
    tty: bool,
    lock: Mutex<()>,
}

impl Printer {
    fn new(quiet: bool) -> Printer {
        Printer {
            quiet,
            tty: std::io::stderr().is_terminal(),
            lock: Mutex::new(()),
        }
    }
}

impl Reporter for Printer {
    fn blob_done(&self, desc: &Descriptor, outcome: BlobOutcome) {
        if self.quiet || !self.tty {
            return;
        }
        let _g = self.lock.lock();
        let what = match outcome {
            BlobOutcome::Copied => "copied",
            BlobOutcome::Existed => "exists",
            BlobOutcome::Mounted => "mounted",
        };
        eprintln!("  {} {what} ({})", desc.short(), human_bytes(desc.size));
    }

    fn note(&self, message: &str) {
        if !self.quiet {
            let _g = self.lock.lock();
            eprintln!("note: {message}");
        }
    }
}
