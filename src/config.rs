//! The project config file: `slim.toml` (or `.slim.toml`) checked into a
//! repository, so that its CI and its developers slim the same way.
//!
//! ```toml
//! # slim.toml: defaults for `slim SOURCE -o DEST`; flags override them
//! profile = "auto,python"
//! keep = ["/app/templates/**"]      # e.g. a keep-list learned for this app
//! compression = "zstd"
//! verify = true
//! probe-http = ["8000/healthz"]
//! fail-if-savings-below = 20        # the command's own keys, named as its flags
//! ```
//!
//! The settings keys are those of a batch job file's `[defaults]` and parse
//! into the same [`Settings`] (same enums, same messages). The command's own
//! keys (thresholds, jobs, probe limits, registry options) are named as
//! their flags; the caller gives their names and the type they parse into.
//!
//! The file is found from the current directory upward, the first
//! directory holding one wins. Unknown keys and bad values are errors that
//! name the file, the key's line and the key: the document is parsed with
//! spans ([`toml::de::DeTable`]) and each part deserialized from its spanned
//! table, so serde's `deny_unknown_fields` error carries the line.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml::Spanned;
use toml::de::DeTable;

use crate::settings::Settings;

/// The names looked for in each directory, in this order.
pub const FILE_NAMES: [&str; 2] = ["slim.toml", ".slim.toml"];

/// A mistake in the config file (the user fixes the file: exit 2).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}, line {line}: {message}")]
    Key {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error(
        "{dir} holds both slim.toml and .slim.toml: keep one (or name the one to use with --config)"
    )]
    Ambiguous { dir: PathBuf },
}

/// A parsed config file: the settings part and the command's own part.
#[derive(Debug)]
pub struct ProjectConfig<R> {
    /// The file read (absolute when it was found by the upward search).
    pub path: PathBuf,
    pub settings: Settings,
    pub own: R,
    /// The file's text, for [`ProjectConfig::line`].
    pub text: String,
}

impl<R> ProjectConfig<R> {
    /// The directory the file's relative paths are relative to.
    pub fn dir(&self) -> &Path {
        self.path.parent().unwrap_or(Path::new("."))
    }

    /// The line of a byte offset (a [`toml::Spanned`] value's start).
    pub fn line(&self, offset: usize) -> usize {
        self.text
            .get(..offset)
            .map_or(0, |before| before.matches('\n').count())
            + 1
    }

    /// `path` as written if absolute, else relative to the file's directory.
    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_path_buf()
        } else {
            self.dir().join(path)
        }
    }
}

/// The config file that applies in `start`: the first `slim.toml` or
/// `.slim.toml` in `start` or one of its ancestors.
pub fn discover(start: &Path) -> Result<Option<PathBuf>, ConfigError> {
    for dir in start.ancestors() {
        let found: Vec<PathBuf> = FILE_NAMES
            .iter()
            .map(|n| dir.join(n))
            .filter(|p| p.is_file())
            .collect();
        match found.len() {
            0 => continue,
            1 => return Ok(found.into_iter().next()),
            _ => {
                return Err(ConfigError::Ambiguous {
                    dir: dir.to_path_buf(),
                });
            }
        }
    }
    Ok(None)
}

/// Keys written as a flag is spelled where the file spells them otherwise
/// (as a batch job file does): named in the error, with the right key.
const FLAG_SPELLINGS: &[(&str, &str)] = &[
    ("platform", "platforms = [\"os/arch\", ...]"),
    ("no-safety-keeps", "safety-keeps = false"),
    ("no-hardlink-dedup", "hardlink-dedup = false"),
    ("max-layer-size", "max-layer-gib = N"),
];

/// Reads and checks a config file. `own_keys` are the keys that belong to
/// the command (they deserialize as `R`, which should deny unknown fields);
/// every other key must be a [`Settings`] key.
pub fn load<R: DeserializeOwned>(
    path: &Path,
    own_keys: &[&str],
) -> Result<ProjectConfig<R>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    parse(path, &text, own_keys)
}

pub fn parse<R: DeserializeOwned>(
    path: &Path,
    text: &str,
    own_keys: &[&str],
) -> Result<ProjectConfig<R>, ConfigError> {
    let root = DeTable::parse(text).map_err(|e| ConfigError::Syntax {
        path: path.to_path_buf(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let line_of = |offset: usize| {
        text.get(..offset)
            .map_or(0, |before| before.matches('\n').count())
            + 1
    };
    let key_error = |offset: usize, message: String| ConfigError::Key {
        path: path.to_path_buf(),
        line: line_of(offset),
        message,
    };
    let span = root.span();
    let mut settings = DeTable::default();
    let mut own = DeTable::default();
    for (key, value) in root.into_inner() {
        if let Some((_, right)) = FLAG_SPELLINGS.iter().find(|(k, _)| *k == key.get_ref()) {
            return Err(key_error(
                key.span().start,
                format!(
                    "unknown key `{}`: write `{right}` (the keys are those of a batch job file's [defaults])",
                    key.get_ref()
                ),
            ));
        }
        if own_keys.contains(&key.get_ref().as_ref()) {
            own.insert(key, value);
        } else {
            settings.insert(key, value);
        }
    }
    fn from<'a>(span: &std::ops::Range<usize>, table: DeTable<'a>) -> toml::de::Deserializer<'a> {
        toml::de::Deserializer::from(Spanned::new(span.clone(), table))
    }
    let error = |e: toml::de::Error| {
        let mut message = e.message().trim_end().to_string();
        if message.starts_with("unknown field") {
            message = message.replacen("unknown field", "unknown key", 1);
            if !own_keys.is_empty() {
                message.push_str(&format!(", or one of `{}`", own_keys.join("`, `")));
            }
        }
        match e.span() {
            Some(s) => key_error(s.start, message),
            None => ConfigError::Syntax {
                path: path.to_path_buf(),
                message,
            },
        }
    };
    let settings: Settings =
        serde::Deserialize::deserialize(from(&span, settings)).map_err(error)?;
    let own: R = serde::Deserialize::deserialize(from(&span, own)).map_err(error)?;
    Ok(ProjectConfig {
        path: path.to_path_buf(),
        settings,
        own,
        text: text.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, serde::Deserialize)]
    #[serde(deny_unknown_fields, rename_all = "kebab-case")]
    struct Own {
        jobs: Option<usize>,
    }

    fn parse_text(text: &str) -> Result<ProjectConfig<Own>, String> {
        parse(Path::new("slim.toml"), text, &["jobs"]).map_err(|e| e.to_string())
    }

    #[test]
    fn both_parts_parse() {
        let c = parse_text("profile = \"none\"\njobs = 4\ncompression = \"zstd\"\n").unwrap();
        assert_eq!(c.settings.profile.as_deref(), Some("none"));
        assert_eq!(
            c.settings.compression,
            Some(crate::image::media::Compression::Zstd)
        );
        assert_eq!(c.own.jobs, Some(4));
    }

    #[test]
    fn an_unknown_key_is_named_with_its_line() {
        let e = parse_text("profile = \"none\"\n\n# a comment\nsquosh = \"all\"\n").unwrap_err();
        assert!(
            e.starts_with("slim.toml, line 4: unknown key `squosh`"),
            "{e}"
        );
        assert!(e.contains("`jobs`"), "{e}");
        let e = parse_text("jobs = 2\nplatform = \"linux/amd64\"\n").unwrap_err();
        assert!(
            e.starts_with("slim.toml, line 2: unknown key `platform`: write `platforms"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_is_named_with_its_line() {
        let e = parse_text("\ncompression = \"lz4\"\n").unwrap_err();
        assert!(
            e.starts_with("slim.toml, line 2: compression \"lz4\": use gzip, zstd or none"),
            "{e}"
        );
        let e = parse_text("jobs = \"many\"\n").unwrap_err();
        assert!(e.starts_with("slim.toml, line 1: invalid type"), "{e}");
        let e = parse_text("jobs = [").unwrap_err();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn the_nearest_file_upward_wins() {
        let root = tempfile::tempdir().unwrap();
        let sub = root.path().join("a/b");
        std::fs::create_dir_all(&sub).unwrap();
        assert_eq!(discover(&sub).unwrap(), None);
        std::fs::write(root.path().join(".slim.toml"), "").unwrap();
        assert_eq!(
            discover(&sub).unwrap(),
            Some(root.path().join(".slim.toml"))
        );
        std::fs::write(root.path().join("a/slim.toml"), "").unwrap();
        assert_eq!(
            discover(&sub).unwrap(),
            Some(root.path().join("a/slim.toml"))
        );
        std::fs::write(root.path().join("a/.slim.toml"), "").unwrap();
        assert!(matches!(discover(&sub), Err(ConfigError::Ambiguous { .. })));
    }
}
