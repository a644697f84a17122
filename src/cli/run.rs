//! `slim SOURCE -o DEST`: the main command.

use std::io::{IsTerminal, Write};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::{GlobalArgs, Squash, UsageError};
use crate::copy::{CopyOptions, copy_image};
use crate::image::{Descriptor, Platform};
use crate::progress::{BlobOutcome, Reporter};
use crate::reference::ImageRef;
use crate::transport::{open_dest, open_source};

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

    /// Strip profiles, comma-separated (`none` strips nothing).
    #[arg(long, default_value = "auto", value_name = "NAMES")]
    pub profile: String,

    /// Platforms to keep from a multi-arch image: os/arch[/variant]. Repeatable or comma-separated.
    #[arg(long, value_name = "OS/ARCH[/VARIANT]", value_delimiter = ',')]
    pub platform: Vec<String>,

    /// Blobs to move at once.
    #[arg(short = 'j', long, default_value_t = 3, value_name = "N")]
    pub jobs: usize,
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
    if args.squash != Squash::None || args.profile != "none" {
        return Err(UsageError(
            "only a faithful copy is available in this build: pass --squash none --profile none"
                .into(),
        )
        .into());
    }
    let client = global.client()?;
    let src = open_source(&source, &client)?;
    let dst = open_dest(&output, &client)?;
    let printer = Printer::new(global.quiet);
    let opts = CopyOptions {
        platforms,
        jobs: args.jobs.max(1),
    };
    let outcome = copy_image(src.as_ref(), dst.as_ref(), &opts, &printer)
        .with_context(|| format!("copying {} to {}", src.name(), dst.name()))?;
    if !global.quiet {
        let s = &outcome.stats;
        let mut err = std::io::stderr().lock();
        let _ = writeln!(err, "wrote {} ({})", dst.name(), outcome.root.digest);
        if outcome.root.digest == outcome.source_digest {
            let _ = writeln!(err, "  same manifest digest as the source");
        }
        let _ = writeln!(
            err,
            "  {} blobs copied ({}), {} already there, {} mounted; {} manifests; {:.1}s",
            s.blobs_copied,
            human_bytes(s.bytes_copied),
            s.blobs_existing,
            s.blobs_mounted,
            s.manifests,
            started.elapsed().as_secs_f64()
        );
        if !outcome.platforms.is_empty() {
            let ps: Vec<String> = outcome.platforms.iter().map(ToString::to_string).collect();
            let _ = writeln!(err, "  platforms: {}", ps.join(", "));
        }
    }
    Ok(0)
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
