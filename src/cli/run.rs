//! `slim SOURCE -o DEST`: the main command.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Args, ValueEnum};

use super::{GlobalArgs, Squash, UsageError};
use crate::copy::{CopyOptions, copy_image};
use crate::image::media::Compression;
use crate::image::{Descriptor, Platform};
use crate::profile::ProfileSet;
use crate::progress::{BlobOutcome, Reporter};
use crate::reference::ImageRef;
use crate::rewrite::{Format, KeepBase, RewriteOptions, SquashMode};
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
    /// A faithful copy: nothing about the layers is to change.
    fn is_plain_copy(&self) -> bool {
        self.squash == Squash::None
            && self.profile == "none"
            && self.remove.is_empty()
            && !self.dry_run
            && self.compression.is_none()
            && self.level.is_none()
            && self.format.is_none()
            && self.keep_base.is_none()
    }
}

pub fn run(args: RunArgs, global: &GlobalArgs) -> Result<u8> {
    let started = Instant::now();
    let source: ImageRef = args.source.as_deref().unwrap_or_default().parse()?;
    let output: ImageRef = args.output.as_deref().unwrap_or_default().parse()?;
    let platforms = args
        .platform
        .iter()
        .map(|p| Platform::parse(p).map_err(UsageError))
        .collect::<Result<Vec<_>, _>>()?;
    let client = global.client()?;
    let rewrite = if args.is_plain_copy() {
        None
    } else {
        Some(rewrite_options(&args, &client)?)
    };
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

fn rewrite_options(
    args: &RunArgs,
    client: &Arc<crate::registry::RegistryClient>,
) -> Result<RewriteOptions> {
    let keep_base = match args.keep_base.as_deref() {
        None => KeepBase::None,
        Some(s) if s.chars().all(|c| c.is_ascii_digit()) => KeepBase::Count(
            s.parse()
                .map_err(|_| UsageError(format!("--keep-base {s}: not a number")))?,
        ),
        Some(s) => {
            let r: ImageRef = s.parse().with_context(|| format!("--keep-base {s}"))?;
            KeepBase::Image(open_source(&r, client)?)
        }
    };
    let profiles = ProfileSet::resolve(
        &args.profile,
        &args.keep,
        &args.remove,
        !args.no_safety_keeps,
    )
    .map_err(|e| UsageError(format!("{e:#}")))?;
    if args.keep_base.is_some() && args.squash == Squash::None {
        return Err(UsageError(
            "--keep-base keeps layers below one squashed layer: it needs --squash all".into(),
        )
        .into());
    }
    let compression = args.compression.map(|c| match c {
        CompressionArg::Gzip => Compression::Gzip,
        CompressionArg::Zstd => Compression::Zstd,
        CompressionArg::None => Compression::None,
    });
    if let (Some(l), Some(c)) = (args.level, compression) {
        let ok = match c {
            Compression::Gzip => (0..=9).contains(&l),
            Compression::Zstd => (1..=22).contains(&l),
            Compression::None => true,
        };
        if !ok {
            return Err(UsageError(format!("--level {l} is out of range for {}", c.name())).into());
        }
    }
    let format = args.format.map(|f| match f {
        FormatArg::Oci => Format::Oci,
        FormatArg::Docker => Format::Docker,
    });
    let squash = match args.squash {
        Squash::All => SquashMode::All,
        Squash::None => SquashMode::None,
    };
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let settings = format!(
        "squash={} keep-base={} profile={} compression={} level={} format={} hardlink-dedup={}",
        match squash {
            SquashMode::All => "all",
            SquashMode::None => "none",
        },
        args.keep_base.as_deref().unwrap_or("0"),
        profiles.fingerprint(),
        compression.map_or("source", |c| c.name()),
        args.level.map_or("default".to_string(), |l| l.to_string()),
        match format {
            Some(Format::Oci) => "oci",
            Some(Format::Docker) => "docker",
            None => "source",
        },
        !args.no_hardlink_dedup,
    );
    Ok(RewriteOptions {
        squash,
        keep_base,
        compression,
        level: args.level,
        format,
        hardlink_dedup: !args.no_hardlink_dedup,
        threads,
        profiles,
        dry_run: args.dry_run,
        settings,
        max_layer_bytes: args.max_layer_gib.saturating_mul(1 << 30),
    })
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
