//! Profiles: declarative strip rules (`profiles/*.toml`, compiled in; or a
//! user's file), composed, resolved once before any network I/O, then
//! compiled per image against its merged tree into a [`PathFilter`] that
//! knows the image's safety keeps.
//!
//! A path goes when a rule's remove glob matches it and no keep glob of any
//! active profile, no `--keep` override and no safety keep does. Directories
//! never go (package managers expect them, even empty): their contents do.

mod detect;
pub mod safety;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};
use serde_json::Value;

use crate::digest::Digest;
use crate::layer::entry::Kind;
use crate::transform::filter::PathFilter;
use crate::transform::tree::TreeView;
pub use detect::detect;

/// The built-in profiles, embedded at build time.
pub const BUILTIN: &[(&str, &str)] = &[
    ("alpine", include_str!("../../profiles/alpine.toml")),
    ("base", include_str!("../../profiles/base.toml")),
    ("debian", include_str!("../../profiles/debian.toml")),
    ("go", include_str!("../../profiles/go.toml")),
    ("java", include_str!("../../profiles/java.toml")),
    ("node", include_str!("../../profiles/node.toml")),
    ("python", include_str!("../../profiles/python.toml")),
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

fn normalize_glob(g: &str) -> String {
    g.trim_start_matches('/').to_string()
}

/// `*` within a component, `**` across; paths are matched as given.
fn glob(g: &str) -> Result<Glob, String> {
    GlobBuilder::new(g)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| e.kind().to_string())
}

fn glob_set<'a>(globs: impl IntoIterator<Item = &'a String>) -> GlobSet {
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

/// What the user asked for, resolved before anything is fetched.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    /// `--profile auto`: candidates, picked per image by their detect rules.
    pub auto: bool,
    /// Explicit profiles (with what they extend), or auto's candidates.
    pub profiles: Vec<Profile>,
    pub keep: Vec<String>,
    pub remove: Vec<String>,
    /// Safety keeps on (the default).
    pub safety: bool,
}

impl ProfileSet {
    /// Parses `--profile a,b,./c.toml` (or `auto`, or `none`) with the
    /// `--keep`/`--remove` overrides.
    pub fn resolve(
        spec: &str,
        keep: &[String],
        remove: &[String],
        safety: bool,
    ) -> Result<ProfileSet> {
        let names: Vec<&str> = spec
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        for g in keep.iter().chain(remove) {
            glob(&normalize_glob(g))
                .map_err(|reason| anyhow::anyhow!("bad glob {g:?} in --keep/--remove: {reason}"))?;
        }
        let keep = keep.iter().map(|g| normalize_glob(g)).collect();
        let remove = remove.iter().map(|g| normalize_glob(g)).collect();
        if names == ["auto"] {
            return Ok(ProfileSet {
                auto: true,
                profiles: builtins(),
                keep,
                remove,
                safety,
            });
        }
        if names.is_empty() || names == ["none"] {
            return Ok(ProfileSet {
                auto: false,
                profiles: Vec::new(),
                keep,
                remove,
                safety,
            });
        }
        let mut out: Vec<Profile> = Vec::new();
        for n in names {
            if n == "none" || n == "auto" {
                bail!("--profile {n} cannot be combined with other profiles");
            }
            add_with_extends(load(n)?, &mut out, &mut Vec::new())?;
        }
        Ok(ProfileSet {
            auto: false,
            profiles: out,
            keep,
            remove,
            safety,
        })
    }

    /// Nothing to strip at all.
    pub fn is_none(&self) -> bool {
        !self.auto && self.profiles.is_empty() && self.remove.is_empty()
    }

    /// Identifies these settings: profile names and a digest of their text.
    pub fn fingerprint(&self) -> String {
        if self.is_none() {
            return "none".to_string();
        }
        let mut text = String::new();
        for p in &self.profiles {
            text.push_str(&p.text);
        }
        for k in &self.keep {
            text.push_str(&format!("keep {k}\n"));
        }
        for r in &self.remove {
            text.push_str(&format!("remove {r}\n"));
        }
        text.push_str(&format!("safety {}\n", self.safety));
        let names = if self.auto {
            "auto".to_string()
        } else {
            self.profiles
                .iter()
                .map(|p| p.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        let d = Digest::sha256_of(text.as_bytes());
        format!("{names}@{}", &d.hex()[..12])
    }

    /// The filter for one image: profiles picked (for auto), rules compiled,
    /// safety keeps computed on the merged tree and the image config.
    pub fn compile(&self, tree: &dyn TreeView, config: &Value) -> Result<CompiledFilter> {
        let chosen: Vec<&Profile> = if self.auto {
            let picked = detect(&self.profiles, tree);
            let mut all: Vec<Profile> = Vec::new();
            for p in picked {
                add_with_extends(p.clone(), &mut all, &mut Vec::new())?;
            }
            let names: HashSet<String> = all.iter().map(|p| p.name.clone()).collect();
            self.profiles
                .iter()
                .filter(|p| names.contains(&p.name))
                .collect()
        } else {
            self.profiles.iter().collect()
        };
        let mut remove_sets = Vec::new();
        let mut dir_sets = Vec::new();
        let mut keeps: Vec<String> = self.keep.clone();
        for p in &chosen {
            for r in &p.rules {
                if !r.remove.is_empty() {
                    remove_sets.push((r.category.clone(), glob_set(&r.remove)));
                    if r.dirs {
                        dir_sets.push((r.category.clone(), glob_set(&r.remove)));
                    }
                }
                keeps.extend(r.keep.iter().cloned());
            }
        }
        if !self.remove.is_empty() {
            remove_sets.push(("user".to_string(), glob_set(&self.remove)));
        }
        let mut rules = Rules {
            remove: remove_sets,
            dirs: dir_sets,
            keep: glob_set(&keeps),
            dev_dependencies: BTreeMap::new(),
        };
        if chosen.iter().any(|p| p.prune_dev_dependencies) {
            rules.dev_dependencies = safety::dev_dependency_dirs(tree);
        }
        let nothing_to_remove = rules.remove.is_empty() && rules.dev_dependencies.is_empty();
        let safe = if self.safety && !nothing_to_remove {
            safety::compute(tree, config, &|p| rules.category(p).is_some())
        } else {
            safety::SafetyKeeps::default()
        };
        let mut f = CompiledFilter {
            chosen: chosen.iter().map(|p| p.name.clone()).collect(),
            rules,
            safe,
            decisions: HashMap::new(),
            kept_by_safety: Vec::new(),
        };
        f.decide_all(tree);
        Ok(f)
    }
}

fn add_with_extends(p: Profile, out: &mut Vec<Profile>, chain: &mut Vec<String>) -> Result<()> {
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

/// The rules of the profiles in effect.
struct Rules {
    remove: Vec<(String, GlobSet)>,
    /// Rules that remove matching directories too.
    dirs: Vec<(String, GlobSet)>,
    keep: GlobSet,
    /// `node_modules` folders of dev-only packages.
    dev_dependencies: BTreeMap<Vec<u8>, String>,
}

impl Rules {
    /// The category of the first rule removing `path`, unless a keep glob
    /// holds it.
    fn category(&self, path: &[u8]) -> Option<&str> {
        let s = String::from_utf8_lossy(path);
        if self.keep.is_match(&*s) {
            return None;
        }
        for (cat, set) in &self.remove {
            if set.is_match(&*s) {
                return Some(cat);
            }
        }
        let dev = crate::layer::entry::ancestors(path)
            .find_map(|a| self.dev_dependencies.get(a))
            .or_else(|| self.dev_dependencies.get(path));
        dev.map(|_| "dev-dependencies")
    }
}

/// A profile set compiled for one image.
pub struct CompiledFilter {
    /// Profiles in effect (for the report).
    pub chosen: Vec<String>,
    rules: Rules,
    safe: safety::SafetyKeeps,
    /// Path -> category, for every removed path of the merged tree.
    decisions: HashMap<Vec<u8>, String>,
    /// Paths a rule would remove that a safety keep saved, with the reason.
    pub kept_by_safety: Vec<(String, String)>,
}

impl CompiledFilter {
    fn decide_all(&mut self, tree: &dyn TreeView) {
        let mut decisions = HashMap::new();
        let mut saved = Vec::new();
        let paths: Vec<&[u8]> = tree.paths().collect();
        for path in &paths {
            if tree.kind(path).is_none_or(Kind::is_dir) {
                continue;
            }
            if let Some(cat) = self.rules.category(path) {
                match self.safe.reason(path) {
                    Some(reason) => {
                        saved.push((crate::layer::entry::display(path), reason.to_string()))
                    }
                    None => {
                        decisions.insert(path.to_vec(), cat.to_string());
                    }
                }
            }
        }
        // Directories a `dirs` rule matches go when everything below them
        // goes (paths are sorted: a directory's subtree follows it).
        if !self.rules.dirs.is_empty() {
            for (i, dir) in paths.iter().enumerate() {
                if tree.kind(dir) != Some(Kind::Dir) {
                    continue;
                }
                let s = String::from_utf8_lossy(dir);
                if self.rules.keep.is_match(&*s) || self.safe.reason(dir).is_some() {
                    continue;
                }
                let Some((cat, _)) = self.rules.dirs.iter().find(|(_, set)| set.is_match(&*s))
                else {
                    continue;
                };
                let all_gone = paths[i + 1..]
                    .iter()
                    .take_while(|p| {
                        p.len() > dir.len() && p.starts_with(dir) && p[dir.len()] == b'/'
                    })
                    .all(|p| tree.kind(p) == Some(Kind::Dir) || decisions.contains_key(*p));
                if all_gone {
                    decisions.insert(dir.to_vec(), cat.clone());
                }
            }
        }
        self.decisions = decisions;
        self.kept_by_safety = saved;
    }

    /// Removed paths of the merged tree (for `--dry-run`); a removed
    /// directory is listed with what is in it.
    pub fn removals(&self) -> impl Iterator<Item = (&[u8], &str)> {
        self.decisions.iter().map(|(p, c)| (&p[..], c.as_str()))
    }
}

impl PathFilter for CompiledFilter {
    fn remove(&self, path: &[u8], kind: Kind) -> Option<&str> {
        if let Some(c) = self.decisions.get(path) {
            return Some(c);
        }
        if kind.is_dir() {
            return None;
        }
        // Not in the final tree (a lower layer's entry in --squash none):
        // the rules alone decide, safety keeps still hold.
        if self.safe.reason(path).is_some() {
            return None;
        }
        self.rules.category(path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert!(ProfileSet::resolve("auto,debian", &[], &[], true).is_err());
    }
}

#[cfg(test)]
mod rule_tests {
    use super::*;
    use crate::transform::tree::testing::MemTree;

    fn tree() -> MemTree {
        MemTree::default()
            .file("etc/os-release", 0o644, b"ID=debian\n")
            .file("etc/apt/sources.list", 0o644, b"deb x")
            .file("var/lib/apt/lists/deb_Packages", 0o644, b"x")
            .file("var/cache/apt/archives/x.deb", 0o644, b"x")
            .file("usr/share/doc/pkg/README", 0o644, b"x")
            .file("usr/share/doc/pkg/copyright", 0o644, b"x")
            .file("usr/share/man/man1/ls.1.gz", 0o644, b"x")
            .dir("usr/share/man/man8")
            .file("usr/share/locale/de/LC_MESSAGES/x.mo", 0o644, b"x")
            .file("usr/share/locale/locale.alias", 0o644, b"x")
            .file("usr/share/info/x.info.gz", 0o644, b"x")
            .file("usr/lib/x86_64-linux-gnu/libz.a", 0o644, b"x")
            .file("usr/include/stdio.h", 0o644, b"x")
            .file("var/lib/dpkg/status", 0o644, b"x")
            .file("var/lib/dpkg/status-old", 0o644, b"x")
            .file("tmp/build.log", 0o644, b"x")
            .file("var/log/apt/history.log", 0o644, b"x")
            .file("root/.cache/pip/wheels/a.whl", 0o644, b"x")
            .file("usr/bin/python3", 0o755, b"\x7fELF")
            .file(
                "usr/lib/python3/dist-packages/numpy/_core/tests/test_a.py",
                0o644,
                b"x",
            )
            .file(
                "usr/lib/python3/dist-packages/numpy/testing/__init__.py",
                0o644,
                b"x",
            )
            .file(
                "usr/lib/python3/dist-packages/numpy/__pycache__/x.cpython-311.pyc",
                0o644,
                b"x",
            )
            .file("usr/bin/node", 0o755, b"\x7fELF")
            .file("app/node_modules/x/README.md", 0o644, b"x")
            .file("app/node_modules/x/LICENSE.md", 0o644, b"x")
            .file("app/node_modules/x/index.js", 0o644, b"x")
            .file("app/node_modules/x/index.js.map", 0o644, b"x")
            .file("app/node_modules/x/types.d.ts", 0o644, b"x")
            .file("app/node_modules/x/src/a.ts", 0o644, b"x")
            .file("app/node_modules/x/test/t.js", 0o644, b"x")
            .file("root/.npm/_cacache/index/ab", 0o644, b"x")
            .file("opt/fixtures/big.bin", 0o644, b"x")
    }

    fn compiled(spec: &str, keep: &[&str], remove: &[&str]) -> CompiledFilter {
        let keep: Vec<String> = keep.iter().map(|s| s.to_string()).collect();
        let remove: Vec<String> = remove.iter().map(|s| s.to_string()).collect();
        let set = ProfileSet::resolve(spec, &keep, &remove, true).unwrap();
        set.compile(&tree(), &serde_json::json!({})).unwrap()
    }

    fn verdict(f: &CompiledFilter, path: &str) -> Option<String> {
        let t = tree();
        let kind = t.kind(path.as_bytes()).expect("path in the test tree");
        f.remove(path.as_bytes(), kind).map(str::to_string)
    }

    #[test]
    fn each_category_removes_what_it_says_and_keeps_its_keeps() {
        let f = compiled("debian,python,node", &[], &[]);
        let cases: &[(&str, Option<&str>)] = &[
            (
                "var/lib/apt/lists/deb_Packages",
                Some("package-manager-lists"),
            ),
            ("var/cache/apt/archives/x.deb", Some("package-cache")),
            ("usr/share/doc/pkg/README", Some("docs")),
            ("usr/share/doc/pkg/copyright", None),
            ("usr/share/man/man1/ls.1.gz", Some("man")),
            ("usr/share/man/man8", None),
            ("usr/share/man/man1", None),
            ("usr/share/locale/de/LC_MESSAGES/x.mo", Some("locale")),
            ("usr/share/locale/locale.alias", None),
            ("usr/share/info/x.info.gz", Some("info")),
            ("usr/lib/x86_64-linux-gnu/libz.a", Some("static-libs")),
            ("usr/include/stdio.h", Some("headers")),
            ("var/lib/dpkg/status-old", Some("dpkg-leftovers")),
            ("var/lib/dpkg/status", None),
            ("etc/apt/sources.list", None),
            ("tmp/build.log", Some("tmp")),
            ("var/log/apt/history.log", Some("logs")),
            ("root/.cache/pip/wheels/a.whl", Some("cache")),
            (
                "usr/lib/python3/dist-packages/numpy/_core/tests/test_a.py",
                Some("tests"),
            ),
            (
                "usr/lib/python3/dist-packages/numpy/_core/tests",
                Some("tests"),
            ),
            (
                "usr/lib/python3/dist-packages/numpy/testing/__init__.py",
                None,
            ),
            (
                "usr/lib/python3/dist-packages/numpy/__pycache__/x.cpython-311.pyc",
                Some("bytecode"),
            ),
            (
                "usr/lib/python3/dist-packages/numpy/__pycache__",
                Some("bytecode"),
            ),
            ("app/node_modules/x/README.md", Some("docs")),
            ("app/node_modules/x/LICENSE.md", None),
            ("app/node_modules/x/index.js", None),
            ("app/node_modules/x/index.js.map", Some("source-maps")),
            ("app/node_modules/x/types.d.ts", None),
            ("app/node_modules/x/src/a.ts", Some("typescript-sources")),
            ("app/node_modules/x/test/t.js", Some("tests")),
            ("root/.npm/_cacache/index/ab", Some("cache")),
            ("root/.npm/_cacache", Some("cache")),
            ("root/.npm", None),
            ("tmp", None),
            ("opt/fixtures/big.bin", None),
        ];
        for (path, want) in cases {
            assert_eq!(verdict(&f, path).as_deref(), *want, "{path}");
        }
    }

    #[test]
    fn overrides_keep_and_remove() {
        let f = compiled("python", &["**/__pycache__/**"], &["/opt/fixtures/**"]);
        assert_eq!(
            verdict(
                &f,
                "usr/lib/python3/dist-packages/numpy/__pycache__/x.cpython-311.pyc"
            ),
            None
        );
        assert_eq!(verdict(&f, "opt/fixtures/big.bin").as_deref(), Some("user"));
        // Only what python (and base) say: Debian's rules are not in effect.
        assert_eq!(verdict(&f, "usr/share/doc/pkg/README"), None);
        assert_eq!(verdict(&f, "tmp/build.log").as_deref(), Some("tmp"));
    }

    #[test]
    fn auto_detects_the_distro_and_runtimes() {
        let f = compiled("auto", &[], &[]);
        assert_eq!(f.chosen, vec!["base", "debian", "node", "python"]);
        let alpine = MemTree::default()
            .file("etc/os-release", 0o644, b"ID=alpine\n")
            .file("bin/busybox", 0o755, b"x");
        let set = ProfileSet::resolve("auto", &[], &[], true).unwrap();
        assert_eq!(
            set.compile(&alpine, &serde_json::json!({})).unwrap().chosen,
            vec!["alpine", "base"]
        );
    }

    #[test]
    fn safety_saves_the_entrypoint_from_a_rule_and_says_why() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("strip-bin.toml");
        std::fs::write(
            &path,
            "name = \"strip-bin\"\ndescription = \"too eager\"\n[[rule]]\ncategory = \"binaries\"\nremove = [\"usr/bin/**\"]\n",
        )
        .unwrap();
        let set = ProfileSet::resolve(path.to_str().unwrap(), &[], &[], true).unwrap();
        let config = serde_json::json!({"config": {"Entrypoint": ["node"]}});
        let f = set.compile(&tree(), &config).unwrap();
        assert_eq!(f.remove(b"usr/bin/node", Kind::File), None);
        assert_eq!(f.remove(b"usr/bin/python3", Kind::File), Some("binaries"));
        assert!(
            f.kept_by_safety
                .iter()
                .any(|(p, r)| p == "/usr/bin/node" && r.contains("entrypoint")),
            "{:?}",
            f.kept_by_safety
        );
        // Without safety keeps, the rule wins.
        let set = ProfileSet::resolve(path.to_str().unwrap(), &[], &[], false).unwrap();
        let f = set.compile(&tree(), &config).unwrap();
        assert_eq!(f.remove(b"usr/bin/node", Kind::File), Some("binaries"));
    }
}
