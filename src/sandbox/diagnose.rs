//! What the slim tree lacks, as far as the sandbox can tell without
//! running anything: the static entrypoint check (its program, `#!` and ELF
//! interpreters, `DT_NEEDED` libraries), and the paths a failing probe
//! looked for that the original has. Used by the verify gate (verify.rs).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use super::{Probe, ProbeResult, RunSpec, Sandbox};
use crate::transform::elf;

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

/// The entrypoint resolves: its program (symlinks, `#!` and ELF
/// interpreters, as the sandbox looks it up) and, with `original` given,
/// the `DT_NEEDED` libraries of the program that the original resolves.
pub(super) fn static_check(
    sb: &Sandbox,
    original: Option<&Sandbox>,
    base: &RunSpec,
) -> ProbeResult {
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
    let head = original.rootfs().read_file(&path, 256).unwrap_or_default();
    if let Some(line) = head.strip_prefix(b"#!") {
        let line = String::from_utf8_lossy(line.split(|b| *b == b'\n').next().unwrap_or(b""));
        let Some(interp) = line.split_whitespace().next().map(str::to_string) else {
            return Vec::new();
        };
        path = interp;
    }
    let Ok(file) = original.rootfs().open_file(&path) else {
        return Vec::new();
    };
    let Some(elf) = elf::dependencies(&|off, len| elf::read_file_at(&file, off, len)) else {
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
    let arch = match elf.machine {
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
    elf.needed
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
pub(super) fn missing_paths(
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
pub(super) fn paths_in_output(tail: &str) -> Vec<String> {
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

pub(super) fn describe_failure(r: &ProbeResult, missing: &[String]) -> String {
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
