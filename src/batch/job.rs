//! The job file (`slim batch FILE.toml`): what to slim and how, parsed and
//! checked before any network I/O.
//!
//! ```toml
//! [defaults]                  # any per-image setting (settings.rs)
//! profile = "auto"
//!
//! [[images]]                  # an explicit pair; per-image settings inline
//! source = "registry.example.com/team/api:1.4"
//! destination = "registry.example.com/team/api:1.4-slim"
//! compression = "zstd"
//!
//! [[repositories]]            # a registry walk
//! registry = "registry.example.com"
//! repository = "^team/.*$"    # regex on /v2/_catalog names
//! tags = "^v?[0-9.]+$"        # regex on tags/list (default: every tag)
//! destination = "mirror.example.com/{repository}:{tag}-slim"
//! ```
//!
//! Per-image settings sit next to an entry's own keys, the same keys as in
//! `[defaults]`. serde's `flatten` cannot be combined with
//! `deny_unknown_fields`, so an entry is read as a table in two steps: its
//! own keys are taken out, and the rest must deserialize as
//! [`Settings`] (which denies unknown keys). Either way an unknown key is an
//! error that names it, the entry and its line.

use std::path::{Path, PathBuf};

use regex::Regex;
use serde::Deserialize;

use crate::reference::{ImageRef, RegistryRef};
use crate::settings::Settings;

/// A mistake in the job file: the user fixes the file (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum JobFileError {
    #[error("cannot read the job file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {entry}: {message}")]
    Entry {
        path: PathBuf,
        entry: String,
        message: String,
    },
    #[error("{path} lists no images: add an [[images]] or a [[repositories]] entry")]
    Empty { path: PathBuf },
}

/// A parsed, checked job file.
#[derive(Debug)]
pub struct JobFile {
    /// Where it was read from (for messages and the report).
    pub path: PathBuf,
    pub images: Vec<ImageEntry>,
    pub repositories: Vec<RepositoryEntry>,
}

/// `[[images]]`: one source, one destination.
#[derive(Debug)]
pub struct ImageEntry {
    /// `[[images]] entry N (line L)`, for messages.
    pub name: String,
    pub source: RegistryRef,
    pub destination: RegistryRef,
    /// `[defaults]` with the entry's own settings over them, checked.
    pub settings: Settings,
}

/// `[[repositories]]`: every matching tag of every matching repository.
#[derive(Debug)]
pub struct RepositoryEntry {
    pub name: String,
    /// `host[:port]`, as in image references.
    pub registry: String,
    /// Matched against repository names (not anchored: write `^…$`).
    pub repository: Regex,
    /// Matched against tags (not anchored); `None` = every tag.
    pub tags: Option<Regex>,
    pub destination: Template,
    pub settings: Settings,
}

/// The top level. Entries stay tables here; [`JobFile::parse`] splits them.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawJobFile {
    #[serde(default)]
    defaults: Settings,
    #[serde(default)]
    images: Vec<toml::Spanned<toml::Table>>,
    #[serde(default)]
    repositories: Vec<toml::Spanned<toml::Table>>,
}

impl JobFile {
    /// Reads and checks a job file: syntax, unknown keys, references,
    /// regexes, templates and every entry's merged settings.
    pub fn load(path: &Path) -> Result<JobFile, JobFileError> {
        let text = std::fs::read_to_string(path).map_err(|source| JobFileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        JobFile::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<JobFile, JobFileError> {
        let raw: RawJobFile = toml::from_str(text).map_err(|e| JobFileError::Syntax {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().to_string(),
        })?;
        let line_of = |span: std::ops::Range<usize>| {
            text.get(..span.start)
                .map_or(0, |before| before.matches('\n').count())
                + 1
        };
        let mut images = Vec::new();
        for (i, spanned) in raw.images.into_iter().enumerate() {
            let name = format!(
                "[[images]] entry {} (line {})",
                i + 1,
                line_of(spanned.span())
            );
            let fail = entry_error(path, &name);
            let mut table = spanned.into_inner();
            let source = take_string(&mut table, "source").map_err(fail)?;
            let destination = take_string(&mut table, "destination").map_err(fail)?;
            let source = registry_ref("source", &source, false).map_err(fail)?;
            let destination = registry_ref("destination", &destination, true).map_err(fail)?;
            let settings = entry_settings(&raw.defaults, table).map_err(fail)?;
            images.push(ImageEntry {
                name,
                source,
                destination,
                settings,
            });
        }
        let mut repositories = Vec::new();
        for (i, spanned) in raw.repositories.into_iter().enumerate() {
            let name = format!(
                "[[repositories]] entry {} (line {})",
                i + 1,
                line_of(spanned.span())
            );
            let fail = entry_error(path, &name);
            let mut table = spanned.into_inner();
            let registry = take_string(&mut table, "registry").map_err(fail)?;
            let repository = take_string(&mut table, "repository").map_err(fail)?;
            let tags = take_optional_string(&mut table, "tags").map_err(fail)?;
            let destination = take_string(&mut table, "destination").map_err(fail)?;
            let registry = registry.trim_end_matches('/').to_string();
            // A registry name parses as the host part of a reference.
            match RegistryRef::parse(&format!("{registry}/x:y")) {
                Ok(r) if r.registry == registry => {}
                _ => {
                    return Err(fail(format!(
                        "registry {registry:?} is not a registry host (expected e.g. registry.example.com or 127.0.0.1:5000)"
                    )));
                }
            }
            let repository = compile("repository", &repository).map_err(fail)?;
            let tags = tags
                .map(|t| compile("tags", &t))
                .transpose()
                .map_err(fail)?;
            let destination = Template::parse(&destination).map_err(fail)?;
            let settings = entry_settings(&raw.defaults, table).map_err(fail)?;
            repositories.push(RepositoryEntry {
                name,
                registry,
                repository,
                tags,
                destination,
                settings,
            });
        }
        if images.is_empty() && repositories.is_empty() {
            return Err(JobFileError::Empty {
                path: path.to_path_buf(),
            });
        }
        Ok(JobFile {
            path: path.to_path_buf(),
            images,
            repositories,
        })
    }
}

/// Makes an error about one entry of the job file.
fn entry_error<'a>(path: &'a Path, entry: &'a str) -> impl Fn(String) -> JobFileError + Copy + 'a {
    move |message| JobFileError::Entry {
        path: path.to_path_buf(),
        entry: entry.to_string(),
        message,
    }
}

fn take_string(table: &mut toml::Table, key: &str) -> Result<String, String> {
    take_optional_string(table, key)?.ok_or_else(|| format!("missing key `{key}`"))
}

fn take_optional_string(table: &mut toml::Table, key: &str) -> Result<Option<String>, String> {
    match table.remove(key) {
        None => Ok(None),
        Some(toml::Value::String(s)) => Ok(Some(s)),
        Some(other) => Err(format!(
            "`{key}` must be a string, not a {}",
            other.type_str()
        )),
    }
}

/// What is left of an entry after its own keys: settings over the defaults.
fn entry_settings(defaults: &Settings, rest: toml::Table) -> Result<Settings, String> {
    let own: Settings = toml::Value::Table(rest)
        .try_into()
        .map_err(|e: toml::de::Error| value_error(&e))?;
    let merged = defaults.merged(&own);
    merged.check().map_err(|e| e.to_string())?;
    crate::sandbox::verify::gate_from_settings(&merged).map_err(|e| e.to_string())?;
    Ok(merged)
}

/// An entry's settings error as one message. toml ends an error about a
/// value with the key (`in `compression``); a value the settings reject
/// names its key already (`compression "lz4": use gzip, zstd or none`), so
/// the key is not said twice. A type error (`invalid type: integer`) keeps it.
fn value_error(e: &toml::de::Error) -> String {
    let text = e.to_string();
    let text = text.trim_end();
    match text.rsplit_once("\nin `") {
        Some((message, key)) if message.starts_with(&format!("{} ", key.trim_end_matches('`'))) => {
            message.to_string()
        }
        _ => text.to_string(),
    }
}

fn registry_ref(key: &str, s: &str, destination: bool) -> Result<RegistryRef, String> {
    let parsed: ImageRef = s.parse().map_err(|e| format!("{key}: {e}"))?;
    let ImageRef::Registry(r) = parsed else {
        return Err(format!(
            "{key} {s:?}: slim batch reads from and writes to registries; slim a local image with `slim SOURCE -o DEST`"
        ));
    };
    if destination && r.digest.is_some() {
        return Err(format!(
            "{key} {s:?} names a digest: a destination needs a tag (the digest is only known once written)"
        ));
    }
    Ok(r)
}

fn compile(key: &str, pattern: &str) -> Result<Regex, String> {
    Regex::new(pattern).map_err(|e| format!("`{key}` is not a valid regex: {e}"))
}

/// A destination template: `{registry}`, `{repository}` and `{tag}` are
/// replaced by the source's.
#[derive(Clone, Debug)]
pub struct Template {
    text: String,
}

const PLACEHOLDERS: [&str; 3] = ["registry", "repository", "tag"];

impl Template {
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut rest = text;
        while let Some(open) = rest.find('{') {
            let after = &rest[open + 1..];
            let Some(close) = after.find('}') else {
                return Err(format!("destination {text:?}: `{{` without `}}`"));
            };
            let name = &after[..close];
            if !PLACEHOLDERS.contains(&name) {
                return Err(format!(
                    "destination {text:?}: unknown placeholder {{{name}}} (use {{registry}}, {{repository}} or {{tag}})"
                ));
            }
            rest = &after[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("destination {text:?}: `}}` without `{{`"));
        }
        let t = Template {
            text: text.to_string(),
        };
        // The shape must make a reference for any source.
        let sample = t.render("registry.example.com", "team/app", "v1");
        registry_ref("destination", &sample, true)
            .map_err(|e| format!("{e} (destination template {text:?})"))?;
        Ok(t)
    }

    pub fn render(&self, registry: &str, repository: &str, tag: &str) -> String {
        self.text
            .replace("{registry}", registry)
            .replace("{repository}", repository)
            .replace("{tag}", tag)
    }

    /// The destination for one source tag.
    pub fn destination(
        &self,
        registry: &str,
        repository: &str,
        tag: &str,
    ) -> Result<RegistryRef, String> {
        registry_ref("destination", &self.render(registry, repository, tag), true)
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::media::Compression;

    fn parse(text: &str) -> Result<JobFile, JobFileError> {
        JobFile::parse(Path::new("jobs.toml"), text)
    }

    const GOOD: &str = r#"
[defaults]
profile = "none"
compression = "zstd"

[[images]]
source = "registry.example.com/team/api:1.4"
destination = "registry.example.com/team/api:1.4-slim"
compression = "gzip"

[[repositories]]
registry = "registry.example.com"
repository = "^team/.*$"
tags = "^v?[0-9.]+$"
destination = "mirror.example.com/{repository}:{tag}-slim"
"#;

    #[test]
    fn a_job_file_with_every_kind_of_entry() {
        let job = parse(GOOD).unwrap();
        assert_eq!(job.images.len(), 1);
        let img = &job.images[0];
        assert_eq!(img.source.repository, "team/api");
        assert_eq!(img.destination.tag.as_deref(), Some("1.4-slim"));
        assert_eq!(img.settings.compression, Some(Compression::Gzip));
        assert_eq!(img.settings.profile.as_deref(), Some("none"));
        assert!(img.name.contains("line 6"), "{}", img.name);
        let r = &job.repositories[0];
        assert!(r.repository.is_match("team/web"));
        assert!(!r.tags.as_ref().unwrap().is_match("latest"));
        assert_eq!(r.settings.compression, Some(Compression::Zstd));
        assert_eq!(
            r.destination
                .destination("registry.example.com", "team/web", "v2")
                .unwrap()
                .to_string(),
            "mirror.example.com/team/web:v2-slim"
        );
    }

    #[test]
    fn unknown_keys_are_named_wherever_they_are() {
        for (text, key) in [
            (
                GOOD.replace("[defaults]", "[defaults]\nprofle = \"x\""),
                "profle",
            ),
            (
                GOOD.replace("compression = \"gzip\"", "compresion = \"gzip\""),
                "compresion",
            ),
            (GOOD.replace("tags = ", "tag = "), "tag"),
            (format!("jobs = 3\n{GOOD}"), "jobs"),
            (GOOD.replace("[defaults]", "[default]"), "default"),
        ] {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(&format!("`{key}`")), "{key}: {e}");
        }
        let e = parse(&GOOD.replace("compression = \"gzip\"", "compresion = \"gzip\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("[[images]] entry 1 (line 6)"), "{e}");
    }

    #[test]
    fn mistakes_name_the_entry_and_what_to_do() {
        let cases = [
            (GOOD.replace("source = ", "src = "), "missing key `source`"),
            (GOOD.replace("^team/.*$", "^team/(.*$"), "not a valid regex"),
            (
                GOOD.replace("{tag}-slim", "{tga}-slim"),
                "unknown placeholder {tga}",
            ),
            (
                GOOD.replace("registry.example.com/team/api:1.4\"", "oci:/tmp/x:1\""),
                "slim a local image",
            ),
            (
                GOOD.replace(
                    "api:1.4-slim\"",
                    "api@sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\"",
                ),
                "needs a tag",
            ),
            (
                GOOD.replace("compression = \"gzip\"", "compression = \"lz4\""),
                "lz4",
            ),
            (
                GOOD.replace("compression = \"gzip\"", "level = \"9\""),
                "level",
            ),
            (
                GOOD.replace("registry = \"registry.example.com\"", "registry = \"a b\""),
                "not a registry host",
            ),
        ];
        for (text, needle) in cases {
            let e = parse(&text).unwrap_err().to_string();
            assert!(e.contains(needle), "{needle}: {e}");
            assert!(e.starts_with("jobs.toml"), "{e}");
        }
        let e = parse("[defaults]\nprofile = \"none\"\n").unwrap_err();
        assert!(matches!(e, JobFileError::Empty { .. }));
    }

    /// A bad value is parsed where it is read: in an entry, the message
    /// names the entry and the key once; in `[defaults]`, its line.
    #[test]
    fn bad_values_name_the_key_once() {
        let e = parse(&GOOD.replace("compression = \"gzip\"", "compression = \"lz4\""))
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "jobs.toml: [[images]] entry 1 (line 6): compression \"lz4\": use gzip, zstd or none"
        );
        let e = parse(&GOOD.replace("compression = \"gzip\"", "compression = 5"))
            .unwrap_err()
            .to_string();
        assert!(e.ends_with("expected a string\nin `compression`"), "{e}");
        let e = parse(&GOOD.replace("compression = \"zstd\"", "squash = \"some\""))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("squash \"some\": use all or none"), "{e}");
    }

    /// The job file shipped in deploy/kubernetes stays valid.
    #[test]
    fn the_kubernetes_example_parses() {
        let yaml = include_str!("../../deploy/kubernetes/configmap.yaml");
        let (_, block) = yaml.split_once("jobs.toml: |\n").unwrap();
        let text: String = block
            .lines()
            .take_while(|l| l.is_empty() || l.starts_with("    "))
            .map(|l| format!("{}\n", l.get(4..).unwrap_or("")))
            .collect();
        let job = parse(&text).unwrap();
        assert_eq!((job.images.len(), job.repositories.len()), (1, 1));
    }

    #[test]
    fn templates() {
        let t = Template::parse("{registry}/slim/{repository}:{tag}").unwrap();
        assert_eq!(t.render("r:5000", "a/b", "1"), "r:5000/slim/a/b:1");
        assert!(Template::parse("x/{repository:{tag}").is_err());
        assert!(Template::parse("x/{repository}}:{tag}").is_err());
        assert!(Template::parse("x/{repository}:{tag} y").is_err());
    }
}
