//! `slim SOURCE -o DEST --minimize [--write-profile FILE]`: learn the
//! keep-list (see [`crate::minimize`]), then slim with it as the profile,
//! behind the `--verify` gate.

use std::io::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

use super::sandbox::ProbeArgs;
use crate::minimize::{self, Learned, Summary};
use crate::sandbox::{PrepareOptions, ProbeOptions, RunSpec};
use crate::settings::Settings;
use crate::transport::Source;

/// The learned profile, on disk for as long as the settings load it.
pub(super) struct LearnedProfile {
    pub learned: Learned,
    _file: tempfile::NamedTempFile,
    pub path: String,
}

/// Traces the probes on `src` and writes the learned profile (to
/// `--write-profile FILE` too).
pub(super) fn learn(
    args: &ProbeArgs,
    globs: (&[String], &[String]),
    write_profile: Option<&Path>,
    src: &dyn Source,
    quiet: bool,
) -> Result<LearnedProfile> {
    let (keep, remove) = globs;
    let opts = minimize::Options {
        probes: args.probes(),
        probe: ProbeOptions {
            timeout: args.probe_timeout,
            base: RunSpec {
                limits: args.limits(),
                ..RunSpec::default()
            },
            requests: 0,
            keep_answers: false,
        },
        prepare: PrepareOptions {
            runtime: args.runtime.clone(),
            temp_dir: None,
            // The host's image of an index: the others are mapped.
            platform: None,
        },
        rounds: minimize::DEFAULT_ROUNDS,
        keep: keep.to_vec(),
        remove: remove.to_vec(),
    };
    if !quiet {
        let _ = writeln!(
            std::io::stderr(),
            "tracing what {} uses while its probes run ({} runs)…",
            src.name(),
            opts.rounds
        );
    }
    let learned =
        minimize::learn(src, &opts).with_context(|| format!("minimizing {}", src.name()))?;
    for n in &learned.notes {
        tracing::warn!("{n}");
    }
    let mut file = tempfile::Builder::new()
        .prefix("slim-learned-")
        .suffix(".toml")
        .tempfile()
        .context("writing the learned profile to a temp file")?;
    file.write_all(learned.profile.as_bytes())?;
    file.flush()?;
    if let Some(out) = write_profile {
        std::fs::write(out, &learned.profile)
            .with_context(|| format!("writing the learned profile to {}", out.display()))?;
    }
    let path = file.path().to_string_lossy().into_owned();
    Ok(LearnedProfile {
        learned,
        _file: file,
        path,
    })
}

/// The settings that apply the learned profile: exactly what
/// `--profile FILE` with the written file gives (the `--keep` and
/// `--remove` globs are in the profile).
pub(super) fn settings(mut s: Settings, learned: &LearnedProfile) -> Settings {
    s.profile = Some(learned.path.clone());
    s.keep.clear();
    s.remove.clear();
    s
}

/// The report's `minimize` object.
pub(super) fn summary(
    learned: &Learned,
    platforms: &[crate::image::Platform],
    written: Option<&Path>,
) -> Summary {
    let host = crate::image::Platform::host();
    let host_any_variant = crate::image::Platform {
        variant: None,
        ..host.clone()
    };
    Summary {
        traced_platform: host.to_string(),
        mapped_platforms: platforms
            .iter()
            .filter(|p| !host_any_variant.selects(p))
            .map(ToString::to_string)
            .collect(),
        probes: learned.probes.clone(),
        rounds: learned.rounds,
        traced_paths: learned.traced,
        kept_paths: learned.kept,
        profile: written.map(|p| p.display().to_string()),
        notes: learned.notes.clone(),
    }
}

/// The minimization in slim's summary.
pub(super) fn print(m: &Summary) {
    let mut err = std::io::stderr().lock();
    let _ = writeln!(
        err,
        "  minimized: traced {} paths on {} ({} runs of {}); keep-list of {} paths (traced, their links, Python sources), plus the safety keeps",
        m.traced_paths,
        m.traced_platform,
        m.rounds,
        if m.probes.is_empty() {
            "no probe".to_string()
        } else {
            m.probes.join(", ")
        },
        m.kept_paths
    );
    if !m.mapped_platforms.is_empty() {
        let _ = writeln!(
            err,
            "    not traced, the learned profile applied: {}",
            m.mapped_platforms.join(", ")
        );
    }
    if let Some(p) = &m.profile {
        let _ = writeln!(
            err,
            "    learned profile written to {p} (apply it with --profile {p})"
        );
    }
}
