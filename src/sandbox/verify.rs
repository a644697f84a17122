//! The verify gate (`slim IMAGE -o DEST --verify`): the same probes on the
//! original image and on the slim result, before anything is written to
//! the destination.
//!
//! - a probe that fails on the original is the probe's fault
//!   ([`ProbeFailedOnOriginal`], a usage error: exit 2);
//! - a probe that passes on the original and fails on the slim result is
//!   slim's ([`SlimFailedProbes`], exit 4), named with its output tail and
//!   the paths the slim tree lacks where the sandbox can tell: the program
//!   a probe or the entrypoint runs (symlinks, `#!` and ELF interpreters,
//!   `DT_NEEDED` libraries), and absolute paths its output says it could
//!   not open that the original tree has.
//!
//! Without probe flags, [`default_probes`]: the static check that the
//! entrypoint resolves, plus a TCP probe per `ExposedPorts` entry and the
//! `Healthcheck` command. A default probe the original fails is dropped
//! with a note (the image was never meant to pass it), never an error.

use std::collections::BTreeSet;
use std::fmt::Write as _;

use anyhow::{Context, Result};
use serde::Serialize;

use super::probe::HttpAnswer;
use super::{Limits, PrepareOptions, Probe, ProbeOptions, ProbeResult, RunSpec, Sandbox};
use crate::copy::{CopyOptions, CopyOutcome, copy_image};
use crate::progress::Reporter;
use crate::settings::{HttpExpect, Settings, SettingsError};
use crate::transport::layout::{LayoutDest, LayoutSource};
use crate::transport::{Dest, Source};

/// The staged image's tag in its private layout.
const STAGED_TAG: &str = "slim";

/// What to check.
#[derive(Clone, Debug)]
pub struct VerifyOptions {
    /// The probes given (empty: [`default_probes`]).
    pub probes: Vec<Probe>,
    pub probe: ProbeOptions,
}

/// One probe as the gate sees it: the static entrypoint check, or a
/// sandbox probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Check {
    /// The entrypoint's program, its interpreters and libraries resolve.
    Entrypoint,
    Probe(Probe),
}

impl std::fmt::Display for Check {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Check::Entrypoint => write!(f, "entrypoint resolves (static check)"),
            Check::Probe(p) => p.fmt(f),
        }
    }
}

/// The `verify` object of the JSON report.
#[derive(Clone, Debug, Serialize)]
pub struct VerifyReport {
    /// The probes were slim's defaults (no probe flag was given).
    pub default_probes: bool,
    pub probes: Vec<ProbeVerdict>,
    /// Default probes dropped because the original failed them, with why.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// What was checked how: platforms of a multi-arch image that are not
    /// this machine's get the static check only.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    pub passed: bool,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProbeVerdict {
    pub probe: String,
    pub original: SideVerdict,
    pub slim: SideVerdict,
}

#[derive(Clone, Debug, Serialize)]
pub struct SideVerdict {
    pub passed: bool,
    pub message: String,
    /// Seconds from start to ready (a port's first connection, a command's end).
    pub time_to_ready: Option<f64>,
    /// Bytes: the container's peak memory, where the cgroups tell.
    pub peak_memory: Option<u64>,
    /// Passing HTTP probes: seconds per whole answer over the timed
    /// requests (`--probe-requests`), median and 95th percentile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_p95: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requests: Option<usize>,
    /// With `--probe-http-expect same`: the first answer's status and body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub answer: Option<HttpAnswer>,
    #[serde(skip)]
    pub output_tail: String,
}

impl From<ProbeResult> for SideVerdict {
    fn from(r: ProbeResult) -> Self {
        SideVerdict {
            passed: r.passed,
            message: r.message,
            time_to_ready: r
                .time_to_ready
                .map(|d| (d.as_secs_f64() * 1000.0).round() / 1000.0),
            peak_memory: r.peak_memory,
            latency_median: r.latency.map(|l| micros(l.median)),
            latency_p95: r.latency.map(|l| micros(l.p95)),
            requests: r.latency.map(|l| l.requests),
            answer: r.answer,
            output_tail: r.output_tail,
        }
    }
}

/// Seconds, to the microsecond.
fn micros(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

impl VerifyReport {
    /// The highest median and p95 latency of one side over its HTTP
    /// probes: (original, slim), each (median, p95) in seconds.
    pub fn latency(&self) -> [(Option<f64>, Option<f64>); 2] {
        let side = |f: fn(&ProbeVerdict) -> &SideVerdict| {
            let max = |g: fn(&SideVerdict) -> Option<f64>| {
                self.probes.iter().filter_map(|p| g(f(p))).reduce(f64::max)
            };
            (max(|s| s.latency_median), max(|s| s.latency_p95))
        };
        [side(|p| &p.original), side(|p| &p.slim)]
    }

    /// The slowest time to ready and the highest peak memory of one side,
    /// over all probes: (original, slim).
    pub fn figures(&self) -> [(Option<f64>, Option<u64>); 2] {
        let side = |f: fn(&ProbeVerdict) -> &SideVerdict| {
            let ready = self
                .probes
                .iter()
                .filter_map(|p| f(p).time_to_ready)
                .reduce(f64::max);
            let peak = self.probes.iter().filter_map(|p| f(p).peak_memory).max();
            (ready, peak)
        };
        [side(|p| &p.original), side(|p| &p.slim)]
    }
}

/// The gate's settings: what to probe and how to run it.
#[derive(Clone, Debug)]
pub struct Gate {
    pub verify: VerifyOptions,
    pub prepare: PrepareOptions,
    /// The destination holds OCI media types only (OCI layouts and
    /// archives): a Docker v2s2 image is converted when staged, as the
    /// destination would convert it. Otherwise it stays v2s2.
    pub oci_destination: bool,
}

/// What [`verified_copy`] did.
pub struct Verified {
    /// The slimming's outcome, with the root as written to the destination
    /// and the final copy's blob counts.
    pub outcome: CopyOutcome,
    /// The destination written (`None`: a dry run).
    pub dest: Option<Box<dyn Dest>>,
    pub report: VerifyReport,
}

/// Slims `src` into a private staging OCI layout (in the temp directory),
/// runs the probes on the original and on the staged result, and only when
/// they pass opens the destination (`open_dest`; `None`: a dry run, nothing
/// written) and copies the staged image to it as it is: no rewrite, so
/// every manifest digest is kept; a destination that keeps manifests must
/// then hold the digest the staging produced.
pub fn verified_copy(
    src: &dyn Source,
    open_dest: Option<&dyn Fn() -> Result<Box<dyn Dest>>>,
    opts: &CopyOptions,
    gate: &Gate,
    reporter: &dyn Reporter,
) -> Result<Verified> {
    let staging = crate::cleanup::StagingDir::create_temp("slim-verify-")
        .context("creating the staging directory for --verify")?;
    let layout = staging.path().join("image");
    // A Docker v2s2 image stays one: the destination decides, as without
    // --verify.
    let mut staged_dst = LayoutDest::create(&layout, Some(STAGED_TAG.into()))
        .context("creating the staging layout")?;
    if !gate.oci_destination {
        staged_dst = staged_dst.keeping_media_types();
    }
    let mut outcome = copy_image(src, &staged_dst, opts, reporter)
        .with_context(|| format!("slimming {} into the staging layout", src.name()))?;
    drop(staged_dst);
    let staged = LayoutSource::open_dir(&layout, Some(STAGED_TAG.into()))
        .context("opening the staging layout")?;
    let report = match gate_image(src, &staged, gate) {
        Ok(r) => r,
        Err(e) => {
            return Err(match e.downcast::<SlimFailedProbes>() {
                Ok(mut failed) => {
                    failed.staged = Some(Box::new(outcome));
                    failed.into()
                }
                Err(e) => e,
            });
        }
    };
    let Some(open_dest) = open_dest else {
        return Ok(Verified {
            outcome,
            dest: None,
            report,
        });
    };
    let dst = open_dest()?;
    // A destination of one image picks the platform as the slimming did.
    let faithful = CopyOptions {
        platforms: if dst.capabilities().single_image {
            opts.platforms.clone()
        } else {
            Vec::new()
        },
        jobs: opts.jobs,
        rewrite: None,
        client: opts.client.clone(),
    };
    let written = copy_image(&staged, dst.as_ref(), &faithful, reporter)
        .with_context(|| format!("writing the verified image to {}", dst.name()))?;
    if dst.capabilities().keeps_manifests && written.root.digest != outcome.root.digest {
        anyhow::bail!(
            "{} holds {}, not the verified image {}: the copy changed it",
            dst.name(),
            written.root.digest,
            outcome.root.digest
        );
    }
    outcome.root = written.root;
    outcome.stats = written.stats;
    Ok(Verified {
        outcome,
        dest: Some(dst),
        report,
    })
}

/// The checks on the staged image, per platform: the probes on the one this
/// machine runs, the static check on the others (an emulator is not used:
/// their programs would run under one, slowly and not always faithfully).
fn gate_image(src: &dyn Source, staged: &dyn Source, gate: &Gate) -> Result<VerifyReport> {
    let platforms = super::platforms(staged).context("reading the slim image's platforms")?;
    let native = platforms
        .iter()
        .find(|p| p.as_ref().is_none_or(super::runs_here))
        .cloned();
    let host = crate::image::Platform::host();
    let mut report = match &native {
        Some(p) => {
            let prepare = PrepareOptions {
                platform: p.clone(),
                ..gate.prepare.clone()
            };
            let original = Sandbox::prepare(src, &prepare)
                .with_context(|| format!("preparing {} to run its probes", src.name()))?;
            let slim = Sandbox::prepare(staged, &prepare)
                .context("preparing the slim image to run its probes")?;
            for w in original.warnings.iter().chain(&slim.warnings) {
                tracing::warn!("{w}");
            }
            verify(&original, &slim, &gate.verify)?
        }
        None => VerifyReport {
            default_probes: gate.verify.probes.is_empty(),
            probes: Vec::new(),
            skipped: Vec::new(),
            notes: vec![format!(
                "no platform of the image runs on this machine ({host}): no probe ran"
            )],
            passed: true,
        },
    };
    let mut failures = Vec::new();
    for p in platforms.into_iter().flatten() {
        if native.as_ref().is_some_and(|n| n.as_ref() == Some(&p)) {
            continue;
        }
        let prepare = PrepareOptions {
            platform: Some(p.clone()),
            ..gate.prepare.clone()
        };
        let original = Sandbox::prepare(src, &prepare)
            .with_context(|| format!("preparing the {p} image of {}", src.name()))?;
        let slim = Sandbox::prepare(staged, &prepare)
            .with_context(|| format!("preparing the {p} image of the slim result"))?;
        let base = &gate.verify.probe.base;
        let name = format!("entrypoint resolves (static check, {p})");
        let on_original = static_check(&original, None, base);
        if !on_original.passed {
            report.skipped.push(format!(
                "{name}: failed on the original image too ({}); not checked",
                on_original.message
            ));
            continue;
        }
        let mut on_slim = static_check(&slim, Some(&original), base);
        on_slim.probe = name.clone();
        if !on_slim.passed {
            failures.push(describe_failure(&on_slim, &[]));
        }
        report.probes.push(ProbeVerdict {
            probe: name,
            original: on_original.into(),
            slim: on_slim.into(),
        });
        report.notes.push(format!(
            "{p}: not this machine's platform ({host}): the static check only, no probe ran"
        ));
    }
    if !failures.is_empty() {
        report.passed = false;
        return Err(SlimFailedProbes {
            message: format!(
                "the slim image fails {} that the original passes; nothing was written (keep what it needs with --keep GLOB, or choose another --profile)\n{}",
                plural(failures.len(), "check", "checks"),
                failures.join("\n")
            ),
            report: Box::new(report),
            staged: None,
        }
        .into());
    }
    Ok(report)
}

/// The gate a job file's settings ask for: `None` without `verify`; no
/// probes given means the default probes.
pub fn gate_from_settings(s: &Settings) -> Result<Option<Gate>, SettingsError> {
    let given = !(s.probe_cmd.is_empty() && s.probe_http.is_empty() && s.probe_tcp.is_empty());
    if s.verify != Some(true) {
        if given || s.probe_http_expect == Some(HttpExpect::Same) {
            return Err(SettingsError(
                "probe-cmd, probe-http, probe-tcp and probe-http-expect take effect with verify = true"
                    .into(),
            ));
        }
        return Ok(None);
    }
    let mut probes: Vec<Probe> = s.probe_cmd.iter().cloned().map(Probe::Cmd).collect();
    for h in &s.probe_http {
        probes.push(Probe::parse_http(h).map_err(|e| SettingsError(format!("probe-http: {e}")))?);
    }
    for t in &s.probe_tcp {
        probes.push(
            Probe::parse_tcp(&t.to_string())
                .map_err(|e| SettingsError(format!("probe-tcp: {e}")))?,
        );
    }
    let defaults = ProbeOptions::default();
    Ok(Some(Gate {
        verify: VerifyOptions {
            probes,
            probe: ProbeOptions {
                timeout: s.probe_timeout.map_or(defaults.timeout, |t| t.0),
                base: RunSpec {
                    limits: Limits {
                        memory: s.run_memory.map(|m| m.0),
                        cpus: s.run_cpus.map(|c| c.cpus()),
                    },
                    ..RunSpec::default()
                },
                requests: s.probe_requests.unwrap_or(defaults.requests),
                keep_answers: s.probe_http_expect == Some(HttpExpect::Same),
            },
        },
        prepare: PrepareOptions {
            runtime: s.runtime.clone(),
            temp_dir: None,
            platform: None,
        },
        // Batch writes to registries.
        oci_destination: false,
    }))
}

/// A probe failed on the original image: the probe is wrong (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ProbeFailedOnOriginal(pub String);

/// A probe passed on the original and failed on the slim result (exit 4).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct SlimFailedProbes {
    pub message: String,
    pub report: Box<VerifyReport>,
    /// What the slimming made (in the staging layout only, now gone): the
    /// report of a failed gate shows the sizes the slim image had.
    pub staged: Option<Box<CopyOutcome>>,
}

/// The probes `--verify` runs when none is given: the static entrypoint
/// check, a TCP probe per exposed TCP port, the healthcheck command.
pub fn default_probes(original: &Sandbox) -> Vec<Check> {
    let c = original.config();
    let mut out = vec![Check::Entrypoint];
    let mut ports: Vec<u16> = c
        .exposed_ports
        .iter()
        .filter_map(|p| {
            let (port, proto) = p.split_once('/').unwrap_or((p, "tcp"));
            (proto.eq_ignore_ascii_case("tcp"))
                .then(|| port.parse().ok())
                .flatten()
        })
        .collect();
    ports.sort_unstable();
    ports.dedup();
    out.extend(
        ports
            .into_iter()
            .map(|port| Check::Probe(Probe::Tcp { port })),
    );
    if let Some(cmd) = healthcheck_command(&c.healthcheck) {
        out.push(Check::Probe(Probe::Cmd(cmd)));
    }
    out
}

/// `Healthcheck.Test` as a shell command: `["CMD-SHELL", "cmd"]` as is,
/// `["CMD", args…]` quoted; `["NONE"]` or empty: none.
fn healthcheck_command(test: &[String]) -> Option<String> {
    match test.split_first()? {
        (kind, [cmd]) if kind == "CMD-SHELL" => Some(cmd.clone()),
        (kind, args) if kind == "CMD" && !args.is_empty() => Some(
            args.iter()
                .map(|a| format!("'{}'", a.replace('\'', r"'\''")))
                .collect::<Vec<_>>()
                .join(" "),
        ),
        _ => None,
    }
}

/// Runs the checks on the original, then on the slim result.
pub fn verify(original: &Sandbox, slim: &Sandbox, opts: &VerifyOptions) -> Result<VerifyReport> {
    let default = opts.probes.is_empty();
    let checks: Vec<Check> = if default {
        default_probes(original)
    } else {
        opts.probes.iter().cloned().map(Check::Probe).collect()
    };
    let on_original = run_checks(original, None, &checks, &opts.probe)?;
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    let mut wrong = Vec::new();
    for (check, r) in checks.iter().zip(on_original) {
        if r.passed {
            kept.push((check.clone(), r));
        } else if default {
            skipped.push(format!(
                "{check}: failed on the original image too ({}); not checked",
                r.message
            ));
        } else {
            wrong.push(describe_failure(&r, &[]));
        }
    }
    if !wrong.is_empty() {
        return Err(ProbeFailedOnOriginal(format!(
            "{} on the original image, before slimming: the probe is wrong, not the slim result (fix the probe, or the image)\n{}",
            plural(wrong.len(), "probe fails", "probes fail"),
            wrong.join("\n")
        ))
        .into());
    }
    let kept_checks: Vec<Check> = kept.iter().map(|(c, _)| c.clone()).collect();
    let on_slim = run_checks(slim, Some(original), &kept_checks, &opts.probe)?;
    let mut failures = Vec::new();
    let mut verdicts = Vec::new();
    for ((check, o), mut s) in kept.into_iter().zip(on_slim) {
        if s.passed
            && let (Some(a), Some(b)) = (&o.answer, &s.answer)
            && a != b
        {
            s.passed = false;
            s.message = format!(
                "{}: answers differently from the original ({}), --probe-http-expect same",
                s.message,
                different(a, b)
            );
        }
        if !s.passed {
            let missing = missing_paths(original, slim, &check, &s, &opts.probe.base);
            failures.push(describe_failure(&s, &missing));
        }
        verdicts.push(ProbeVerdict {
            probe: check.to_string(),
            original: o.into(),
            slim: s.into(),
        });
    }
    let report = VerifyReport {
        default_probes: default,
        probes: verdicts,
        skipped,
        notes: Vec::new(),
        passed: failures.is_empty(),
    };
    if !failures.is_empty() {
        return Err(SlimFailedProbes {
            message: format!(
                "the slim image fails {} that the original passes; nothing was written (keep what it needs with --keep GLOB, or choose another --profile)\n{}",
                plural(failures.len(), "probe", "probes"),
                failures.join("\n")
            ),
            report: Box::new(report),
            staged: None,
        }
        .into());
    }
    Ok(report)
}

/// How two HTTP answers differ, for people.
fn different(original: &HttpAnswer, slim: &HttpAnswer) -> String {
    if original.status != slim.status {
        return format!(
            "status {} where the original gives {}",
            slim.status, original.status
        );
    }
    format!(
        "a {}-byte body {:?} where the original gives a {}-byte body {:?}",
        slim.bytes, slim.start, original.bytes, original.start
    )
}

fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn run_checks(
    sb: &Sandbox,
    original: Option<&Sandbox>,
    checks: &[Check],
    opts: &ProbeOptions,
) -> Result<Vec<ProbeResult>> {
    let probes: Vec<Probe> = checks
        .iter()
        .filter_map(|c| match c {
            Check::Probe(p) => Some(p.clone()),
            Check::Entrypoint => None,
        })
        .collect();
    let mut ran = sb.probe(&probes, opts)?.into_iter();
    Ok(checks
        .iter()
        .map(|c| match c {
            Check::Probe(_) => ran.next().expect("one result per probe"),
            Check::Entrypoint => static_check(sb, original, &opts.base),
        })
        .collect())
}

/// The entrypoint resolves: its program (symlinks, `#!` and ELF
/// interpreters, as the sandbox looks it up) and, with `original` given,
/// the `DT_NEEDED` libraries of the program that the original resolves.
fn static_check(sb: &Sandbox, original: Option<&Sandbox>, base: &RunSpec) -> ProbeResult {
    let problem = match sb.process(base) {
        Err(e) => Some(format!("{e:#}")),
        Ok(p) => original.and_then(|o| {
            let gone = missing_libraries(o, sb, &p.args[0], &p.env, &p.cwd);
            (!gone.is_empty()).then(|| {
                format!(
                    "{} needs {}, which the slim image lacks",
                    p.args[0],
                    gone.join(", ")
                )
            })
        }),
    };
    ProbeResult {
        probe: Check::Entrypoint.to_string(),
        passed: problem.is_none(),
        message: problem.unwrap_or_else(|| "the entrypoint's program resolves".into()),
        output_tail: String::new(),
        time_to_ready: None,
        peak_memory: None,
        latency: None,
        answer: None,
    }
}

/// Where the runtime finds `program`: itself with a `/`, else the first
/// `PATH` entry that has it.
fn locate(sb: &Sandbox, program: &str, env: &[String], cwd: &str) -> Option<String> {
    if program.contains('/') {
        return Some(if program.starts_with('/') {
            program.to_string()
        } else {
            format!("{}/{program}", cwd.trim_end_matches('/'))
        });
    }
    let path = env.iter().find_map(|e| e.strip_prefix("PATH="))?;
    path.split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/{program}", d.trim_end_matches('/')))
        .find(|p| sb.rootfs().is_file(p))
}

/// `DT_NEEDED` libraries of the program (or of its `#!` interpreter) that
/// resolve in the original tree and not in the slim one. Looked up in
/// `DT_RPATH`/`DT_RUNPATH` and the default directories; a library neither
/// tree resolves that way is not named (ld.so.conf may know more).
fn missing_libraries(
    original: &Sandbox,
    slim: &Sandbox,
    program: &str,
    env: &[String],
    cwd: &str,
) -> Vec<String> {
    let Some(mut path) = locate(original, program, env, cwd) else {
        return Vec::new();
    };
    const MAX: u64 = 64 << 20;
    let Ok(mut bytes) = original.rootfs().read_file(&path, MAX) else {
        return Vec::new();
    };
    if let Some(line) = bytes.strip_prefix(b"#!") {
        let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next().unwrap_or(b""));
        let Some(interp) = line.split_whitespace().next().map(str::to_string) else {
            return Vec::new();
        };
        path = interp;
        bytes = original.rootfs().read_file(&path, MAX).unwrap_or_default();
    }
    let Ok(elf) = goblin::elf::Elf::parse(&bytes) else {
        return Vec::new();
    };
    let origin = path.rsplit_once('/').map_or("/", |(d, _)| d).to_string();
    let mut dirs: Vec<String> = elf
        .rpaths
        .iter()
        .chain(elf.runpaths.iter())
        .flat_map(|r| r.split(':'))
        .map(|d| d.replace("$ORIGIN", &origin).replace("${ORIGIN}", &origin))
        .collect();
    let arch = match elf.header.e_machine {
        goblin::elf::header::EM_X86_64 => "x86_64-linux-gnu",
        goblin::elf::header::EM_AARCH64 => "aarch64-linux-gnu",
        goblin::elf::header::EM_386 => "i386-linux-gnu",
        _ => "",
    };
    for d in ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"] {
        dirs.push(d.to_string());
        if !arch.is_empty() {
            dirs.push(format!("{d}/{arch}"));
        }
    }
    let find = |sb: &Sandbox, lib: &str| {
        dirs.iter()
            .map(|d| format!("{}/{lib}", d.trim_end_matches('/')))
            .find(|p| sb.rootfs().is_file(p))
    };
    elf.libraries
        .iter()
        .filter_map(|lib| {
            let there = find(original, lib)?;
            find(slim, lib).is_none().then_some(there)
        })
        .collect()
}

/// What the slim tree lacks, as far as the sandbox can tell: the program
/// of the probe (a command's first word) or of the entrypoint (network
/// probes), and absolute paths the output says could not be opened that
/// the original tree has.
fn missing_paths(
    original: &Sandbox,
    slim: &Sandbox,
    check: &Check,
    result: &ProbeResult,
    base: &RunSpec,
) -> Vec<String> {
    let mut found = BTreeSet::new();
    let program = match check {
        Check::Probe(Probe::Cmd(cmd)) => super::probe::split_args(cmd).into_iter().next(),
        _ => None,
    };
    let spec = match &program {
        Some(p) => RunSpec {
            command: Some(vec![p.clone()]),
            ..base.clone()
        },
        None => base.clone(),
    };
    // `process` names the missing piece of the program's chain; only when
    // the original had it (else the probe found something else).
    if let Err(e) = slim.process(&spec)
        && original.process(&spec).is_ok()
    {
        let e = format!("{e:#}");
        if !result.message.contains(&e) {
            found.insert(e);
        }
    }
    for p in paths_in_output(&result.output_tail) {
        if original.rootfs().missing(&p).is_none() && slim.rootfs().missing(&p).is_some() {
            found.insert(format!("{p} (in the original image, not in the slim one)"));
        }
    }
    found.into_iter().collect()
}

/// Absolute paths on output lines that say something was not found
/// (`/usr/lib/x.so: No such file`, `can't open '/etc/x'`).
fn paths_in_output(tail: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in tail.lines() {
        let l = line.to_ascii_lowercase();
        if !["no such file", "not found", "can't open", "cannot open"]
            .iter()
            .any(|k| l.contains(k))
        {
            continue;
        }
        for tok in line.split(|c: char| c.is_whitespace() || "'\"`:,;()[]{}<>=".contains(c)) {
            let tok = tok.trim_end_matches('.');
            if tok.len() > 1 && tok.starts_with('/') && !tok.contains("//") && out.len() < 20 {
                out.push(tok.to_string());
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

fn describe_failure(r: &ProbeResult, missing: &[String]) -> String {
    let mut s = format!("  probe {}: {}", r.probe, r.message);
    for m in missing {
        let _ = write!(s, "\n    missing: {m}");
    }
    let tail = r.output_tail.trim_end();
    if !tail.is_empty() {
        let _ = write!(s, "\n    output (last lines):");
        let lines: Vec<&str> = tail.lines().collect();
        for l in &lines[lines.len().saturating_sub(20)..] {
            let _ = write!(s, "\n    | {l}");
        }
    }
    s
}

/// Seconds, for people.
pub fn seconds(d: Option<f64>) -> String {
    d.map_or_else(|| "-".into(), |s| format!("{s:.2} s"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthcheck_forms() {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            healthcheck_command(&v(&["CMD-SHELL", "curl -f localhost"])).as_deref(),
            Some("curl -f localhost")
        );
        assert_eq!(
            healthcheck_command(&v(&["CMD", "test", "-e", "it's"])).as_deref(),
            Some(r"'test' '-e' 'it'\''s'")
        );
        assert_eq!(healthcheck_command(&v(&["NONE"])), None);
        assert_eq!(healthcheck_command(&[]), None);
    }

    #[test]
    fn job_file_probes() {
        let probes = |s: &Settings| gate_from_settings(s).unwrap().map(|g| g.verify.probes);
        let none = Settings::default();
        assert_eq!(probes(&none), None);
        for stray in [
            Settings {
                probe_tcp: vec![8080],
                ..Settings::default()
            },
            Settings {
                probe_http_expect: Some(HttpExpect::Same),
                ..Settings::default()
            },
        ] {
            assert!(gate_from_settings(&stray).is_err());
        }
        let all = Settings {
            verify: Some(true),
            probe_cmd: vec!["true".into()],
            probe_http: vec!["8000/healthz".into()],
            probe_tcp: vec![8000],
            ..Settings::default()
        };
        assert_eq!(
            probes(&all).unwrap(),
            vec![
                Probe::Cmd("true".into()),
                Probe::Http {
                    port: 8000,
                    path: "/healthz".into()
                },
                Probe::Tcp { port: 8000 },
            ]
        );
        let bad = Settings {
            verify: Some(true),
            probe_http: vec!["x/".into()],
            ..Settings::default()
        };
        assert!(gate_from_settings(&bad).is_err());
    }

    #[test]
    fn job_file_run_options() {
        let text = "verify = true\nprobe-timeout = \"7s\"\nprobe-requests = 3\nprobe-http-expect = \"same\"\nrun-memory = \"64m\"\nrun-cpus = \"0.5\"\nruntime = \"/opt/runc\"";
        let s: Settings = toml::from_str(text).unwrap();
        let g = gate_from_settings(&s).unwrap().unwrap();
        assert!(g.verify.probes.is_empty(), "default probes");
        let p = &g.verify.probe;
        assert_eq!(p.timeout, std::time::Duration::from_secs(7));
        assert_eq!(p.requests, 3);
        assert!(p.keep_answers);
        assert_eq!(p.base.limits.memory, Some(64 << 20));
        assert_eq!(p.base.limits.cpus, Some(0.5));
        assert_eq!(
            g.prepare.runtime.as_deref(),
            Some(std::path::Path::new("/opt/runc"))
        );
        // Unset: the flags' defaults.
        let s: Settings = toml::from_str("verify = true").unwrap();
        let g = gate_from_settings(&s).unwrap().unwrap();
        assert_eq!(g.verify.probe.timeout, std::time::Duration::from_secs(60));
        assert_eq!(
            g.verify.probe.requests,
            super::super::probe::DEFAULT_REQUESTS
        );
        assert!(!g.verify.probe.keep_answers);
        assert_eq!(g.verify.probe.base.limits.memory, None);
    }

    #[test]
    fn answers_differ_by_status_or_body() {
        let a = |status, body: &str| HttpAnswer {
            status,
            bytes: body.len() as u64,
            digest: String::new(),
            start: body.into(),
        };
        assert_eq!(
            different(&a(200, "hi"), &a(404, "hi")),
            "status 404 where the original gives 200"
        );
        assert_eq!(
            different(&a(200, "hello"), &a(200, "oops")),
            "a 4-byte body \"oops\" where the original gives a 5-byte body \"hello\""
        );
    }

    #[test]
    fn paths_named_by_failing_output() {
        let tail = "python3: can't open file '/app/main.py': [Errno 2] No such file or directory\n\
                    error while loading shared libraries: libssl.so.3: cannot open shared object file\n\
                    /usr/lib/x.so: No such file\nall good /not/this\n";
        assert_eq!(paths_in_output(tail), vec!["/app/main.py", "/usr/lib/x.so"]);
    }
}
