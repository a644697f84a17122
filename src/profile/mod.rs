//! Profiles: declarative strip rules (`profiles/*.toml`, compiled in; or a
//! user's file), composed, resolved once before any network I/O, then
//! compiled per image against its merged tree into a
//! [`PathFilter`](crate::transform::filter::PathFilter) that knows the
//! image's safety keeps.
//!
//! A path goes when a rule's remove glob matches it and no keep glob of any
//! active profile, no `--keep` override and no safety keep does. Directories
//! never go (package managers expect them, even empty): their contents do.
//!
//! Where each part lives: `load` (built-ins, files, parsing, `extends`),
//! `detect` (`--profile auto`), `rules` (matching: the [`CompiledFilter`]),
//! [`safety`] (what the program needs), [`schema`] (the TOML format). This
//! file holds [`ProfileSet`], the settings resolved before any I/O. The
//! merged tree is read through [`TreeView`], the transform stage's
//! interface: profile depends on transform, never the other way round.

mod detect;
mod load;
mod rules;
pub mod safety;
pub mod schema;

use std::collections::{BTreeMap, HashMap, HashSet};

use anyhow::{Result, bail};
use serde_json::Value;

use crate::digest::Digest;
use crate::transform::tree::TreeView;
pub use detect::detect;
pub use load::{BUILTIN, Profile, ProfileError, Rule, builtins, load};
use load::{add_with_extends, glob, glob_set, normalize_glob};
pub use rules::CompiledFilter;
use rules::Rules;

/// What the user asked for, resolved before anything is fetched.
#[derive(Debug, Clone)]
pub struct ProfileSet {
    /// `--profile auto`: candidates, picked per image by their detect rules.
    pub auto: bool,
    /// Explicit profiles (with what they extend), or auto's candidates.
    pub profiles: Vec<Profile>,
    /// With `auto`: profiles named next to it (`auto,python-bytecode`),
    /// used whatever auto picks. Opt-in profiles have no detect rules, so
    /// auto alone never picks them.
    pub also: Vec<Profile>,
    pub keep: Vec<String>,
    pub remove: Vec<String>,
    /// Safety keeps on (the default).
    pub safety: bool,
}

impl ProfileSet {
    /// Parses `--profile a,b,./c.toml` (or `auto`, `auto,a,…`, or `none`)
    /// with the `--keep`/`--remove` overrides.
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
        if names.is_empty() || names == ["none"] {
            return Ok(ProfileSet {
                auto: false,
                profiles: Vec::new(),
                also: Vec::new(),
                keep,
                remove,
                safety,
            });
        }
        let auto = names.first() == Some(&"auto");
        let mut out: Vec<Profile> = Vec::new();
        for n in names.iter().skip(usize::from(auto)) {
            if *n == "none" || *n == "auto" {
                bail!(
                    "--profile {n} cannot be combined with other profiles \
                     (auto may come first: auto,NAME)"
                );
            }
            add_with_extends(load(n)?, &mut out, &mut Vec::new())?;
        }
        Ok(if auto {
            ProfileSet {
                auto: true,
                profiles: builtins(),
                also: out,
                keep,
                remove,
                safety,
            }
        } else {
            ProfileSet {
                auto: false,
                profiles: out,
                also: Vec::new(),
                keep,
                remove,
                safety,
            }
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
        // Only present with `auto,NAME`: fingerprints of plain `auto` stay
        // as they were.
        for p in &self.also {
            text.push_str(&format!("also {}\n{}", p.name, p.text));
        }
        for k in &self.keep {
            text.push_str(&format!("keep {k}\n"));
        }
        for r in &self.remove {
            text.push_str(&format!("remove {r}\n"));
        }
        text.push_str(&format!("safety {}\n", self.safety));
        let names = if self.auto {
            std::iter::once("auto")
                .chain(self.also.iter().map(|p| p.name.as_str()))
                .collect::<Vec<_>>()
                .join(",")
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
                .chain(self.also.iter().filter(|p| !names.contains(&p.name)))
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

#[cfg(test)]
mod rule_tests {
    use super::*;
    use crate::layer::entry::Kind;
    use crate::transform::filter::PathFilter;
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

    /// A directory a `dirs` rule matches goes when all below it goes:
    /// directories inside it (unless kept themselves) and removed files;
    /// one kept path keeps it and every matched directory above it; an
    /// empty one goes; nested matches are decided each on its own.
    #[test]
    fn a_matched_directory_goes_only_with_all_below_it() {
        let t = MemTree::default()
            .file("a/x/f", 0o644, b"x")
            .file("a/y", 0o644, b"x")
            .file("b/f", 0o644, b"x")
            .file("b/keep.txt", 0o644, b"x")
            .file("c/d/f", 0o644, b"x")
            .file("c/g", 0o644, b"x")
            .file("c2/d/f", 0o644, b"x")
            .file("c2/d/z", 0o644, b"x")
            .file("e/k/f", 0o644, b"x")
            .dir("h")
            .file("i", 0o644, b"x");
        let set = |globs: &[&str]| {
            load::glob_set(
                globs
                    .iter()
                    .map(|g| g.to_string())
                    .collect::<Vec<_>>()
                    .iter(),
            )
        };
        let mut f = CompiledFilter {
            chosen: Vec::new(),
            rules: rules::Rules {
                remove: vec![(
                    "cat".to_string(),
                    set(&["a/**", "b/f", "c/d/**", "c2/d/f", "e/k/f"]),
                )],
                dirs: vec![(
                    "cat".to_string(),
                    set(&["a", "b", "c", "c/d", "c2", "c2/d", "e", "e/k", "h"]),
                )],
                keep: set(&["e/k"]),
                dev_dependencies: BTreeMap::new(),
            },
            safe: safety::SafetyKeeps::default(),
            decisions: HashMap::new(),
            kept_by_safety: Vec::new(),
        };
        f.decide_all(&t);
        let mut gone: Vec<&str> = f
            .decisions
            .keys()
            .map(|k| std::str::from_utf8(k).unwrap())
            .collect();
        gone.sort_unstable();
        assert_eq!(
            gone,
            [
                "a", "a/x/f", "a/y", "b/f", "c/d", "c/d/f", "c2/d/f", "e/k/f", "h"
            ]
        );
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
            // Bytecode stays: it is what makes start-up fast.
            (
                "usr/lib/python3/dist-packages/numpy/__pycache__/x.cpython-311.pyc",
                None,
            ),
            ("usr/lib/python3/dist-packages/numpy/__pycache__", None),
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
    fn bytecode_goes_only_when_its_opt_in_profile_is_named() {
        let pyc = "usr/lib/python3/dist-packages/numpy/__pycache__/x.cpython-311.pyc";
        let auto = compiled("auto", &[], &[]);
        assert!(!auto.chosen.iter().any(|p| p == "python-bytecode"));
        assert_eq!(verdict(&auto, pyc), None);
        let opt_in = compiled("auto,python-bytecode", &[], &[]);
        assert_eq!(
            opt_in.chosen,
            vec!["base", "debian", "node", "python", "python-bytecode"]
        );
        assert_eq!(verdict(&opt_in, pyc).as_deref(), Some("bytecode"));
        assert_eq!(
            verdict(&compiled("python,python-bytecode", &[], &[]), pyc).as_deref(),
            Some("bytecode")
        );
        // Named, it changes what the output records as its settings.
        let fp = |spec: &str| {
            ProfileSet::resolve(spec, &[], &[], true)
                .unwrap()
                .fingerprint()
        };
        assert_ne!(fp("auto"), fp("auto,python-bytecode"));
        assert!(fp("auto,python-bytecode").starts_with("auto,python-bytecode@"));
        let err = ProfileSet::resolve("python,auto", &[], &[], true).unwrap_err();
        assert!(err.to_string().contains("auto may come first"), "{err}");
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
