//! Minimize (`slim SOURCE -o DEST --minimize`): keep only what the image
//! uses while its probes run.
//!
//! ```text
//! source -> sandbox (the host's platform, materialized once)
//!        -> trace.rs  the probes run ROUNDS times with fanotify on each
//!                     container's root: every path opened, run or listed
//!        -> keep.rs   keep-list = traced ∪ created files' directories ∪
//!                     workdir ∪ symlinks into kept paths, as a profile
//!                     (remove everything else, category "not used at run time")
//! then the ordinary pipeline with that profile (its safety keeps add the
//! ELF closure, interpreters, entrypoint, licences, CA certificates, /etc)
//! behind the --verify gate: the same probes pass on the result before
//! anything is written.
//! ```
//!
//! Reproducible: the keep-list is a sorted set, the union over
//! [`DEFAULT_ROUNDS`] runs of the probes (a path seen in one run only, for
//! timing reasons, is kept), and the profile text holds nothing else that
//! varies; `--write-profile FILE` writes that very text, so `--profile FILE`
//! gives the same output digest without tracing.

pub mod keep;
pub mod trace;

use std::collections::BTreeSet;

use anyhow::{Context, Result};

use crate::sandbox::verify::{Check, ProbeFailedOnOriginal, SlimFailedProbes, default_probes};
use crate::sandbox::{PrepareOptions, Probe, ProbeOptions, Sandbox};
use crate::transport::Source;
pub use keep::CATEGORY;

/// Runs of the probes whose traces are united.
pub const DEFAULT_ROUNDS: usize = 2;

/// What to learn from.
#[derive(Clone, Debug)]
pub struct Options {
    /// The probes (empty: the default probes of `--verify` that run a
    /// container: exposed TCP ports and the healthcheck).
    pub probes: Vec<Probe>,
    pub probe: ProbeOptions,
    pub prepare: PrepareOptions,
    pub rounds: usize,
    /// `--keep` and `--remove` globs, written into the profile.
    pub keep: Vec<String>,
    pub remove: Vec<String>,
}

/// What was learned.
#[derive(Clone, Debug)]
pub struct Learned {
    /// The profile (TOML) that keeps what was used.
    pub profile: String,
    /// Distinct paths the trace saw.
    pub traced: usize,
    /// Paths in the keep-list (before the safety keeps).
    pub kept: usize,
    /// The probes that ran, as named in reports.
    pub probes: Vec<String>,
    pub rounds: usize,
    /// Things a user should know (probes dropped, paths not representable).
    pub notes: Vec<String>,
}

/// The `minimize` object of the JSON report.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Summary {
    /// The platform whose image was traced (the host's).
    pub traced_platform: String,
    /// Other platforms of the output: the learned profile applied to them
    /// untraced (their ELF closure computed on their own tree).
    pub mapped_platforms: Vec<String>,
    pub probes: Vec<String>,
    pub rounds: usize,
    pub traced_paths: usize,
    pub kept_paths: usize,
    /// Where `--write-profile` wrote the learned profile.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
}

/// Traces the probes on `src` (the host's platform) and learns its
/// keep-list.
pub fn learn(src: &dyn Source, opts: &Options) -> Result<Learned> {
    let tracer = trace::Tracer::start()?;
    let sb = Sandbox::prepare(src, &opts.prepare)
        .with_context(|| format!("preparing {} to trace its probes", src.name()))?;
    for w in &sb.warnings {
        tracing::warn!("{w}");
    }
    let mut notes = Vec::new();
    let default = opts.probes.is_empty();
    let probes: Vec<Probe> = if default {
        default_probes(&sb)
            .into_iter()
            .filter_map(|c| match c {
                Check::Probe(p) => Some(p),
                Check::Entrypoint => None,
            })
            .collect()
    } else {
        opts.probes.clone()
    };
    if probes.is_empty() {
        notes.push(
            "no probe runs a container (no --probe-* flag, no exposed port, no healthcheck): only the entrypoint's static closure is kept; give --probe-http, --probe-tcp or --probe-cmd".into(),
        );
    }
    let probe_opts = ProbeOptions {
        // Timing is the gate's business; tracing needs the answers only.
        requests: 0,
        ..opts.probe.clone()
    };
    sb.set_on_mount(Some(tracer.hook()));
    let mut passing: Vec<Probe> = probes.clone();
    for round in 0..opts.rounds.max(1) {
        let results = sb.probe(&passing, &probe_opts)?;
        let mut wrong = Vec::new();
        let mut next = Vec::new();
        for (p, r) in passing.iter().zip(results) {
            if r.passed {
                next.push(p.clone());
            } else if default && round == 0 {
                notes.push(format!(
                    "{p}: fails on the original image ({}); not traced",
                    r.message
                ));
            } else {
                wrong.push(format!("  probe {p}: {}", r.message));
            }
        }
        if !wrong.is_empty() {
            return Err(ProbeFailedOnOriginal(format!(
                "while tracing (run {} of {}), the original image fails:\n{}\nfix the probe or the image",
                round + 1,
                opts.rounds.max(1),
                wrong.join("\n")
            ))
            .into());
        }
        passing = next;
    }
    sb.set_on_mount(None);
    let traced = tracer.finish()?;
    let tree = keep::DiskTree::read(sb.rootfs().path())?;
    let workdir = sb.config().working_dir.trim_start_matches('/').to_string();
    let kept = keep::keep_set(&tree, &traced, workdir.as_bytes());
    let description = format!(
        "what {} used while these probes ran: {}",
        src.name(),
        if passing.is_empty() {
            "none (the entrypoint's static closure only)".to_string()
        } else {
            passing
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    );
    let (profile, skipped) = keep::profile_text(&description, &kept, &opts.keep, &opts.remove);
    for s in skipped {
        notes.push(format!(
            "{s}: its name is not UTF-8, so the profile cannot keep it"
        ));
    }
    Ok(Learned {
        profile,
        traced: traced.len(),
        kept: kept.len(),
        probes: passing.iter().map(ToString::to_string).collect(),
        rounds: opts.rounds.max(1),
        notes,
    })
}

/// A verify failure of a minimized image, with the `--keep` globs that
/// would bring back what the failing run looked for: each path the gate
/// names as missing, and its directory's contents.
pub fn with_keep_hints(e: anyhow::Error) -> anyhow::Error {
    let f = match e.downcast::<SlimFailedProbes>() {
        Ok(f) => f,
        Err(e) => return e,
    };
    let mut globs = BTreeSet::new();
    for line in f.message.lines() {
        let Some(rest) = line.trim().strip_prefix("missing: ") else {
            continue;
        };
        // `/usr/lib/x.so (in the original image, not in the slim one)` or
        // `cannot run "x": /usr/bin/x links to …`.
        for tok in rest.split(|c: char| c.is_whitespace() || "\"'():,".contains(c)) {
            if tok.len() > 1 && tok.starts_with('/') {
                globs.insert(format!("--keep '{tok}'"));
                if let Some((dir, _)) = tok.rsplit_once('/')
                    && !dir.is_empty()
                {
                    globs.insert(format!("--keep '{dir}/**'"));
                }
            }
        }
    }
    let hint = if globs.is_empty() {
        "\nthe trace missed something the program needs; keep it with --keep GLOB (for example the directory it reads), or add a probe that makes the program use it".to_string()
    } else {
        format!(
            "\nto bring these back, minimize again with: {}",
            globs.into_iter().collect::<Vec<_>>().join(" ")
        )
    };
    let message = format!("{}{hint}", f.message);
    SlimFailedProbes {
        message,
        report: f.report,
        staged: f.staged,
    }
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sandbox::verify::VerifyReport;

    fn failure(message: &str) -> anyhow::Error {
        SlimFailedProbes {
            message: message.into(),
            report: Box::new(VerifyReport {
                default_probes: false,
                probes: Vec::new(),
                skipped: Vec::new(),
                passed: false,
                notes: Vec::new(),
            }),
            staged: None,
        }
        .into()
    }

    #[test]
    fn a_failed_gate_names_the_keep_flags_and_keeps_its_exit_code() {
        let e = with_keep_hints(failure(
            "the slim image fails 1 probe\n  probe command \"ls /a/b\": exited 1\n    missing: /app/data/new.txt (in the original image, not in the slim one)",
        ));
        let f = e.downcast_ref::<SlimFailedProbes>().expect("still exit 4");
        assert!(
            f.message.ends_with(
                "to bring these back, minimize again with: --keep '/app/data/**' --keep '/app/data/new.txt'"
            ),
            "{}",
            f.message
        );
        let e = with_keep_hints(failure("the slim image fails 1 probe"));
        let f = e.downcast_ref::<SlimFailedProbes>().unwrap();
        assert!(
            f.message.contains("the trace missed something"),
            "{}",
            f.message
        );
        // Other errors pass through as they were.
        let other = with_keep_hints(anyhow::anyhow!("no runc"));
        assert_eq!(other.to_string(), "no runc");
    }
}
