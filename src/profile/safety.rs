//! Safety keeps: what a running program needs, whatever a profile says.
//!
//! - the entrypoint and cmd programs (resolved through the image's `PATH`
//!   and `WorkingDir`, through symlinks), and files they are given as
//!   arguments;
//! - the interpreters named by the shebang line of kept scripts (`#!/usr/bin/env
//!   python3` resolves `python3` through `PATH`);
//! - the shared-library closure of every kept ELF program and library:
//!   `PT_INTERP`, `DT_NEEDED` searched through `DT_RPATH`, `LD_LIBRARY_PATH`,
//!   `DT_RUNPATH`, `/etc/ld.so.conf*` and the default directories, as ld.so
//!   does;
//! - licence and copyright files, CA certificates, zoneinfo and `/etc`.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

use globset::{GlobSet, GlobSetBuilder};
use serde_json::Value;

use crate::layer::entry::Kind;
use crate::transform::tree::{TreeView, resolve};

/// Paths that stay, each with why.
#[derive(Default)]
pub struct SafetyKeeps {
    statics: Vec<(GlobSet, &'static str)>,
    paths: HashMap<Vec<u8>, String>,
}

impl SafetyKeeps {
    pub fn reason(&self, path: &[u8]) -> Option<&str> {
        if let Some(r) = self.paths.get(path) {
            return Some(r);
        }
        let s = String::from_utf8_lossy(path);
        self.statics
            .iter()
            .find(|(set, _)| set.is_match(&*s))
            .map(|(_, r)| *r)
    }

    fn keep(&mut self, path: &[u8], reason: String) {
        self.paths.entry(path.to_vec()).or_insert(reason);
    }

    /// Keeps `path` and every symlink on the way to it; returns the
    /// resolved path if it is a regular file.
    fn keep_resolved(&mut self, tree: &dyn TreeView, path: &[u8], reason: &str) -> Option<Vec<u8>> {
        let (real, links) = resolve(tree, path)?;
        for l in links {
            self.keep(&l, reason.to_string());
        }
        if tree.kind(&real).is_some() {
            self.keep(&real, reason.to_string());
        }
        (tree.kind(&real) == Some(Kind::File)).then_some(real)
    }
}

const STATIC: &[(&str, &[&str])] = &[
    (
        "licence or copyright file",
        &[
            "usr/share/doc/*/copyright",
            "**/LICENSE*",
            "**/LICENCE*",
            "**/COPYING*",
            "**/NOTICE*",
            "**/license",
            "**/license.*",
            "**/licence",
            "**/licence.*",
        ],
    ),
    (
        "CA certificates",
        &[
            "etc/ssl/**",
            "etc/pki/**",
            "usr/share/ca-certificates/**",
            "usr/local/share/ca-certificates/**",
        ],
    ),
    ("zoneinfo", &["usr/share/zoneinfo/**"]),
    // What scanners read to know which packages the image holds; a package
    // whose files are all gone leaves it (see transform::pkgdb).
    (
        "package database",
        &[
            "var/lib/dpkg/status",
            "var/lib/dpkg/status.d/**",
            "var/lib/dpkg/info/**",
            "var/lib/dpkg/diversions",
            "var/lib/dpkg/statoverride",
            "var/lib/dpkg/arch",
            "lib/apk/db/**",
            "var/lib/rpm/**",
            "usr/lib/sysimage/rpm/**",
        ],
    ),
    ("/etc", &["etc/**"]),
];

/// The keeps for one image. `would_remove` says what the profile rules
/// alone would remove (to know which scripts and programs stay).
pub fn compute(
    tree: &dyn TreeView,
    config: &Value,
    would_remove: &dyn Fn(&[u8]) -> bool,
) -> SafetyKeeps {
    let mut k = SafetyKeeps::default();
    for (reason, globs) in STATIC {
        let mut b = GlobSetBuilder::new();
        for g in *globs {
            b.add(
                globset::GlobBuilder::new(g)
                    .literal_separator(true)
                    .build()
                    .expect("static globs"),
            );
        }
        k.statics.push((b.build().expect("static globs"), reason));
    }
    let env = Env::from_config(config);
    entrypoint(&mut k, tree, &env);
    shebangs(&mut k, tree, &env, would_remove);
    elf_closure(&mut k, tree, &env, would_remove);
    k
}

/// What of the config matters here.
struct Env {
    path: Vec<Vec<u8>>,
    ld_library_path: Vec<Vec<u8>>,
    workdir: Vec<u8>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

impl Env {
    fn from_config(config: &Value) -> Env {
        let c = &config["config"];
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default()
        };
        let env = strings(&c["Env"]);
        let var = |name: &str| {
            env.iter()
                .find_map(|e| e.strip_prefix(&format!("{name}=")).map(str::to_string))
        };
        let split = |v: Option<String>, default: &str| -> Vec<Vec<u8>> {
            v.unwrap_or_else(|| default.to_string())
                .split(':')
                .filter(|d| !d.is_empty())
                .map(|d| d.trim_start_matches('/').as_bytes().to_vec())
                .collect()
        };
        Env {
            // Docker's default PATH when the image sets none.
            path: split(
                var("PATH"),
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ),
            ld_library_path: split(var("LD_LIBRARY_PATH"), ""),
            workdir: c["WorkingDir"]
                .as_str()
                .unwrap_or("/")
                .trim_start_matches('/')
                .as_bytes()
                .to_vec(),
            entrypoint: strings(&c["Entrypoint"]),
            cmd: strings(&c["Cmd"]),
        }
    }

    /// A command name as exec would find it: with a `/`, relative to the
    /// working directory; without, the first match in `PATH`.
    fn program(&self, tree: &dyn TreeView, name: &str) -> Option<Vec<u8>> {
        if name.contains('/') {
            return Some(self.path_arg(name));
        }
        self.path.iter().find_map(|dir| {
            let p = join(dir, name.as_bytes());
            let (real, _) = resolve(tree, &p)?;
            (tree.kind(&real) == Some(Kind::File) && tree.mode(&real).unwrap_or(0) & 0o111 != 0)
                .then_some(p)
        })
    }

    fn path_arg(&self, arg: &str) -> Vec<u8> {
        match arg.strip_prefix('/') {
            Some(abs) => abs.as_bytes().to_vec(),
            None => join(&self.workdir, arg.as_bytes()),
        }
    }
}

fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        name.to_vec()
    } else {
        let mut v = dir.to_vec();
        v.push(b'/');
        v.extend_from_slice(name);
        v
    }
}

fn entrypoint(k: &mut SafetyKeeps, tree: &dyn TreeView, env: &Env) {
    // With an entrypoint, cmd is its arguments; without, cmd is the command.
    let (what, argv): (&str, Vec<String>) = if env.entrypoint.is_empty() {
        ("cmd", env.cmd.clone())
    } else {
        (
            "entrypoint",
            env.entrypoint.iter().chain(&env.cmd).cloned().collect(),
        )
    };
    {
        let Some(first) = argv.first() else { return };
        if let Some(p) = env.program(tree, first) {
            k.keep_resolved(tree, &p, &format!("{what} program {first}"));
        }
        for (i, arg) in argv.iter().enumerate().skip(1) {
            // `sh -c "exec gunicorn app:app"`: the first command word.
            if arg == "-c" && is_shell(first) {
                if let Some(word) = argv.get(i + 1).and_then(|s| first_command_word(s))
                    && let Some(p) = env.program(tree, &word)
                {
                    k.keep_resolved(tree, &p, &format!("{what} command {word}"));
                }
                break;
            }
            if arg.starts_with('-') {
                continue;
            }
            let p = env.path_arg(arg);
            if resolve(tree, &p).is_some_and(|(real, _)| tree.kind(&real).is_some()) {
                k.keep_resolved(tree, &p, &format!("{what} argument {arg}"));
            }
        }
    }
}

fn is_shell(p: &str) -> bool {
    matches!(
        p.rsplit('/').next(),
        Some("sh" | "bash" | "dash" | "ash" | "zsh")
    )
}

/// The program a shell command line runs first (`FOO=1 exec app --x` -> `app`).
fn first_command_word(cmd: &str) -> Option<String> {
    cmd.split_whitespace()
        .find(|w| !w.contains('=') && !matches!(*w, "exec" | "set" | "-e" | "-x" | "&&" | ";"))
        .map(|w| w.trim_matches(|c| c == '\'' || c == '"').to_string())
}

/// `#!/usr/bin/env python3` -> interpreter `usr/bin/env`, argument `python3`.
fn shebang(head: &[u8]) -> Option<(String, Option<String>)> {
    let line = head.strip_prefix(b"#!")?;
    let line = &line[..line.iter().position(|b| *b == b'\n').unwrap_or(line.len())];
    let text = String::from_utf8_lossy(line);
    let mut words = text.split_whitespace();
    let interp = words.next()?.to_string();
    Some((interp, words.next().map(str::to_string)))
}

fn shebangs(
    k: &mut SafetyKeeps,
    tree: &dyn TreeView,
    env: &Env,
    would_remove: &dyn Fn(&[u8]) -> bool,
) {
    let scripts: Vec<Vec<u8>> = tree
        .paths()
        .filter(|p| tree.kind(p) == Some(Kind::File) && tree.mode(p).unwrap_or(0) & 0o111 != 0)
        .filter(|p| !would_remove(p) || k.reason(p).is_some())
        .map(<[u8]>::to_vec)
        .collect();
    for script in scripts {
        let Some(head) = tree.read(&script, 256) else {
            continue;
        };
        let Some((interp, arg)) = shebang(&head) else {
            continue;
        };
        let shown = crate::layer::entry::display(&script);
        let reason = format!("interpreter of {shown}");
        k.keep_resolved(tree, interp.trim_start_matches('/').as_bytes(), &reason);
        if interp.ends_with("/env")
            && let Some(arg) = arg.filter(|a| !a.starts_with('-'))
            && let Some(p) = env.program(tree, &arg)
        {
            k.keep_resolved(tree, &p, &reason);
        }
    }
}

const ELF_MAGIC: &[u8] = b"\x7fELF";

fn is_elf(tree: &dyn TreeView, p: &[u8]) -> bool {
    tree.kind(p) == Some(Kind::File) && tree.read(p, 4).is_some_and(|h| h == ELF_MAGIC)
}

fn elf_closure(
    k: &mut SafetyKeeps,
    tree: &dyn TreeView,
    env: &Env,
    would_remove: &dyn Fn(&[u8]) -> bool,
) {
    // Nothing to save unless the rules would remove some ELF file.
    let elves: Vec<Vec<u8>> = tree
        .paths()
        .filter(|p| is_elf(tree, p))
        .map(<[u8]>::to_vec)
        .collect();
    if !elves
        .iter()
        .any(|p| would_remove(p) && k.reason(p).is_none())
    {
        return;
    }
    let search = LibSearch::new(tree, env);
    let mut queue: VecDeque<Vec<u8>> = elves
        .iter()
        .filter(|p| !would_remove(p) || k.reason(p).is_some())
        .cloned()
        .collect();
    let mut seen: HashSet<Vec<u8>> = queue.iter().cloned().collect();
    while let Some(path) = queue.pop_front() {
        let Some(elf) =
            crate::transform::elf::dependencies(&|off, len| tree.read_at(&path, off, len))
        else {
            continue;
        };
        let shown = crate::layer::entry::display(&path);
        let origin = crate::layer::entry::split_parent(&path).0.to_vec();
        let mut needs: Vec<Vec<u8>> = Vec::new();
        if let Some(interp) = &elf.interpreter {
            needs.push(interp.trim_start_matches('/').as_bytes().to_vec());
        }
        for lib in &elf.needed {
            if lib.contains('/') {
                needs.push(lib.trim_start_matches('/').as_bytes().to_vec());
            } else if let Some(p) = search.find(tree, lib, &elf.rpaths, &elf.runpaths, &origin) {
                needs.push(p);
            }
        }
        for need in needs {
            let reason = format!("shared library needed by {shown}");
            if let Some(real) = k.keep_resolved(tree, &need, &reason)
                && seen.insert(real.clone())
            {
                queue.push_back(real);
            }
        }
    }
}

/// Where ld.so looks for a `DT_NEEDED` name.
struct LibSearch {
    ld_library_path: Vec<Vec<u8>>,
    conf_dirs: Vec<Vec<u8>>,
}

impl LibSearch {
    fn new(tree: &dyn TreeView, env: &Env) -> LibSearch {
        let mut conf_dirs = Vec::new();
        let mut files: VecDeque<Vec<u8>> = VecDeque::from([b"etc/ld.so.conf".to_vec()]);
        let mut read: HashSet<Vec<u8>> = HashSet::new();
        while let Some(f) = files.pop_front() {
            if !read.insert(f.clone()) {
                continue;
            }
            let Some((real, _)) = resolve(tree, &f) else {
                continue;
            };
            let Some(text) = tree.read(&real, 1 << 20) else {
                continue;
            };
            for line in String::from_utf8_lossy(&text).lines() {
                let line = line.split('#').next().unwrap_or("").trim();
                if let Some(pattern) = line.strip_prefix("include") {
                    let pattern = pattern.trim().trim_start_matches('/');
                    if let Ok(g) = globset::GlobBuilder::new(pattern)
                        .literal_separator(true)
                        .build()
                    {
                        let m = g.compile_matcher();
                        let mut found: Vec<Vec<u8>> = tree
                            .paths()
                            .filter(|p| m.is_match(&*String::from_utf8_lossy(p)))
                            .map(<[u8]>::to_vec)
                            .collect();
                        found.sort();
                        files.extend(found);
                    }
                } else if !line.is_empty() {
                    conf_dirs.extend(
                        line.split([':', ',', ' ', '\t'])
                            .filter(|d| !d.is_empty())
                            .map(|d| d.trim_start_matches('/').as_bytes().to_vec()),
                    );
                }
            }
        }
        // The trusted directories ld.so always searches last.
        for d in ["lib", "usr/lib", "lib64", "usr/lib64"] {
            conf_dirs.push(d.as_bytes().to_vec());
        }
        LibSearch {
            ld_library_path: env.ld_library_path.clone(),
            conf_dirs,
        }
    }

    fn find(
        &self,
        tree: &dyn TreeView,
        name: &str,
        rpaths: &[String],
        runpaths: &[String],
        origin: &[u8],
    ) -> Option<Vec<u8>> {
        let expand = |dirs: &[String]| -> Vec<Vec<u8>> {
            dirs.iter()
                .flat_map(|d| d.split(':'))
                .map(|d| {
                    let o = String::from_utf8_lossy(origin);
                    d.replace("$ORIGIN", &format!("/{o}"))
                        .replace("${ORIGIN}", &format!("/{o}"))
                })
                .map(|d| d.trim_start_matches('/').as_bytes().to_vec())
                .collect()
        };
        // DT_RPATH is used only when there is no DT_RUNPATH.
        let mut dirs: Vec<Vec<u8>> = Vec::new();
        if runpaths.is_empty() {
            dirs.extend(expand(rpaths));
        }
        dirs.extend(self.ld_library_path.iter().cloned());
        dirs.extend(expand(runpaths));
        dirs.extend(self.conf_dirs.iter().cloned());
        dirs.into_iter().find_map(|d| {
            let p = join(&d, name.as_bytes());
            let (real, _) = resolve(tree, &p)?;
            (tree.kind(&real) == Some(Kind::File)).then_some(p)
        })
    }
}

/// `node_modules` folders of packages a package-lock.json marks as reachable
/// only from devDependencies (`"dev": true`), with the lock file naming them.
pub fn dev_dependency_dirs(tree: &dyn TreeView) -> BTreeMap<Vec<u8>, String> {
    let mut out = BTreeMap::new();
    let locks: Vec<Vec<u8>> = tree
        .paths()
        .filter(|p| {
            p.ends_with(b"package-lock.json") && !p.windows(14).any(|w| w == b"/node_modules/")
        })
        .filter(|p| p == b"package-lock.json" || p.ends_with(b"/package-lock.json"))
        .map(<[u8]>::to_vec)
        .collect();
    for lock in locks {
        let Some(bytes) = tree.read(&lock, 64 << 20) else {
            continue;
        };
        // Real lock files of large projects hold a few hundred thousand
        // values; the bound keeps a hostile one from taking gigabytes.
        let Ok(json) = crate::image::parse_json("package-lock.json", &bytes, 2_000_000) else {
            tracing::warn!(
                "{} is not JSON (or is too large to read); its devDependencies stay",
                crate::layer::entry::display(&lock)
            );
            continue;
        };
        let dir = crate::layer::entry::split_parent(&lock).0.to_vec();
        let shown = crate::layer::entry::display(&lock);
        let mut add = |rel: &str| {
            let p = join(&dir, rel.as_bytes());
            if tree.kind(&p) == Some(Kind::Dir) {
                out.insert(p, shown.clone());
            }
        };
        if let Some(pkgs) = json["packages"].as_object() {
            // lockfileVersion 2 and 3: flat, keyed by install path.
            for (key, pkg) in pkgs {
                if !key.is_empty() && pkg["dev"].as_bool() == Some(true) {
                    add(key);
                }
            }
        } else if let Some(deps) = json["dependencies"].as_object() {
            // lockfileVersion 1: nested.
            fn walk(
                deps: &serde_json::Map<String, Value>,
                prefix: &str,
                add: &mut dyn FnMut(&str),
            ) {
                for (name, dep) in deps {
                    let path = format!("{prefix}node_modules/{name}");
                    if dep["dev"].as_bool() == Some(true) {
                        add(&path);
                    }
                    if let Some(nested) = dep["dependencies"].as_object() {
                        walk(nested, &format!("{path}/"), add);
                    }
                }
            }
            walk(deps, "", &mut add);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tree::testing::MemTree;

    #[test]
    fn entrypoint_script_and_its_env_interpreter_are_kept() {
        let t = MemTree::default()
            .link("bin", "usr/bin")
            .file("usr/bin/env", 0o755, b"\x7fELF")
            .link("usr/bin/python3", "python3.11")
            .file("usr/bin/python3.11", 0o755, b"\x7fELF")
            .file("app/run.py", 0o755, b"#!/usr/bin/env python3\nprint(1)\n")
            .file("app/data.txt", 0o644, b"x");
        let config = serde_json::json!({"config": {
            "Entrypoint": ["./run.py"], "Cmd": ["data.txt"], "WorkingDir": "/app",
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"]}});
        let k = compute(&t, &config, &|_| true);
        assert!(k.reason(b"app/run.py").unwrap().contains("entrypoint"));
        assert!(
            k.reason(b"usr/bin/python3.11")
                .unwrap()
                .contains("interpreter of /app/run.py")
        );
        assert!(k.reason(b"usr/bin/python3").is_some());
        assert!(k.reason(b"usr/bin/env").is_some());
        assert!(
            k.reason(b"app/data.txt")
                .unwrap()
                .contains("entrypoint argument")
        );
        assert_eq!(k.reason(b"etc/passwd"), Some("/etc"));
        assert_eq!(
            k.reason(b"usr/share/doc/x/copyright"),
            Some("licence or copyright file")
        );
        assert_eq!(k.reason(b"usr/share/doc/x/README"), None);
    }

    #[test]
    fn shell_form_commands_keep_their_program() {
        let t = MemTree::default().file("bin/sh", 0o755, b"\x7fELF").file(
            "usr/local/bin/gunicorn",
            0o755,
            b"#!/bin/sh\n",
        );
        let config = serde_json::json!({"config": {"Cmd": ["/bin/sh", "-c", "FOO=1 exec gunicorn app:app"]}});
        let k = compute(&t, &config, &|_| false);
        assert!(
            k.reason(b"usr/local/bin/gunicorn")
                .unwrap()
                .contains("cmd command gunicorn")
        );
    }

    #[test]
    fn dev_dependencies_from_a_v3_lockfile() {
        let lock = serde_json::json!({"lockfileVersion": 3, "packages": {
            "": {"name": "app"},
            "node_modules/express": {"version": "4"},
            "node_modules/jest": {"dev": true},
            "node_modules/jest/node_modules/chalk": {"dev": true},
            "node_modules/gone": {"dev": true}
        }});
        let t = MemTree::default()
            .file("app/package-lock.json", 0o644, lock.to_string().as_bytes())
            .dir("app/node_modules/express")
            .dir("app/node_modules/jest/node_modules/chalk");
        let dirs = dev_dependency_dirs(&t);
        let keys: Vec<String> = dirs
            .keys()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert_eq!(
            keys,
            vec![
                "app/node_modules/jest",
                "app/node_modules/jest/node_modules/chalk"
            ]
        );
    }
}
