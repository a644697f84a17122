//! `slim run IMAGE [-- CMD...]`: run an image (any transport), or a command
//! in it, without Docker, like `docker run --rm`: output streams through,
//! the exit code is the command's. With probe flags, runs the probes
//! instead and reports each (passed, why, time to ready, peak memory).

use std::fmt::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Args;

use super::GlobalArgs;
use crate::report::human;
use crate::sandbox::{Limits, PrepareOptions, Probe, ProbeOptions, RunSpec, Sandbox};
use crate::settings::{CpuLimit, HttpExpect, MemoryLimit, ProbeTimeout};
use crate::transport::resolve;

#[derive(Args, Debug)]
pub struct SandboxArgs {
    /// The image (any transport: registry, oci:, oci-archive:, docker-archive:, docker-daemon:).
    #[arg(value_name = "IMAGE")]
    pub image: String,

    /// The command to run instead of the image's Entrypoint and Cmd.
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,

    /// Set an environment variable (K=V; K alone passes slim's own value). Repeatable.
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,

    /// Run as USER (uid, name, uid:gid or name:group, resolved in the image's /etc/passwd and /etc/group).
    #[arg(short, long, value_name = "USER")]
    pub user: Option<String>,

    /// Working directory inside the container.
    #[arg(short, long, value_name = "DIR")]
    pub workdir: Option<String>,

    #[command(flatten)]
    pub probes: ProbeArgs,
}

/// The probe flags, shared by `slim run` and `slim IMAGE -o DEST --verify`.
#[derive(Args, Debug, Clone)]
pub struct ProbeArgs {
    /// The OCI runtime binary [default: runc, else crun, on PATH].
    #[arg(long, value_name = "PATH")]
    pub runtime: Option<PathBuf>,

    /// Memory limit of the container (e.g. 512m, 1g), through the runtime's cgroups.
    #[arg(long = "run-memory", alias = "memory", value_name = "SIZE", value_parser = parse_size)]
    pub memory: Option<u64>,

    /// CPU limit of the container (e.g. 0.5), through the runtime's cgroups.
    #[arg(long = "run-cpus", alias = "cpus", value_name = "N", value_parser = parse_cpus)]
    pub cpus: Option<f64>,

    /// Probe: run CMD in the image (through /bin/sh -c if it has one); passes on exit 0. Repeatable.
    #[arg(long = "probe-cmd", value_name = "CMD")]
    pub probe_cmd: Vec<String>,

    /// Probe: start the entrypoint (or CMD), wait until PORT accepts connections, GET PATH; passes on 2xx/3xx. Repeatable.
    #[arg(long = "probe-http", value_name = "PORT[/PATH]", value_parser = Probe::parse_http)]
    pub probe_http: Vec<Probe>,

    /// Probe: start the entrypoint (or CMD) and wait until PORT accepts connections. Repeatable.
    #[arg(long = "probe-tcp", value_name = "PORT", value_parser = Probe::parse_tcp)]
    pub probe_tcp: Vec<Probe>,

    /// How long each probe may take (a command to finish, a port to answer).
    #[arg(long = "probe-timeout", value_name = "DURATION", default_value = "60s", value_parser = parse_probe_timeout)]
    pub probe_timeout: Duration,

    /// Timed requests per passing HTTP probe, for its latency (median and
    /// 95th percentile); 0 for none.
    #[arg(long = "probe-requests", value_name = "N", default_value_t = crate::sandbox::probe::DEFAULT_REQUESTS)]
    pub probe_requests: usize,

    /// What an HTTP probe must answer: ok (a 2xx or 3xx status) or same (the status and body the original image gives; with --verify).
    #[arg(long = "probe-http-expect", value_name = "WHAT", value_enum, default_value_t = HttpExpect::Ok)]
    pub probe_http_expect: HttpExpect,
}

impl ProbeArgs {
    /// The probes, in the order the flags kinds are listed.
    pub fn probes(&self) -> Vec<Probe> {
        self.probe_cmd
            .iter()
            .cloned()
            .map(Probe::Cmd)
            .chain(self.probe_http.iter().cloned())
            .chain(self.probe_tcp.iter().cloned())
            .collect()
    }

    pub fn limits(&self) -> Limits {
        Limits {
            memory: self.memory,
            cpus: self.cpus,
        }
    }
}

fn parse_probe_timeout(s: &str) -> Result<Duration, String> {
    s.parse::<ProbeTimeout>().map(|t| t.0)
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<MemoryLimit>().map(|m| m.0)
}

fn parse_cpus(s: &str) -> Result<f64, String> {
    s.parse::<CpuLimit>().map(CpuLimit::cpus)
}

pub fn run(args: SandboxArgs, global: &GlobalArgs) -> Result<u8> {
    let image = resolve::source(&args.image)?;
    if !global.quiet {
        super::say_where(&image);
    }
    let client = global.client()?;
    let src = image.open_source(&client, global.source_limits())?;
    let sb = Sandbox::prepare(
        src.as_ref(),
        &PrepareOptions {
            runtime: args.probes.runtime.clone(),
            temp_dir: None,
            platform: None,
        },
    )
    .with_context(|| format!("preparing {} to run", src.name()))?;
    for w in &sb.warnings {
        tracing::warn!("{w}");
    }
    let base = RunSpec {
        command: (!args.command.is_empty()).then(|| args.command.clone()),
        env: args.env.clone(),
        user: args.user.clone(),
        workdir: args.workdir.clone(),
        limits: args.probes.limits(),
        timeout: None,
        capture: false,
    };
    let probes = args.probes.probes();
    if args.probes.probe_http_expect == HttpExpect::Same {
        return Err(super::UsageError(
            "--probe-http-expect same compares with the original image: use it with slim IMAGE -o DEST --verify".into(),
        )
        .into());
    }
    if probes.is_empty() {
        let outcome = sb.run(&base)?;
        tracing::info!(
            "exit code {} after {:.2} s, peak memory {}",
            outcome.exit_code,
            outcome.duration.as_secs_f64(),
            outcome.peak_memory.map_or("unknown".to_string(), human)
        );
        return Ok(u8::try_from(outcome.exit_code.clamp(0, 255)).unwrap_or(1));
    }
    let results = sb.probe(
        &probes,
        &ProbeOptions {
            timeout: args.probes.probe_timeout,
            base,
            requests: args.probes.probe_requests,
            keep_answers: false,
        },
    )?;
    let mut out = String::new();
    let mut failed = 0;
    for r in &results {
        let mut facts = Vec::new();
        if let Some(t) = r.time_to_ready {
            facts.push(format!("ready in {:.2} s", t.as_secs_f64()));
        }
        if let Some(m) = r.peak_memory {
            facts.push(format!("peak memory {}", human(m)));
        }
        if let Some(l) = r.latency {
            facts.push(format!(
                "latency median {} p95 {} over {} requests",
                millis(l.median),
                millis(l.p95),
                l.requests
            ));
        }
        let facts = if facts.is_empty() {
            String::new()
        } else {
            format!(" ({})", facts.join(", "))
        };
        let verdict = if r.passed { "passed" } else { "FAILED" };
        writeln!(out, "probe {}: {verdict}{facts}: {}", r.probe, r.message)?;
        if !r.passed {
            failed += 1;
            let tail = r.output_tail.trim_end();
            if !tail.is_empty() {
                writeln!(out, "  output (last lines):")?;
                let lines: Vec<&str> = tail.lines().collect();
                for l in &lines[lines.len().saturating_sub(20)..] {
                    writeln!(out, "  | {l}")?;
                }
            }
        }
    }
    super::out(&out)?;
    if failed > 0 {
        return Err(anyhow::Error::new(ProbesFailed {
            failed,
            total: results.len(),
        }));
    }
    Ok(0)
}

/// Some probes failed (exit 1; the details are printed above it).
#[derive(Debug, thiserror::Error)]
#[error("{failed} of {total} probes failed")]
pub struct ProbesFailed {
    pub failed: usize,
    pub total: usize,
}

/// A short duration for people: `3.2 ms`.
fn millis(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}
