//! `slim.toml`: the project config file's values become flags of
//! `slim SOURCE -o DEST` that the command line did not give.
//!
//! The file is read and checked by [`crate::config`]: the settings keys
//! (those of a batch job file's `[defaults]`) deserialize into
//! [`crate::settings::Settings`]; every other flag of the main command is a
//! key named as the flag (`fail-if-savings-below`, `jobs`, `probe-timeout`,
//! `insecure-registry`...). Each value is then checked by its flag's own
//! parser (so a mistake names the file and line), and the command line is
//! parsed again with the file's values in front of it, for the flags the
//! user did not give. A flag on the command line always wins; a repeatable
//! flag given there replaces the file's list.
//!
//! Relative paths in the file (`report`, `ca-cert`, `runtime`, profile
//! files, a `keep-base` layout or archive) are relative to the file's
//! directory.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Args, CommandFactory, FromArgMatches};
use toml::{Spanned, Value};

use super::{Cli, UsageError};
use crate::config::{self, ProjectConfig};

#[derive(Args, Debug, Clone)]
pub struct ConfigArgs {
    /// Take defaults for the flags from FILE [default: slim.toml or .slim.toml, in the current directory or the nearest one above it].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Read no config file (also SLIM_NO_CONFIG=1).
    #[arg(long = "no-config", env = "SLIM_NO_CONFIG", hide_env = true, value_parser = clap::builder::FalseyValueParser::new())]
    pub no_config: bool,
}

/// Settings keys whose flag is spelled otherwise (as in a batch job file):
/// (key, flag, a `false` value means the flag).
const RENAMED: &[(&str, &str, bool)] = &[
    ("platforms", "platform", false),
    ("safety-keeps", "no-safety-keeps", true),
    ("hardlink-dedup", "no-hardlink-dedup", true),
    ("max-layer-gib", "max-layer-size", false),
];

/// The settings keys (every field of `Settings`); the test below checks the
/// list against the struct.
const SETTINGS_KEYS: &[&str] = &[
    "squash",
    "keep-base",
    "profile",
    "keep",
    "remove",
    "safety-keeps",
    "compression",
    "level",
    "format",
    "hardlink-dedup",
    "platforms",
    "threads",
    "max-layer-gib",
    "max-files",
    "verify",
    "probe-cmd",
    "probe-http",
    "probe-tcp",
    "probe-timeout",
    "probe-requests",
    "probe-http-expect",
    "runtime",
    "run-memory",
    "run-cpus",
];

/// Flags that say what to slim, or how to talk, not how to slim.
const NOT_KEYS: &[&str] = &[
    "output",
    "dry-run",
    "config",
    "no-config",
    "help",
    "version",
    "verbose",
];

/// Which flag a file key sets: (flag, `false` sets it).
fn flag_of(key: &str) -> (&str, bool) {
    RENAMED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map_or((key, false), |(_, f, inverted)| (*f, *inverted))
}

/// The main command's own keys: its long flags that are no settings key.
fn own_keys(cmd: &clap::Command) -> Vec<String> {
    let renamed: Vec<&str> = RENAMED.iter().map(|(_, f, _)| *f).collect();
    cmd.get_arguments()
        .filter_map(|a| a.get_long())
        .filter(|l| !NOT_KEYS.contains(l) && !SETTINGS_KEYS.contains(l) && !renamed.contains(l))
        .map(str::to_string)
        .collect()
}

/// The config file that applies: `--config`, else the one found upward
/// from the current directory, unless `--no-config` (or SLIM_NO_CONFIG).
fn which(args: &ConfigArgs, matches: &ArgMatches) -> anyhow::Result<Option<PathBuf>> {
    if let Some(path) = &args.config {
        if matches.value_source("no_config") == Some(ValueSource::CommandLine) {
            return Err(UsageError("--config and --no-config contradict each other".into()).into());
        }
        return Ok(Some(path.clone()));
    }
    if args.no_config {
        return Ok(None);
    }
    let cwd = std::env::current_dir()?;
    Ok(config::discover(&cwd)?)
}

/// `cli` with the config file's values for the flags `matches` did not
/// get from the command line (or the environment), and the file read.
/// `argv` is the command line `matches` came from.
pub fn apply(
    cli: Cli,
    matches: &ArgMatches,
    argv: Vec<OsString>,
) -> anyhow::Result<(Cli, Option<PathBuf>)> {
    let Some(path) = which(&cli.config, matches)? else {
        return Ok((cli, None));
    };
    let cmd = Cli::command();
    let own = own_keys(&cmd);
    let own_refs: Vec<&str> = own.iter().map(String::as_str).collect();
    // Checked: unknown keys and settings values, with their lines.
    let file: ProjectConfig<serde::de::IgnoredAny> = config::load(&path, &own_refs)?;
    // Both parts again, each value with its span, in the file's order.
    let all: std::collections::BTreeMap<String, Spanned<Value>> = toml::from_str(&file.text)
        .map_err(|e| UsageError(format!("{}: {}", path.display(), e.message())))?;
    let mut injected: Vec<OsString> = Vec::new();
    for (key, value) in &all {
        let (flag, inverted) = flag_of(key);
        let arg = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(flag))
            .expect("every key was checked against the flags");
        let given = matches!(
            matches.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let line = file.line(value.span().start);
        let fail = |message: String| {
            UsageError(format!("{}, line {line}: {key}: {message}", path.display()))
        };
        let takes_values = arg.get_action().takes_values();
        let values: Vec<&Value> = match value.get_ref() {
            Value::Array(items) if matches!(arg.get_action(), ArgAction::Append) => {
                items.iter().collect()
            }
            Value::Array(_) => return Err(fail("takes one value, not a list".into()).into()),
            v => vec![v],
        };
        for v in values {
            let text = match v {
                Value::Boolean(b) if !takes_values => {
                    if *b != inverted {
                        injected.push(format!("--{flag}").into());
                    }
                    continue;
                }
                _ if !takes_values => return Err(fail("is true or false".into()).into()),
                Value::String(s) => s.clone(),
                Value::Integer(i) => i.to_string(),
                Value::Float(f) => f.to_string(),
                other => {
                    return Err(
                        fail(format!("a {} is not a value of --{flag}", other.type_str())).into(),
                    );
                }
            };
            let text = relative_to(&file, key, &text);
            // The flag's own parser judges the value, alone on a command line.
            let token = format!("--{flag}={text}");
            cmd.clone()
                .try_get_matches_from(["slim", "SOURCE", "-o", "DEST", &token])
                .map_err(|e| fail(clap_message(&e)))?;
            injected.push(token.into());
        }
    }
    let mut full = argv.into_iter();
    let argv: Vec<OsString> = full
        .next()
        .into_iter()
        .chain(injected)
        .chain(full)
        .collect();
    let matches = cmd.try_get_matches_from(argv).map_err(|e| {
        UsageError(format!(
            "with the defaults of {}: {}",
            path.display(),
            clap_message(&e)
        ))
    })?;
    let cli = Cli::from_arg_matches(&matches)?;
    Ok((cli, Some(path)))
}

/// Paths in the file are relative to the file: `report`, `ca-cert`,
/// `runtime` (when a path, not a name on PATH), profile files and a
/// `keep-base` in a local layout or archive.
fn relative_to<R>(file: &ProjectConfig<R>, key: &str, value: &str) -> String {
    let resolve = |p: &str| file.resolve(Path::new(p)).display().to_string();
    match key {
        "report" if value != "-" => resolve(value),
        "ca-cert" => resolve(value),
        "runtime" if value.contains('/') => resolve(value),
        // A base image in a local file: the path part of the reference.
        "keep-base" => ["oci:", "oci-archive:", "docker-archive:"]
            .iter()
            .find_map(|scheme| {
                let rest = value.strip_prefix(scheme)?;
                (!rest.starts_with('/')).then(|| format!("{scheme}{}", resolve(rest)))
            })
            .unwrap_or_else(|| value.to_string()),
        "profile" => value
            .split(',')
            .map(str::trim)
            .map(|p| {
                if p.contains('/') || p.ends_with(".toml") {
                    resolve(p)
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join(","),
        _ => value.to_string(),
    }
}

/// clap's message without its `error: ` prefix and usage lines.
fn clap_message(e: &clap::Error) -> String {
    let text = e.to_string();
    let first = text.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The settings keys listed here are the fields of `Settings`, and
    /// each is a flag of the main command (as spelled, or renamed).
    #[test]
    fn every_settings_key_is_a_flag() {
        let e = toml::from_str::<crate::settings::Settings>("zzz = 1").unwrap_err();
        let expected = e.message().split("expected one of ").nth(1).unwrap();
        let mut fields: Vec<&str> = expected
            .split(", ")
            .map(|f| f.trim().trim_matches('`'))
            .collect();
        let mut listed = SETTINGS_KEYS.to_vec();
        fields.sort();
        listed.sort();
        assert_eq!(fields, listed);
        let cmd = Cli::command();
        for key in SETTINGS_KEYS {
            let (flag, _) = flag_of(key);
            assert!(
                cmd.get_arguments().any(|a| a.get_long() == Some(flag)),
                "{key} -> --{flag}"
            );
        }
        let own = own_keys(&cmd);
        for k in [
            "fail-if-savings-below",
            "jobs",
            "timeout",
            "insecure-registry",
        ] {
            assert!(own.iter().any(|o| o == k), "{k} in {own:?}");
        }
    }

    #[test]
    fn relative_paths_are_relative_to_the_file() {
        let file = ProjectConfig {
            path: PathBuf::from("/repo/slim.toml"),
            settings: crate::settings::Settings::default(),
            own: (),
            text: String::new(),
        };
        for (key, value, expected) in [
            ("report", "out/r.json", "/repo/out/r.json"),
            ("report", "-", "-"),
            ("report", "/abs.json", "/abs.json"),
            ("ca-cert", "ca.pem", "/repo/ca.pem"),
            ("runtime", "runc", "runc"),
            ("runtime", "bin/runc", "/repo/bin/runc"),
            (
                "profile",
                "auto, profiles/app.toml",
                "auto,/repo/profiles/app.toml",
            ),
            ("keep-base", "oci:base:v1", "oci:/repo/base:v1"),
            ("keep-base", "oci:/base:v1", "oci:/base:v1"),
            ("keep-base", "debian:12", "debian:12"),
            ("keep-base", "2", "2"),
            ("compression", "zstd", "zstd"),
        ] {
            assert_eq!(relative_to(&file, key, value), expected, "{key} = {value}");
        }
    }
}
