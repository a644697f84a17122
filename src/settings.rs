//! Resolved settings: what the command-line flags (or a batch file's
//! `[defaults]` and entries) say about how to slim, merged into one value and
//! checked before any network I/O.
//!
//! A flag and a job-file key parse into the same type: the option enums
//! derive both `clap::ValueEnum` and `serde::Deserialize`, and `keep-base`
//! is a [`KeepBaseSetting`] either way. Settings are data: a base image is
//! named here and opened by the copy stage.

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use serde::Deserialize;

use crate::copy::{Format, KeepBase, RewriteOptions, SquashMode};
use crate::image::Platform;
use crate::image::media::Compression;
use crate::layer::encode::Codec;
use crate::profile::ProfileSet;
use crate::reference::{ImageRef, ReferenceError};

/// A settings mistake the user fixes in the command line or the job file.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct SettingsError(pub String);

/// How to slim an image. Every field is optional so that a batch entry can
/// override its `[defaults]`; [`Settings::merged`] layers them.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// `all` (one layer) or `none` (each layer on its own).
    pub squash: Option<SquashMode>,
    /// A layer count or a base image reference.
    pub keep_base: Option<KeepBaseSetting>,
    /// Profile names or files, comma-separated; `auto` or `none`.
    pub profile: Option<String>,
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    pub safety_keeps: Option<bool>,
    /// `gzip`, `zstd` or `none`.
    pub compression: Option<Compression>,
    pub level: Option<i32>,
    /// `oci` or `docker`.
    pub format: Option<Format>,
    pub hardlink_dedup: Option<bool>,
    #[serde(default)]
    pub platforms: Vec<String>,
    pub threads: Option<usize>,
    pub max_layer_gib: Option<u64>,
    pub max_files: Option<u64>,
    /// `--verify`: probe the original and the slim image before writing.
    pub verify: Option<bool>,
    /// `--probe-cmd`, `--probe-http PORT[/PATH]`, `--probe-tcp PORT`
    /// (sandbox/verify.rs reads them; they change nothing written).
    #[serde(default)]
    pub probe_cmd: Vec<String>,
    #[serde(default)]
    pub probe_http: Vec<String>,
    #[serde(default)]
    pub probe_tcp: Vec<u16>,
    /// `--probe-timeout`: per probe (`30s`, `2m`).
    pub probe_timeout: Option<ProbeTimeout>,
    /// `--probe-requests`: timed requests per passing HTTP probe.
    pub probe_requests: Option<usize>,
    /// `--probe-http-expect`: `ok` (2xx/3xx) or `same` (as the original).
    pub probe_http_expect: Option<HttpExpect>,
    /// `--runtime`: the OCI runtime binary.
    pub runtime: Option<std::path::PathBuf>,
    /// `--run-memory`, `--run-cpus`: the container's limits.
    pub run_memory: Option<MemoryLimit>,
    pub run_cpus: Option<CpuLimit>,
}

/// What an HTTP probe must answer (`--probe-http-expect`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum, Deserialize)]
#[serde(try_from = "String")]
pub enum HttpExpect {
    /// A 2xx or 3xx status.
    #[default]
    Ok,
    /// The status and body the original image answers (with --verify).
    Same,
}

impl TryFrom<String> for HttpExpect {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        choice("probe-http-expect", &s)
    }
}

/// `--probe-timeout`: above zero (`30s`, `2m`, `1h`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct ProbeTimeout(pub std::time::Duration);

impl FromStr for ProbeTimeout {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        crate::cleanup::parse_duration(s)?
            .map(ProbeTimeout)
            .ok_or_else(|| "a probe needs a timeout above 0".to_string())
    }
}

impl TryFrom<String> for ProbeTimeout {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        s.parse()
            .map_err(|e| SettingsError(format!("probe-timeout {s:?}: {e}")))
    }
}

/// `--run-memory`: bytes, at least 4 MiB (`512m`, `1g`, `1.5G`, `100k`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct MemoryLimit(pub u64);

impl FromStr for MemoryLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let t = s.trim().to_ascii_lowercase();
        let t = t.strip_suffix('b').unwrap_or(&t);
        let (num, mult) = match t.chars().last() {
            Some('k') => (&t[..t.len() - 1], 1u64 << 10),
            Some('m') => (&t[..t.len() - 1], 1 << 20),
            Some('g') => (&t[..t.len() - 1], 1 << 30),
            Some('t') => (&t[..t.len() - 1], 1 << 40),
            _ => (t, 1),
        };
        let n: f64 = num
            .parse()
            .map_err(|_| format!("{s:?} is not a size (e.g. 512m, 1g)"))?;
        let bytes = n * mult as f64;
        if !(bytes.is_finite() && bytes >= (4u64 << 20) as f64 && bytes < 1e18) {
            return Err(format!("{s:?}: a memory limit must be at least 4m"));
        }
        Ok(MemoryLimit(bytes as u64))
    }
}

impl TryFrom<String> for MemoryLimit {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        s.parse()
            .map_err(|e| SettingsError(format!("run-memory: {e}")))
    }
}

/// `--run-cpus`: CPUs from 0.01 to 1024, kept in thousandths.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct CpuLimit(u64);

impl CpuLimit {
    pub fn cpus(self) -> f64 {
        self.0 as f64 / 1000.0
    }
}

impl FromStr for CpuLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let n: f64 = s
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not a number of CPUs (e.g. 0.5, 2)"))?;
        if !(n.is_finite() && (0.01..=1024.0).contains(&n)) {
            return Err(format!("{s:?}: CPUs must be between 0.01 and 1024"));
        }
        Ok(CpuLimit((n * 1000.0).round() as u64))
    }
}

impl TryFrom<String> for CpuLimit {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        s.parse()
            .map_err(|e| SettingsError(format!("run-cpus: {e}")))
    }
}

/// The name a flag and a job file give an option value (`all`, `gzip`).
fn name_of<T: ValueEnum>(value: &T) -> String {
    value
        .to_possible_value()
        .expect("no option value is hidden")
        .get_name()
        .to_string()
}

/// A job-file value of an option enum, by the names `--help` lists; a
/// mistake names the key and the choices ("compression \"lz4\": use gzip,
/// zstd or none"), as the flag's error does.
fn choice<T: ValueEnum>(key: &str, value: &str) -> Result<T, SettingsError> {
    T::from_str(value, false).map_err(|_| {
        let names: Vec<String> = T::value_variants().iter().map(name_of).collect();
        let (last, rest) = names.split_last().expect("an option has values");
        SettingsError(format!(
            "{key} {value:?}: use {} or {last}",
            rest.join(", ")
        ))
    })
}

impl TryFrom<String> for SquashMode {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        choice("squash", &s)
    }
}

impl TryFrom<String> for Compression {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        choice("compression", &s)
    }
}

impl TryFrom<String> for Format {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        choice("format", &s)
    }
}

/// `--keep-base N|REF` and `keep-base = "N|REF"`: a layer count (all
/// digits) or a base image reference, parsed when read. The text is kept as
/// written, because the settings description records it so (and its digest
/// says "slimmed the same way").
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct KeepBaseSetting {
    written: String,
    base: KeepBase,
}

impl KeepBaseSetting {
    /// Never [`KeepBase::None`].
    pub fn base(&self) -> &KeepBase {
        &self.base
    }
}

impl fmt::Display for KeepBaseSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.written)
    }
}

/// Why a `keep-base` value is neither a layer count nor a reference (the
/// flag's error names the flag; a job file's names the key, see `TryFrom`).
#[derive(Debug, thiserror::Error)]
pub enum KeepBaseError {
    #[error("not a number")]
    NotANumber,
    #[error(transparent)]
    Reference(#[from] ReferenceError),
}

impl FromStr for KeepBaseSetting {
    type Err = KeepBaseError;

    fn from_str(s: &str) -> Result<Self, KeepBaseError> {
        let base = if s.chars().all(|c| c.is_ascii_digit()) {
            KeepBase::Count(s.parse().map_err(|_| KeepBaseError::NotANumber)?)
        } else {
            KeepBase::Image(s.parse::<ImageRef>()?)
        };
        Ok(KeepBaseSetting {
            written: s.to_string(),
            base,
        })
    }
}

impl TryFrom<String> for KeepBaseSetting {
    type Error = SettingsError;
    fn try_from(s: String) -> Result<Self, SettingsError> {
        s.parse()
            .map_err(|e| SettingsError(format!("keep-base {s}: {e}")))
    }
}

impl Settings {
    /// `self` with what `over` sets taken from `over`.
    pub fn merged(&self, over: &Settings) -> Settings {
        let pick =
            |a: &Vec<String>, b: &Vec<String>| if b.is_empty() { a.clone() } else { b.clone() };
        Settings {
            squash: over.squash.or(self.squash),
            keep_base: over.keep_base.clone().or_else(|| self.keep_base.clone()),
            profile: over.profile.clone().or_else(|| self.profile.clone()),
            keep: pick(&self.keep, &over.keep),
            remove: pick(&self.remove, &over.remove),
            safety_keeps: over.safety_keeps.or(self.safety_keeps),
            compression: over.compression.or(self.compression),
            level: over.level.or(self.level),
            format: over.format.or(self.format),
            hardlink_dedup: over.hardlink_dedup.or(self.hardlink_dedup),
            platforms: pick(&self.platforms, &over.platforms),
            threads: over.threads.or(self.threads),
            max_layer_gib: over.max_layer_gib.or(self.max_layer_gib),
            max_files: over.max_files.or(self.max_files),
            verify: over.verify.or(self.verify),
            probe_cmd: pick(&self.probe_cmd, &over.probe_cmd),
            probe_http: pick(&self.probe_http, &over.probe_http),
            probe_tcp: if over.probe_tcp.is_empty() {
                self.probe_tcp.clone()
            } else {
                over.probe_tcp.clone()
            },
            probe_timeout: over.probe_timeout.or(self.probe_timeout),
            probe_requests: over.probe_requests.or(self.probe_requests),
            probe_http_expect: over.probe_http_expect.or(self.probe_http_expect),
            runtime: over.runtime.clone().or_else(|| self.runtime.clone()),
            run_memory: over.run_memory.or(self.run_memory),
            run_cpus: over.run_cpus.or(self.run_cpus),
        }
    }

    fn squash_mode(&self) -> SquashMode {
        self.squash.unwrap_or(SquashMode::All)
    }

    fn profile_spec(&self) -> &str {
        self.profile.as_deref().unwrap_or("auto")
    }

    /// Nothing about the layers is to change: a faithful copy.
    pub fn is_plain_copy(&self) -> bool {
        self.squash == Some(SquashMode::None)
            && self.profile_spec() == "none"
            && self.remove.is_empty()
            && self.compression.is_none()
            && self.level.is_none()
            && self.format.is_none()
            && self.keep_base.is_none()
    }

    pub fn platforms(&self) -> Result<Vec<Platform>, SettingsError> {
        self.platforms
            .iter()
            .map(|p| Platform::parse(p).map_err(SettingsError))
            .collect()
    }

    /// Checks everything that needs no network: profiles parse, globs
    /// compile, values are in range. Returns the resolved profile set.
    pub fn check(&self) -> Result<ProfileSet, SettingsError> {
        self.platforms()?;
        if let (Some(l), Some(c)) = (self.level, self.compression) {
            let ok = match c {
                Compression::Gzip => (0..=9).contains(&l),
                Compression::Zstd => (1..=22).contains(&l),
                Compression::None => true,
            };
            if !ok {
                return Err(SettingsError(format!(
                    "level {l} is out of range for {}",
                    c.name()
                )));
            }
        }
        if self.keep_base.is_some() && self.squash_mode() == SquashMode::None {
            return Err(SettingsError(
                "keep-base keeps layers below one squashed layer: it needs squash all".into(),
            ));
        }
        ProfileSet::resolve(
            self.profile_spec(),
            &self.keep,
            &self.remove,
            self.safety_keeps.unwrap_or(true),
        )
        .map_err(|e| SettingsError(format!("{e:#}")))
    }

    /// The rewrite to do, or `None` for a faithful copy. Opens nothing: a
    /// `keep-base` image is opened by the copy stage.
    pub fn rewrite(&self, dry_run: bool) -> Result<Option<RewriteOptions>, SettingsError> {
        let profiles = self.check()?;
        if self.is_plain_copy() && !dry_run {
            return Ok(None);
        }
        let keep_base = self
            .keep_base
            .as_ref()
            .map_or(KeepBase::None, |kb| kb.base().clone());
        let hardlink_dedup = self.hardlink_dedup.unwrap_or(true);
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Some(RewriteOptions {
            squash: self.squash_mode(),
            keep_base,
            compression: self.compression,
            level: self.level,
            format: self.format,
            hardlink_dedup,
            threads,
            settings: self.describe(&profiles),
            profiles,
            dry_run,
            max_layer_bytes: self.max_layer_gib.unwrap_or(64).saturating_mul(1 << 30),
            max_files: self
                .max_files
                .unwrap_or(crate::layer::limits::DEFAULT_MAX_FILES),
            details: None,
            list_removed: false,
        }))
    }

    /// What is recorded in the output (and hashed to recognise "slimmed the
    /// same way"): every setting that changes the bytes written. Values are
    /// named as the flags and job files name them, and `keep-base` as it
    /// was written, so the text (and its digest) is what it always was.
    fn describe(&self, profiles: &ProfileSet) -> String {
        let compression = self
            .compression
            .map_or("source".to_string(), |c| name_of(&c));
        let level = match (self.level, self.compression) {
            (Some(l), _) => l.to_string(),
            (None, Some(c)) => Codec::default_level(c).to_string(),
            (None, None) => "default".to_string(),
        };
        let mut text = format!(
            "squash={} keep-base={} profile={} compression={compression} level={level} format={} hardlink-dedup={}",
            name_of(&self.squash_mode()),
            self.keep_base
                .as_ref()
                .map_or("0".to_string(), ToString::to_string),
            profiles.fingerprint(),
            self.format.map_or("source".to_string(), |f| name_of(&f)),
            self.hardlink_dedup.unwrap_or(true),
        );
        // The platforms kept change the index written. Only named when set,
        // so outputs made before this was recorded keep their description.
        if let Ok(ps) = self.platforms()
            && !ps.is_empty()
        {
            let mut names: Vec<String> = ps.iter().map(ToString::to_string).collect();
            names.sort();
            names.dedup();
            text.push_str(&format!(" platforms={}", names.join(",")));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_override_defaults() {
        let defaults = Settings {
            profile: Some("auto".into()),
            compression: Some(Compression::Zstd),
            platforms: vec!["linux/amd64".into()],
            ..Settings::default()
        };
        let entry = Settings {
            compression: Some(Compression::Gzip),
            ..Settings::default()
        };
        let m = defaults.merged(&entry);
        assert_eq!(m.compression, Some(Compression::Gzip));
        assert_eq!(m.profile.as_deref(), Some("auto"));
        assert_eq!(m.platforms, vec!["linux/amd64".to_string()]);
    }

    fn from_toml(text: &str) -> Result<Settings, String> {
        toml::from_str(text).map_err(|e: toml::de::Error| e.message().to_string())
    }

    #[test]
    fn bad_values_are_named() {
        for (text, message) in [
            (
                "compression = \"lz4\"",
                "compression \"lz4\": use gzip, zstd or none",
            ),
            ("squash = \"some\"", "squash \"some\": use all or none"),
            ("format = \"v1\"", "format \"v1\": use oci or docker"),
            (
                "keep-base = \"a::b\"",
                "keep-base a::b: malformed image reference",
            ),
        ] {
            let e = from_toml(text).unwrap_err();
            assert!(e.starts_with(message), "{text}: {e}");
        }
        let s = Settings {
            squash: Some(SquashMode::None),
            keep_base: Some("2".parse().unwrap()),
            ..Settings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("keep-base"));
        let s: Result<Settings, _> = toml::from_str("profile = \"auto\"\nsquosh = \"all\"\n");
        assert!(s.unwrap_err().to_string().contains("squosh"));
    }

    #[test]
    fn run_limits_and_probe_options_parse_as_the_flags_do() {
        assert_eq!("512m".parse::<MemoryLimit>().unwrap().0, 512 << 20);
        assert_eq!("1G".parse::<MemoryLimit>().unwrap().0, 1 << 30);
        assert_eq!("1.5g".parse::<MemoryLimit>().unwrap().0, 3 << 29);
        assert!("64MiB".parse::<MemoryLimit>().is_err());
        assert!("1k".parse::<MemoryLimit>().is_err());
        assert!("lots".parse::<MemoryLimit>().is_err());
        assert_eq!("0.5".parse::<CpuLimit>().unwrap().cpus(), 0.5);
        assert!("0".parse::<CpuLimit>().is_err());
        let s = from_toml(
            "probe-timeout = \"90s\"\nprobe-requests = 5\nprobe-http-expect = \"same\"\nrun-memory = \"256m\"\nrun-cpus = \"1.5\"\nruntime = \"/usr/sbin/runc\"",
        )
        .unwrap();
        assert_eq!(
            s.probe_timeout,
            Some(ProbeTimeout(std::time::Duration::from_secs(90)))
        );
        assert_eq!(s.probe_requests, Some(5));
        assert_eq!(s.probe_http_expect, Some(HttpExpect::Same));
        assert_eq!(s.run_memory, Some(MemoryLimit(256 << 20)));
        assert_eq!(s.run_cpus.map(CpuLimit::cpus), Some(1.5));
        assert_eq!(
            s.runtime.as_deref(),
            Some(std::path::Path::new("/usr/sbin/runc"))
        );
        for (text, message) in [
            (
                "probe-timeout = \"0s\"",
                "probe-timeout \"0s\": a probe needs a timeout above 0",
            ),
            (
                "probe-http-expect = \"equal\"",
                "probe-http-expect \"equal\": use ok or same",
            ),
            (
                "run-memory = \"1k\"",
                "run-memory: \"1k\": a memory limit must be at least 4m",
            ),
            (
                "run-cpus = \"-1\"",
                "run-cpus: \"-1\": CPUs must be between 0.01 and 1024",
            ),
        ] {
            let e = from_toml(text).unwrap_err();
            assert!(e.starts_with(message), "{text}: {e}");
        }
    }

    #[test]
    fn keep_base_is_a_count_or_a_reference_as_written() {
        let s = from_toml("keep-base = \"01\"").unwrap();
        let kb = s.keep_base.as_ref().unwrap();
        assert_eq!(kb.base(), &KeepBase::Count(1));
        // Recorded as written: the settings digest of earlier outputs holds.
        let p = s.check().unwrap();
        assert!(
            s.describe(&p).contains(" keep-base=01 "),
            "{}",
            s.describe(&p)
        );
        let s = from_toml("keep-base = \"debian:bookworm\"").unwrap();
        let kb = s.keep_base.as_ref().unwrap();
        assert!(matches!(kb.base(), KeepBase::Image(ImageRef::Registry(_))));
        assert!(s.describe(&p).contains(" keep-base=debian:bookworm "));
    }

    /// Pinned: the description is hashed into output annotations, so a
    /// change here changes the digest of every slimmed image.
    #[test]
    fn the_description_text_is_pinned() {
        let s = from_toml(
            "squash = \"all\"\nkeep-base = \"1\"\ncompression = \"zstd\"\nformat = \"oci\"\nprofile = \"none\"",
        )
        .unwrap();
        let p = s.check().unwrap();
        let text = s.describe(&p);
        let fingerprint = p.fingerprint();
        assert_eq!(
            text,
            format!(
                "squash=all keep-base=1 profile={fingerprint} compression=zstd level=3 format=oci hardlink-dedup=true"
            )
        );
        let s = from_toml(
            "squash = \"none\"\ncompression = \"none\"\nformat = \"docker\"\nprofile = \"none\"",
        )
        .unwrap();
        assert_eq!(
            s.describe(&p),
            format!(
                "squash=none keep-base=0 profile={fingerprint} compression=none level=0 format=docker hardlink-dedup=true"
            )
        );
        let s = Settings::default();
        assert_eq!(
            s.describe(&p),
            format!(
                "squash=all keep-base=0 profile={fingerprint} compression=source level=default format=source hardlink-dedup=true"
            )
        );
    }

    #[test]
    fn the_description_changes_with_what_changes_the_bytes() {
        let base = Settings::default();
        let p = base.check().unwrap();
        let zstd = Settings {
            compression: Some(Compression::Zstd),
            ..Settings::default()
        };
        assert_ne!(base.describe(&p), zstd.describe(&p));
        assert_eq!(base.describe(&p), Settings::default().describe(&p));
        let amd64 = Settings {
            platforms: vec!["linux/amd64".into()],
            ..Settings::default()
        };
        assert_ne!(base.describe(&p), amd64.describe(&p));
        assert!(!base.describe(&p).contains("platforms"));
    }
}
