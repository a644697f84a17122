//! `slim batch FILE.toml`: slim many images, registry to registry.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use anyhow::{Context, Result};
use clap::Args;

use super::{EXIT_FAILURE, EXIT_USAGE, GlobalArgs, UsageError};
use crate::batch::{
    self, BatchOptions, BatchProgress, ImageResult, JobFile, Shard, Status, WorkItem, WorkList,
};
use crate::report::human;

#[derive(Args, Debug)]
#[command(after_help = "Examples:
  slim batch jobs.toml --dry-run              # the work list and skip decisions; reads no layer
  slim batch jobs.toml --jobs 4 --report report.json
  slim batch jobs.toml --shard 1/3            # the second of three workers
  slim batch /etc/slim/jobs.toml --shards 3   # in a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)

Exit codes: 0 every image slimmed or up to date, 1 any image failed, 2 a mistake in the job file or arguments,
4 every image that failed, failed verify = true (the slim image failed a probe the original passes; nothing written for it).")]
pub struct BatchArgs {
    /// The job file (TOML): [defaults], [[images]] and [[repositories]].
    #[arg(value_name = "FILE.toml")]
    pub file: PathBuf,

    /// Images slimmed at once (default: one per CPU, at most one per GiB of available memory, at most 8).
    #[arg(short = 'j', long, value_name = "N")]
    pub jobs: Option<usize>,

    /// Do only this share of the work: INDEX/COUNT, e.g. 0/3.
    #[arg(long, value_name = "I/N", conflicts_with = "shards")]
    pub shard: Option<String>,

    /// Split the work in N shards; this process does shard $JOB_COMPLETION_INDEX (Kubernetes Indexed Jobs).
    #[arg(long, value_name = "N", env = "SLIM_SHARDS")]
    pub shards: Option<u32>,

    /// Slim images again even when the destination is up to date.
    #[arg(long)]
    pub force: bool,

    /// List the work (source -> destination) and the skip decisions; read no layer, write nothing.
    #[arg(long = "dry-run")]
    pub dry_run: bool,

    /// Write the JSON report here (`-` for stdout).
    #[arg(long, value_name = "FILE|-")]
    pub report: Option<String>,

    /// Write Prometheus metrics of the run here (text format, for node_exporter's textfile collector).
    #[arg(long = "metrics-file", value_name = "FILE")]
    pub metrics_file: Option<PathBuf>,

    /// Push the same metrics to this Prometheus Pushgateway at the end, grouped by job and shard index.
    #[arg(long, value_name = "URL")]
    pub pushgateway: Option<String>,

    /// The job label of the pushed metrics.
    #[arg(
        long = "pushgateway-job",
        value_name = "NAME",
        default_value = "slim-batch"
    )]
    pub pushgateway_job: String,
}

fn shard(args: &BatchArgs) -> Result<Option<Shard>, UsageError> {
    if let Some(s) = &args.shard {
        return Shard::parse(s)
            .map(Some)
            .map_err(|e| UsageError(format!("--shard: {e}")));
    }
    let index = std::env::var("JOB_COMPLETION_INDEX").ok();
    match (args.shards, index) {
        (Some(n), Some(i)) => {
            let i: u32 = i.trim().parse().map_err(|_| {
                UsageError(format!(
                    "JOB_COMPLETION_INDEX={i:?} is not a shard index (a number from 0)"
                ))
            })?;
            Shard::new(i, n)
                .map(Some)
                .map_err(|e| UsageError(format!("--shards {n} with JOB_COMPLETION_INDEX: {e}")))
        }
        (Some(n), None) => Err(UsageError(format!(
            "--shards {n} needs JOB_COMPLETION_INDEX (Kubernetes sets it in Indexed Jobs); elsewhere use --shard I/{n}"
        ))),
        (None, Some(_)) => {
            tracing::warn!(
                "JOB_COMPLETION_INDEX is set but --shards is not: this process does the whole job"
            );
            Ok(None)
        }
        (None, None) => Ok(None),
    }
}

pub fn run(args: BatchArgs, global: &GlobalArgs) -> Result<u8> {
    let job = match JobFile::load(&args.file) {
        Ok(j) => j,
        Err(e) => {
            super::print_error(&anyhow::Error::new(e));
            return Ok(EXIT_USAGE);
        }
    };
    let shard = shard(&args)?;
    if args.jobs == Some(0) {
        return Err(UsageError("--jobs must be at least 1".into()).into());
    }
    let opts = BatchOptions {
        jobs: args.jobs.unwrap_or_else(batch::default_jobs),
        force: args.force,
        dry_run: args.dry_run,
        shard,
        ..BatchOptions::default()
    };
    // Checked before any work: a bad URL is a usage error.
    let push_url = match &args.pushgateway {
        Some(url) => Some(
            batch::metrics::push_url(url, &args.pushgateway_job, shard.map(|s| s.index))
                .map_err(|e| UsageError(e.to_string()))?,
        ),
        None => None,
    };
    let client = global.client()?;
    let printer = Printer {
        quiet: global.quiet,
        verbose: global.verbose > 0 || args.dry_run,
        dry_run: args.dry_run,
        shard,
        jobs: opts.jobs,
        lock: Mutex::new(()),
    };
    let report = batch::run(&job, &opts, &client, &printer);
    printer.summary(&report);

    if let Some(dest) = &args.report {
        let json = serde_json::to_vec_pretty(&report).context("serialising the report")?;
        if dest == "-" {
            let mut out = std::io::stdout().lock();
            out.write_all(&json)?;
            out.write_all(b"\n")?;
        } else {
            std::fs::write(dest, [json.as_slice(), b"\n"].concat())
                .with_context(|| format!("writing the report {dest}"))?;
        }
    }
    if args.metrics_file.is_some() || push_url.is_some() {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        let retries = crate::registry::limits::retries_so_far();
        let text = batch::metrics::render(&report, retries, (end * 1000.0).round() / 1000.0);
        if let Some(path) = &args.metrics_file {
            batch::metrics::write_file(path, &text)?;
        }
        if let Some(url) = &push_url {
            batch::metrics::push(url, &text)?;
        }
    }
    Ok(if report.only_verify_failed() {
        super::EXIT_VERIFY
    } else if report.any_failed() {
        EXIT_FAILURE
    } else {
        0
    })
}

/// Progress lines on stderr: one per finished image, with done/total and
/// the bytes saved so far.
struct Printer {
    quiet: bool,
    /// Also a line per skipped image.
    verbose: bool,
    dry_run: bool,
    shard: Option<Shard>,
    jobs: usize,
    lock: Mutex<()>,
}

impl Printer {
    fn line(&self, text: &str) {
        if !self.quiet {
            let _g = self.lock.lock();
            eprintln!("{text}");
        }
    }

    fn summary(&self, r: &batch::BatchReport) {
        let t = &r.totals;
        let mut parts = Vec::new();
        if self.dry_run {
            parts.push(format!("{} to slim", t.planned));
            parts.push(format!("{} up to date", t.skipped));
        } else {
            parts.push(format!("{} slimmed", t.slimmed));
            parts.push(format!("{} skipped", t.skipped));
        }
        parts.push(format!("{} failed", t.failed));
        if t.excluded > 0 {
            parts.push(format!("{} left out", t.excluded));
        }
        let saved = if self.dry_run {
            "dry run: nothing was written".to_string()
        } else {
            format!(
                "{} saved ({} -> {})",
                human(t.saved_bytes),
                human(t.source_compressed_bytes),
                human(t.output_compressed_bytes)
            )
        };
        self.line(&format!(
            "{} images: {}; {saved}; {:.1}s",
            t.images,
            parts.join(", "),
            r.duration_seconds
        ));
        for e in &r.listing_errors {
            self.line(&format!("error: {}: {}", e.entry, e.error));
        }
        if t.failed > 0 {
            for img in r.images.iter().filter(|i| i.status == Status::Failed) {
                self.line(&format!(
                    "failed: {} -> {}: {}",
                    img.source,
                    img.destination,
                    img.error.as_deref().unwrap_or("")
                ));
            }
        }
    }
}

impl BatchProgress for Printer {
    fn listed(&self, all: usize, mine: usize, list: &WorkList) {
        let scope = match self.shard {
            Some(s) => format!(" ({mine} in shard {s})"),
            None => String::new(),
        };
        self.line(&format!(
            "slim batch: {all} images{scope}, {} at a time",
            self.jobs
        ));
        for e in &list.errors {
            self.line(&format!("error: {}: {}", e.entry, e.error));
        }
        if self.verbose {
            for x in &list.excluded {
                self.line(&format!(
                    "left out {} -> {}: {}",
                    x.item.source, x.item.destination, x.reason
                ));
            }
        }
    }

    fn planned(&self, to_slim: usize, up_to_date: usize, failed: usize) {
        let verb = if self.dry_run {
            "would slim"
        } else {
            "to slim"
        };
        let failed = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        self.line(&format!(
            "checked: {to_slim} {verb}, {up_to_date} up to date{failed}"
        ));
    }

    fn started(&self, item: &WorkItem) {
        tracing::info!("slimming {} -> {}", item.source, item.destination);
    }

    fn finished(&self, r: &ImageResult, done: usize, total: usize, saved: i64) {
        if r.status == Status::Skipped && !self.verbose {
            return;
        }
        let what = match r.status {
            Status::Slimmed => {
                let sizes = r.sizes.as_ref().map_or(String::new(), |s| {
                    let pct = 100.0
                        * (1.0
                            - s.output.compressed_bytes as f64
                                / s.source.compressed_bytes.max(1) as f64);
                    format!(
                        ": {} -> {} ({pct:.0}% smaller)",
                        human(s.source.compressed_bytes),
                        human(s.output.compressed_bytes)
                    )
                });
                format!("{sizes}, {:.1}s", r.duration_seconds)
            }
            Status::Failed => format!(": {}", r.error.as_deref().unwrap_or("")),
            Status::Skipped | Status::Planned => {
                format!(": {}", r.reason.as_deref().unwrap_or(""))
            }
        };
        let status = match r.status {
            Status::Skipped if self.dry_run => "up to date",
            Status::Planned => "would slim",
            s => s.as_str(),
        };
        let saved = if self.dry_run || r.status != Status::Slimmed {
            String::new()
        } else {
            format!("; {} saved", human(saved))
        };
        self.line(&format!(
            "[{done}/{total}] {status} {} -> {}{what}{saved}",
            r.source, r.destination
        ));
    }

    fn note(&self, item: &WorkItem, message: &str) {
        self.line(&format!("note: {}: {message}", item.destination));
    }
}
