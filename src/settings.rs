//! Resolved settings: what the command-line flags (or a batch file's
//! `[defaults]` and entries) say about how to slim, merged into one value and
//! checked before any network I/O.

use std::sync::Arc;

use anyhow::{Context, Result};
use serde::Deserialize;

use crate::copy::{Format, KeepBase, RewriteOptions, SquashMode};
use crate::image::Platform;
use crate::image::media::Compression;
use crate::layer::encode::Codec;
use crate::profile::ProfileSet;
use crate::reference::ImageRef;
use crate::registry::RegistryClient;
use crate::transport::open_source;

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
    pub squash: Option<String>,
    /// A layer count or a base image reference.
    pub keep_base: Option<String>,
    /// Profile names or files, comma-separated; `auto` or `none`.
    pub profile: Option<String>,
    #[serde(default)]
    pub keep: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
    pub safety_keeps: Option<bool>,
    /// `gzip`, `zstd` or `none`.
    pub compression: Option<String>,
    pub level: Option<i32>,
    /// `oci` or `docker`.
    pub format: Option<String>,
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
}

impl Settings {
    /// `self` with what `over` sets taken from `over`.
    pub fn merged(&self, over: &Settings) -> Settings {
        let pick =
            |a: &Vec<String>, b: &Vec<String>| if b.is_empty() { a.clone() } else { b.clone() };
        Settings {
            squash: over.squash.clone().or_else(|| self.squash.clone()),
            keep_base: over.keep_base.clone().or_else(|| self.keep_base.clone()),
            profile: over.profile.clone().or_else(|| self.profile.clone()),
            keep: pick(&self.keep, &over.keep),
            remove: pick(&self.remove, &over.remove),
            safety_keeps: over.safety_keeps.or(self.safety_keeps),
            compression: over
                .compression
                .clone()
                .or_else(|| self.compression.clone()),
            level: over.level.or(self.level),
            format: over.format.clone().or_else(|| self.format.clone()),
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
        }
    }

    fn squash_mode(&self) -> Result<SquashMode, SettingsError> {
        match self.squash.as_deref().unwrap_or("all") {
            "all" => Ok(SquashMode::All),
            "none" => Ok(SquashMode::None),
            other => Err(SettingsError(format!("squash {other:?}: use all or none"))),
        }
    }

    fn profile_spec(&self) -> &str {
        self.profile.as_deref().unwrap_or("auto")
    }

    /// Nothing about the layers is to change: a faithful copy.
    pub fn is_plain_copy(&self) -> bool {
        self.squash.as_deref() == Some("none")
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

    fn compression(&self) -> Result<Option<Compression>, SettingsError> {
        Ok(match self.compression.as_deref() {
            None => None,
            Some("gzip") => Some(Compression::Gzip),
            Some("zstd") => Some(Compression::Zstd),
            Some("none") => Some(Compression::None),
            Some(other) => {
                return Err(SettingsError(format!(
                    "compression {other:?}: use gzip, zstd or none"
                )));
            }
        })
    }

    fn format(&self) -> Result<Option<Format>, SettingsError> {
        Ok(match self.format.as_deref() {
            None => None,
            Some("oci") => Some(Format::Oci),
            Some("docker") => Some(Format::Docker),
            Some(other) => {
                return Err(SettingsError(format!(
                    "format {other:?}: use oci or docker"
                )));
            }
        })
    }

    /// Checks everything that needs no network: profiles parse, globs
    /// compile, values are in range. Returns the resolved profile set.
    pub fn check(&self) -> Result<ProfileSet, SettingsError> {
        let squash = self.squash_mode()?;
        self.platforms()?;
        self.format()?;
        let compression = self.compression()?;
        if let (Some(l), Some(c)) = (self.level, compression) {
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
        if self.keep_base.is_some() && squash == SquashMode::None {
            return Err(SettingsError(
                "keep-base keeps layers below one squashed layer: it needs squash all".into(),
            ));
        }
        if let Some(kb) = &self.keep_base
            && !kb.chars().all(|c| c.is_ascii_digit())
        {
            kb.parse::<ImageRef>()
                .map_err(|e| SettingsError(format!("keep-base {kb}: {e}")))?;
        }
        ProfileSet::resolve(
            self.profile_spec(),
            &self.keep,
            &self.remove,
            self.safety_keeps.unwrap_or(true),
        )
        .map_err(|e| SettingsError(format!("{e:#}")))
    }

    /// The rewrite to do, or `None` for a faithful copy.
    pub fn rewrite(
        &self,
        client: &Arc<RegistryClient>,
        dry_run: bool,
    ) -> Result<Option<RewriteOptions>> {
        let profiles = self.check()?;
        if self.is_plain_copy() && !dry_run {
            return Ok(None);
        }
        let keep_base = match self.keep_base.as_deref() {
            None => KeepBase::None,
            Some(s) if s.chars().all(|c| c.is_ascii_digit()) => KeepBase::Count(
                s.parse()
                    .map_err(|_| SettingsError(format!("keep-base {s}: not a number")))?,
            ),
            Some(s) => {
                let r: ImageRef = s.parse().with_context(|| format!("keep-base {s}"))?;
                KeepBase::Image(open_source(&r, client, Default::default())?)
            }
        };
        let squash = self.squash_mode()?;
        let compression = self.compression()?;
        let format = self.format()?;
        let hardlink_dedup = self.hardlink_dedup.unwrap_or(true);
        let threads = self
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
        Ok(Some(RewriteOptions {
            squash,
            keep_base,
            compression,
            level: self.level,
            format,
            hardlink_dedup,
            threads,
            settings: self.describe(&profiles),
            profiles,
            dry_run,
            max_layer_bytes: self.max_layer_gib.unwrap_or(64).saturating_mul(1 << 30),
            max_files: self
                .max_files
                .unwrap_or(crate::layer::limits::DEFAULT_MAX_FILES),
        }))
    }

    /// What is recorded in the output (and hashed to recognise "slimmed the
    /// same way"): every setting that changes the bytes written.
    fn describe(&self, profiles: &ProfileSet) -> String {
        let compression = self.compression.as_deref().unwrap_or("source");
        let level = match (self.level, self.compression().ok().flatten()) {
            (Some(l), _) => l.to_string(),
            (None, Some(c)) => Codec::default_level(c).to_string(),
            (None, None) => "default".to_string(),
        };
        let mut text = format!(
            "squash={} keep-base={} profile={} compression={compression} level={level} format={} hardlink-dedup={}",
            self.squash.as_deref().unwrap_or("all"),
            self.keep_base.as_deref().unwrap_or("0"),
            profiles.fingerprint(),
            self.format.as_deref().unwrap_or("source"),
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
            compression: Some("zstd".into()),
            platforms: vec!["linux/amd64".into()],
            ..Settings::default()
        };
        let entry = Settings {
            compression: Some("gzip".into()),
            ..Settings::default()
        };
        let m = defaults.merged(&entry);
        assert_eq!(m.compression.as_deref(), Some("gzip"));
        assert_eq!(m.profile.as_deref(), Some("auto"));
        assert_eq!(m.platforms, vec!["linux/amd64".to_string()]);
    }

    #[test]
    fn bad_values_are_named() {
        let s = Settings {
            compression: Some("lz4".into()),
            ..Settings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("lz4"));
        let s = Settings {
            squash: Some("none".into()),
            keep_base: Some("2".into()),
            ..Settings::default()
        };
        assert!(s.check().unwrap_err().to_string().contains("keep-base"));
        let s: Result<Settings, _> = toml::from_str("profile = \"auto\"\nsquosh = \"all\"\n");
        assert!(s.unwrap_err().to_string().contains("squosh"));
    }

    #[test]
    fn the_description_changes_with_what_changes_the_bytes() {
        let base = Settings::default();
        let p = base.check().unwrap();
        let zstd = Settings {
            compression: Some("zstd".into()),
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
