//! `slim SOURCE -o DEST`: the main command.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Args;

use super::{GlobalArgs, UsageError};
use crate::copy::{CopyOptions, Format, SquashMode, copy_image};
use crate::image::media::Compression;
use crate::reference::ImageRef;
use crate::report::{Report, human};
use crate::settings::{KeepBaseSetting, Settings};
use crate::transport::resolve::{self, Resolved};

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
    pub squash: SquashMode,

    /// Keep the first N layers, or the layers of base image REF, byte-identical (squash the rest).
    #[arg(long = "keep-base", value_name = "N|REF")]
    pub keep_base: Option<KeepBaseSetting>,

    /// Strip profiles, comma-separated (`none` strips nothing).
    #[arg(long, default_value = "auto", value_name = "NAMES")]
    pub profile: String,

    /// Layer compression (default: the source's; plain tar becomes gzip).
    #[arg(long, value_enum)]
    pub compression: Option<Compression>,

    /// Compression level (gzip 1-9, default 6; zstd 1-19, default 3).
    #[arg(long, value_name = "N")]
    pub level: Option<i32>,

    /// Output media types (default: the source's; zstd needs oci).
    #[arg(long, value_enum)]
    pub format: Option<Format>,

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

    /// Write a JSON report to FILE (`-` for stdout).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// Write the report as one self-contained HTML page to FILE: treemaps before and after, layers, largest paths.
    #[arg(long, value_name = "FILE")]
    pub html: Option<PathBuf>,

    /// Exit 3 unless the compressed image got at least PCT percent smaller.
    #[arg(long = "fail-if-savings-below", value_name = "PCT", value_parser = parse_percent)]
    pub fail_if_savings_below: Option<f64>,

    /// Exit 3 if the compressed output is larger than the source.
    #[arg(long = "fail-if-larger")]
    pub fail_if_larger: bool,

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

    /// Refuse images whose layers hold more entries than this together (slim indexes every entry in memory, about 700 bytes each).
    #[arg(long = "max-files", value_name = "N", default_value_t = crate::layer::limits::DEFAULT_MAX_FILES)]
    pub max_files: u64,

    /// Before writing, run probes on the original and the slim image (needs root and runc); exit 4 if the slim image fails one the original passes. Without --probe-* flags: the entrypoint resolves, exposed TCP ports listen, the healthcheck passes.
    #[arg(long)]
    pub verify: bool,

    /// Keep only what the image uses while its probes run (traced with fanotify in the sandbox: needs root and runc), plus the safety keeps and --keep; then verify as --verify does before writing. The learned keep-list replaces --profile.
    #[arg(long)]
    pub minimize: bool,

    /// With --minimize: write the learned keep-list as a profile to FILE; `--profile FILE` applies it later with no tracing (same output digest).
    #[arg(long = "write-profile", value_name = "FILE", requires = "minimize")]
    pub write_profile: Option<PathBuf>,

    #[command(flatten)]
    pub probe: super::sandbox::ProbeArgs,

    /// After the push, attach the JSON report to the slim image as an OCI artifact (its subject is the image; `slim analyze` shows it).
    #[arg(long = "attach-report")]
    pub attach_report: bool,

    /// The project config file whose defaults were taken (cli/config.rs).
    #[arg(skip)]
    pub config_file: Option<PathBuf>,
}

fn parse_percent(s: &str) -> Result<f64, String> {
    s.trim_end_matches('%')
        .parse::<f64>()
        .ok()
        .filter(|p| (0.0..=100.0).contains(p))
        .ok_or_else(|| format!("{s:?} is not a percentage between 0 and 100"))
}

impl RunArgs {
    /// The flags as settings.
    pub fn settings(&self) -> Settings {
        Settings {
            squash: Some(self.squash),
            keep_base: self.keep_base.clone(),
            profile: Some(self.profile.clone()),
            keep: self.keep.clone(),
            remove: self.remove.clone(),
            safety_keeps: Some(!self.no_safety_keeps),
            compression: self.compression,
            level: self.level,
            format: self.format,
            hardlink_dedup: Some(!self.no_hardlink_dedup),
            platforms: self.platform.clone(),
            threads: self.threads,
            max_layer_gib: Some(self.max_layer_gib),
            max_files: Some(self.max_files),
            // The probe flags reach the run parsed, as `self.probe`.
            ..Settings::default()
        }
    }
}

pub fn run(args: RunArgs, global: &GlobalArgs) -> Result<u8> {
    let started = Instant::now();
    // Parsed first, so that a malformed output fails before the engine is asked.
    let _: ImageRef = args.output.as_deref().unwrap_or_default().parse()?;
    let source = resolve::source(args.source.as_deref().unwrap_or_default())?;
    let output = resolve::output(args.output.as_deref().unwrap_or_default(), &source)?;
    if !global.quiet {
        super::say_where(&source);
        if let Some(c) = &args.config_file {
            eprintln!("note: defaults from {}", c.display());
        }
    }
    let report_to_stdout = args.report.as_deref() == Some(Path::new("-"));
    if report_to_stdout && matches!(output.image, ImageRef::DockerArchive { path: None, .. }) {
        return Err(UsageError(
            "--report - and docker-archive:- both want stdout; write the report to a file".into(),
        )
        .into());
    }
    if args.attach_report {
        super::attach::check(&output, args.dry_run)?;
    }
    let probes = args.probe.probes();
    let verify = args.verify || args.minimize;
    if !verify && !probes.is_empty() {
        return Err(UsageError(
            "--probe-cmd, --probe-http and --probe-tcp take effect with --verify or --minimize (or with slim run)"
                .into(),
        )
        .into());
    }
    if !verify && args.probe.probe_http_expect == crate::settings::HttpExpect::Same {
        return Err(UsageError(
            "--probe-http-expect same takes effect with --verify or --minimize".into(),
        )
        .into());
    }
    let settings = args.settings();
    let platforms = settings.platforms()?;
    let client = global.client()?;
    // Verifying a dry run still slims for real, into the staging layout only.
    let mut rewrite = settings.rewrite(args.dry_run && !verify)?;
    let src = source.open_source(&client, global.source_limits())?;
    let learned = if args.minimize {
        let l = super::minimize::learn(
            &args.probe,
            (&args.keep, &args.remove),
            args.write_profile.as_deref(),
            src.as_ref(),
            global.quiet,
        )?;
        rewrite = super::minimize::settings(settings, &l).rewrite(args.dry_run && !verify)?;
        Some(l)
    } else {
        None
    };
    if let Some(r) = rewrite.as_mut() {
        if args.html.is_some() {
            r.details = Some(super::analyze::detail_request(50, false));
        }
        // The audit list: every removed path, in the report.
        r.list_removed = args.report.is_some();
    }
    let terminal = super::progress::Terminal::new(global.quiet, !report_to_stdout);
    let opts = CopyOptions {
        platforms,
        jobs: args.jobs.max(1),
        rewrite,
        client: client.clone(),
    };
    let (outcome, dst, verified) = if verify {
        let v = verified_copy(
            &args,
            probes,
            src.as_ref(),
            &output,
            &client,
            &opts,
            &terminal,
        );
        terminal.finish();
        match v {
            Ok(v) => v,
            Err(e) => {
                // A failed gate still reports what it found (exit 4).
                if let Some(failed) = e.downcast_ref::<crate::sandbox::verify::SlimFailedProbes>()
                    && let Some(staged) = &failed.staged
                {
                    let mut report = Report::new(
                        &src.name(),
                        &output.typed,
                        staged,
                        None,
                        started.elapsed().as_secs_f64(),
                        // Nothing was written: no output digest anywhere.
                        true,
                    );
                    report.dry_run = args.dry_run;
                    report.source.from = Some(source.describe());
                    report.verify = Some((*failed.report).clone());
                    publish(&args, &report, report_to_stdout)?;
                }
                if learned.is_some() {
                    return Err(crate::minimize::with_keep_hints(e));
                }
                return Err(e);
            }
        }
    } else {
        let dst: Box<dyn crate::transport::Dest> = if args.dry_run {
            Box::new(crate::transport::Discard::new()?)
        } else {
            output.open_dest(&client)?
        };
        let outcome = copy_image(src.as_ref(), dst.as_ref(), &opts, &terminal);
        terminal.finish();
        let outcome =
            outcome.with_context(|| format!("slimming {} into {}", src.name(), dst.name()))?;
        (outcome, dst, None)
    };

    let keeps_manifests = dst.capabilities().keeps_manifests;
    let output_digest = (keeps_manifests && !args.dry_run).then(|| outcome.root.digest.to_string());
    let mut report = Report::new(
        &src.name(),
        &dst.name(),
        &outcome,
        output_digest,
        started.elapsed().as_secs_f64(),
        args.dry_run,
    );
    report.source.from = Some(source.describe());
    report.verify = verified;
    report.config = args.config_file.as_ref().map(|p| p.display().to_string());
    report.minimize = learned.as_ref().map(|l| {
        super::minimize::summary(
            &l.learned,
            &outcome.platforms,
            args.write_profile.as_deref(),
        )
    });
    if !global.quiet {
        super::summary::print_summary(
            &outcome,
            &report,
            dst.as_ref(),
            output
                .engine()
                .filter(|_| !args.dry_run)
                .map(|_| output.describe()),
            started,
            args.dry_run,
            global.verbose > 0,
        )?;
    }
    if let (Some(m), false) = (&report.minimize, global.quiet) {
        super::minimize::print(m);
    }
    publish(&args, &report, report_to_stdout)?;
    if let Some(path) = &args.html {
        super::analyze::write_html(
            path,
            &crate::report::html::Page {
                reference: &src.name(),
                digest: &outcome.source_digest.to_string(),
                from: &source.describe(),
                output: Some(&dst.name()),
                images: &outcome.images,
            },
        )?;
    }
    super::github::write_outputs(&report, args.report.as_deref())?;
    // Last: the image and the local report are written whatever happens here.
    if args.attach_report {
        let root = outcome.root.descriptor();
        super::attach::attach(&client, &output, &root, &report, global.quiet)?;
    }
    // CI gates: checked on what was written.
    let savings = report.savings_percent();
    if let Some(min) = args.fail_if_savings_below
        && savings < min
    {
        eprintln!(
            "error: the image got {savings:.1}% smaller, less than the {min}% --fail-if-savings-below asks for"
        );
        return Ok(super::EXIT_THRESHOLD);
    }
    if args.fail_if_larger && report.output.compressed_bytes > report.source.compressed_bytes {
        eprintln!(
            "error: the output ({} compressed) is larger than the source ({}) and --fail-if-larger is set",
            human(report.output.compressed_bytes),
            human(report.source.compressed_bytes)
        );
        return Ok(super::EXIT_THRESHOLD);
    }
    Ok(0)
}

/// Writes the report where `--report` asks, and its Markdown to
/// `$GITHUB_STEP_SUMMARY` when that is set.
fn publish(args: &RunArgs, report: &Report, report_to_stdout: bool) -> Result<()> {
    if let Some(path) = &args.report {
        let json = serde_json::to_string_pretty(&report)?;
        if report_to_stdout {
            super::out(&(json + "\n"))?;
        } else {
            std::fs::write(path, json + "\n")
                .with_context(|| format!("writing the report to {}", path.display()))?;
        }
    }
    if let Some(summary) = std::env::var_os("GITHUB_STEP_SUMMARY").filter(|s| !s.is_empty()) {
        use std::io::Write as _;
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .with_context(|| {
                format!(
                    "opening GITHUB_STEP_SUMMARY ({})",
                    Path::new(&summary).display()
                )
            })?;
        f.write_all(report.markdown().as_bytes())?;
    }
    Ok(())
}

/// `--verify` (see [`crate::sandbox::verify::verified_copy`]): the
/// destination is opened only once the probes passed.
fn verified_copy(
    args: &RunArgs,
    probes: Vec<crate::sandbox::Probe>,
    src: &dyn crate::transport::Source,
    output: &Resolved,
    client: &std::sync::Arc<crate::registry::RegistryClient>,
    opts: &CopyOptions,
    terminal: &super::progress::Terminal,
) -> Result<(
    crate::copy::CopyOutcome,
    Box<dyn crate::transport::Dest>,
    Option<crate::sandbox::verify::VerifyReport>,
)> {
    use crate::sandbox::verify::{Gate, VerifyOptions};
    use crate::sandbox::{PrepareOptions, ProbeOptions, RunSpec};

    let gate = Gate {
        verify: VerifyOptions {
            probes,
            probe: ProbeOptions {
                timeout: args.probe.probe_timeout,
                base: RunSpec {
                    limits: args.probe.limits(),
                    ..RunSpec::default()
                },
                requests: args.probe.probe_requests,
                keep_answers: args.probe.probe_http_expect == crate::settings::HttpExpect::Same,
            },
        },
        prepare: PrepareOptions {
            runtime: args.probe.runtime.clone(),
            temp_dir: None,
            platform: None,
        },
        oci_destination: matches!(
            output.image,
            ImageRef::OciLayout { .. } | ImageRef::OciArchive { .. }
        ),
    };
    let open = || output.open_dest(client);
    let v = crate::sandbox::verify::verified_copy(
        src,
        (!args.dry_run).then_some(&open as &dyn Fn() -> Result<Box<dyn crate::transport::Dest>>),
        opts,
        &gate,
        terminal,
    )?;
    let dst = match v.dest {
        Some(d) => d,
        None => Box::new(crate::transport::Discard::new()?),
    };
    Ok((v.outcome, dst, Some(v.report)))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        run: RunArgs,
    }

    fn flags(args: &[&str]) -> Settings {
        let mut argv = vec!["slim", "src:1", "-o", "dst:1"];
        argv.extend_from_slice(args);
        Flags::try_parse_from(argv).unwrap().run.settings()
    }

    /// A flag and the same job-file key parse into the same typed value.
    #[test]
    fn a_flag_and_the_same_job_file_value_give_equal_settings() {
        let from_flags = flags(&[
            "--squash",
            "all",
            "--keep-base",
            "oci:/tmp/base:v1",
            "--compression",
            "zstd",
            "--format",
            "oci",
            "--profile",
            "none",
        ]);
        let from_file: Settings = toml::from_str(
            r#"
squash = "all"
keep-base = "oci:/tmp/base:v1"
compression = "zstd"
format = "oci"
profile = "none"
"#,
        )
        .unwrap();
        // The flags also set what the command line always decides.
        let over = Settings {
            safety_keeps: from_flags.safety_keeps,
            hardlink_dedup: from_flags.hardlink_dedup,
            max_layer_gib: from_flags.max_layer_gib,
            max_files: from_flags.max_files,
            ..from_file
        };
        assert_eq!(from_flags, over);
        for (flag, key) in [
            (["--squash", "none"], "squash = \"none\""),
            (["--compression", "gzip"], "compression = \"gzip\""),
            (["--compression", "none"], "compression = \"none\""),
            (["--format", "docker"], "format = \"docker\""),
            (["--keep-base", "2"], "keep-base = \"2\""),
        ] {
            let f = flags(&flag);
            let t: Settings = toml::from_str(key).unwrap();
            assert_eq!(
                (f.squash, f.compression, f.format, f.keep_base),
                (
                    t.squash.or(Some(SquashMode::All)),
                    t.compression,
                    t.format,
                    t.keep_base
                ),
                "{key}"
            );
        }
    }
}
