//! Loading profiles: the built-ins embedded from `profiles/*.toml`, a
//! user's file, parsed (`deny_unknown_fields`, errors with line and
//! column), globs checked and normalised once, and `extends` followed.

use std::path::Path;

use anyhow::{Context, Result};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use super::schema;

/// The built-in profiles, embedded at build time.
pub const BUILTIN: &[(&str, &str)] = &[
    ("alpine", include_str!("../../profiles/alpine.toml")),
    ("base", include_str!("../../profiles/base.toml")),
    ("debian", include_str!("../../profiles/debian.toml")),
    ("go", include_str!("../../profiles/go.toml")),
    ("java", include_str!("../../profiles/java.toml")),
    ("node", include_str!("../../profiles/node.toml")),
    ("python", include_str!("../../profiles/python.toml")),
    (
        "python-bytecode",
        include_str!("../../profiles/python-bytecode.toml"),
    ),
    ("ruby", include_str!("../../profiles/ruby.toml")),
    ("ubuntu", include_str!("../../profiles/ubuntu.toml")),
];

/// One parsed profile.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub description: String,
    pub extends: Vec<String>,
    pub detect_always: bool,
    pub detect_os: Vec<String>,
    pub detect_paths: Vec<String>,
    pub prune_dev_dependencies: bool,
    pub rules: Vec<Rule>,
    /// Where it came from (`built-in` or a file path), for messages.
    pub origin: String,
    /// The TOML text, for `slim profiles show` and the settings digest.
    pub text: String,
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub category: String,
    pub dirs: bool,
    pub remove: Vec<String>,
    pub keep: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("profile {origin}: {message}")]
    Parse { origin: String, message: String },
    #[error("profile {origin}: rule {rule} ({category}): bad glob {glob:?}: {reason}")]
    Glob {
        origin: String,
        rule: usize,
        category: String,
        glob: String,
        reason: String,
    },
    #[error("unknown profile {name:?} (built-in: {known}; or a path to a .toml file)")]
    Unknown { name: String, known: String },
    #[error("profile {name} extends itself through {chain}")]
    Cycle { name: String, chain: String },
}

/// `line L, column C: MESSAGE`: toml's own rendering quotes the line with a
/// caret under it, which does not fit on one line.
fn toml_error_line(text: &str, e: &toml::de::Error) -> String {
    let message = e.message().trim().replace('\n', " ");
    match e.span() {
        Some(span) => {
            let before = &text[..span.start.min(text.len())];
            let line = before.matches('\n').count() + 1;
            let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

impl Profile {
    pub fn parse(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let file: schema::ProfileFile = toml::from_str(text).map_err(|e| ProfileError::Parse {
            origin: origin.to_string(),
            message: toml_error_line(text, &e),
        })?;
        let rules: Vec<Rule> = file
            .rules
            .into_iter()
            .map(|r| Rule {
                category: r.category,
                dirs: r.dirs,
                remove: r.remove.iter().map(|g| normalize_glob(g)).collect(),
                keep: r.keep.iter().map(|g| normalize_glob(g)).collect(),
            })
            .collect();
        for (i, r) in rules.iter().enumerate() {
            for g in r.remove.iter().chain(&r.keep) {
                glob(g).map_err(|reason| ProfileError::Glob {
                    origin: origin.to_string(),
                    rule: i + 1,
                    category: r.category.clone(),
                    glob: g.clone(),
                    reason,
                })?;
            }
        }
        for g in &file.detect.paths {
            glob(&normalize_glob(g)).map_err(|reason| ProfileError::Glob {
                origin: origin.to_string(),
                rule: 0,
                category: "detect".into(),
                glob: g.clone(),
                reason,
            })?;
        }
        Ok(Profile {
            name: file.name,
            description: file.description,
            extends: file.extends,
            detect_always: file.detect.always,
            detect_os: file.detect.os_release_ids,
            detect_paths: file
                .detect
                .paths
                .iter()
                .map(|g| normalize_glob(g))
                .collect(),
            prune_dev_dependencies: file.prune_dev_dependencies,
            rules,
            origin: origin.to_string(),
            text: text.to_string(),
        })
    }
}

pub(super) fn normalize_glob(g: &str) -> String {
    g.trim_start_matches('/').to_string()
}

/// `*` within a component, `**` across; paths are matched as given.
pub(super) fn glob(g: &str) -> Result<Glob, String> {
    GlobBuilder::new(g)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

pub(super) fn glob_set<'a>(globs: impl IntoIterator<Item = &'a String>) -> GlobSet {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(glob(g).expect("globs are checked when profiles are parsed"));
    }
    b.build().expect("checked globs build")
}

/// All built-in profiles, parsed.
pub fn builtins() -> Vec<Profile> {
    BUILTIN
        .iter()
        .map(|(name, text)| {
            Profile::parse(text, &format!("{name} (built-in)")).expect("built-in profiles parse")
        })
        .collect()
}

/// A built-in profile by name, or a profile file by path.
pub fn load(spec: &str) -> Result<Profile> {
    if let Some((_, text)) = BUILTIN.iter().find(|(n, _)| *n == spec) {
        return Ok(Profile::parse(text, &format!("{spec} (built-in)"))?);
    }
    if spec.contains('/') || spec.ends_with(".toml") {
        let path = Path::new(spec);
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading profile {spec}"))?;
        return Ok(Profile::parse(&text, spec)?);
    }
    Err(ProfileError::Unknown {
        name: spec.to_string(),
        known: BUILTIN
            .iter()
            .map(|(n, _)| *n)
            .collect::<Vec<_>>()
            .join(", "),
    }
    .into())
}

pub(super) fn add_with_extends(
    p: Profile,
    out: &mut Vec<Profile>,
    chain: &mut Vec<String>,
) -> Result<()> {
    if out.iter().any(|o| o.name == p.name) {
        return Ok(());
    }
    if chain.contains(&p.name) {
        return Err(ProfileError::Cycle {
            name: p.name.clone(),
            chain: chain.join(" -> "),
        }
        .into());
    }
    chain.push(p.name.clone());
    for parent in &p.extends {
        add_with_extends(
            load(parent).with_context(|| format!("profile {} extends {parent}", p.name))?,
            out,
            chain,
        )?;
    }
    chain.pop();
    out.push(p);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::ProfileSet;

    #[test]
    fn every_builtin_profile_parses_and_is_listed_in_order() {
        let names: Vec<&str> = BUILTIN.iter().map(|(n, _)| *n).collect();
        let mut sorted = names.clone();
        sorted.sort();
        assert_eq!(names, sorted, "keep BUILTIN sorted");
        for p in builtins() {
            assert!(!p.description.is_empty(), "{} has a description", p.name);
            assert!(
                BUILTIN.iter().any(|(n, _)| *n == p.name),
                "{}: file name and name agree",
                p.name
            );
            for parent in &p.extends {
                assert!(load(parent).is_ok(), "{} extends unknown {parent}", p.name);
            }
        }
    }

    #[test]
    fn unknown_keys_and_bad_globs_are_named() {
        let e = Profile::parse(
            "name = \"x\"\ndescription = \"d\"\nremoev = []\n",
            "my.toml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("my.toml") && msg.contains("remoev"), "{msg}");
        let e = Profile::parse(
            "name = \"x\"\ndescription = \"d\"\n[[rule]]\ncategory = \"docs\"\nremove = [\"usr/[share\"]\n",
            "my.toml",
        )
        .unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("my.toml") && msg.contains("usr/[share") && msg.contains("rule 1"),
            "{msg}"
        );
        let e = Profile::parse("name = \"x\"\ndescription = \"d\"\n[[rule]]\ncategory = \"c\"\nremove = [\"a\"]\nkeeps = []\n", "f.toml").unwrap_err();
        assert!(e.to_string().contains("keeps"), "{e}");
    }

    #[test]
    fn composition_pulls_in_what_profiles_extend() {
        let set = ProfileSet::resolve("ubuntu,python", &[], &[], true).unwrap();
        let names: Vec<&str> = set.profiles.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["base", "debian", "ubuntu", "python"]);
        assert!(ProfileSet::resolve("nosuch", &[], &[], true).is_err());
        assert!(
            ProfileSet::resolve("none", &[], &[], true)
                .unwrap()
                .is_none()
        );
        assert!(ProfileSet::resolve("debian,auto", &[], &[], true).is_err());
        assert!(ProfileSet::resolve("auto,none", &[], &[], true).is_err());
        let also = ProfileSet::resolve("auto,debian", &[], &[], true).unwrap();
        assert!(also.auto);
        let names: Vec<&str> = also.also.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, vec!["base", "debian"]);
    }
}
