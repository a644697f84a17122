//! Package databases after the filter: a dpkg or apk package the filter
//! took files from, and none of whose files remain but its documentation
//! and licence (which the profiles keep for every package), leaves the
//! database,
//! so scanners list what the image really holds. Its database entries
//! (dpkg's `info/<package>.*`) and leftover documentation go with it; a
//! package with any other file left stays listed as it was.
//!
//! Only a database the upper layers wrote as a plain file (not hard-linked,
//! not in a kept base) is rewritten; otherwise it is left as it is.

use crate::layer::shared_path::SharedPath;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::super::filter::FilterStats;
use super::super::pkgdb::{self, GonePackage, Record};
use super::model::{Merge, NO_INODE, Removals};
use crate::layer::entry::{self, Kind};

/// The category of what leaves with a package that is gone.
pub const CATEGORY: &str = "package gone";

/// A database file with new content.
#[derive(Clone, Debug)]
pub(crate) struct Rewrite {
    pub(crate) path: SharedPath,
    pub(crate) content: Arc<[u8]>,
    pub(crate) gone: Vec<GonePackage>,
}

/// What the filter removes, as the packages see it.
struct After<'m, 'a> {
    m: &'m Merge<'a>,
    gone: HashSet<SharedPath>,
}

impl After<'_, '_> {
    /// Where a root-relative path really is: its parent resolved through
    /// the tree's symlinks.
    fn real(&self, path: &[u8]) -> Option<Vec<u8>> {
        match self.m.real_path(path) {
            Ok((real, None)) => Some(real),
            _ => None,
        }
    }

    /// A symlink to a directory: merged /usr makes `/bin`, which packages
    /// list as a directory, a link to `usr/bin`.
    fn is_dir_link(&self, real: &[u8], kind: Option<Kind>) -> bool {
        if kind != Some(Kind::Symlink) {
            return false;
        }
        match self.m.resolve_dir(real) {
            Ok(r) if r.blocked.is_none() => {
                r.path.is_empty()
                    || self
                        .m
                        .nodes
                        .get(&r.path[..])
                        .is_some_and(|n| self.m.entry(*n).kind().is_dir())
            }
            _ => false,
        }
    }

    /// The kind of what is at `real` once the filter is done.
    fn kind(&self, real: &[u8]) -> Option<Kind> {
        if self.gone.contains(real) {
            return None;
        }
        self.m.nodes.get(real).map(|n| self.m.entry(*n).kind())
    }
}

impl<'a> Merge<'a> {
    /// A regular file's content, if it is at most `limit` bytes.
    fn read_file(&self, path: &[u8], limit: usize) -> Option<Vec<u8>> {
        let n = *self.nodes.get(path)?;
        if n.inode == NO_INODE {
            return None;
        }
        let (l, i) = self.creators[n.inode as usize];
        let layer = &self.layers[l as usize];
        let e = &layer.entries[i as usize];
        if e.kind() != Kind::File || e.size() > limit as u64 {
            return None;
        }
        layer.read_content(e, 0, limit).ok()
    }

    /// Whether the database at `path` can be rewritten: a regular file of
    /// the upper layers that no other path shares.
    fn rewritable(&self, path: &[u8]) -> bool {
        let Some(n) = self.nodes.get(path) else {
            return false;
        };
        if n.inode == NO_INODE || !self.is_upper(*n) {
            return false;
        }
        let (l, _) = self.creators[n.inode as usize];
        (l as usize) >= self.base && self.nodes.values().filter(|o| o.inode == n.inode).count() == 1
    }

    /// The package databases once `removed` is gone: their rewrites, with
    /// what leaves with the packages that are gone added to `removed` and
    /// `stats`.
    pub(super) fn prune_packages(
        &self,
        removed: &mut Removals,
        stats: &mut FilterStats,
    ) -> Vec<Rewrite> {
        let mut out = Vec::new();
        let dpkg = self.rewritable(pkgdb::DPKG_STATUS);
        let apk = self.rewritable(pkgdb::APK_INSTALLED);
        if !dpkg && !apk {
            return out;
        }
        let after = After {
            m: self,
            gone: removed.iter().map(|(p, _)| p.clone()).collect(),
        };
        let mut extra: Vec<SharedPath> = Vec::new();
        if dpkg && let Some(r) = self.prune_dpkg(&after, &mut extra) {
            out.push(r);
        }
        if apk && let Some(r) = self.prune_apk(&after, &mut extra) {
            out.push(r);
        }
        extra.sort();
        extra.dedup();
        for p in extra {
            if after.gone.contains(&p) {
                continue;
            }
            let Some(n) = self.nodes.get(&p) else {
                continue;
            };
            let e = self.entry(*n);
            if e.kind().is_dir() {
                continue;
            }
            let size = if e.kind() == Kind::File { e.size() } else { 0 };
            stats.record(CATEGORY, 1, size);
            removed.push((p, CATEGORY.to_string()));
        }
        removed.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Whether a package with these files is gone (the filter took at
    /// least one of them and only documentation is left), and if so its
    /// leftover documentation (added to `docs`). `files` are root-relative paths as
    /// the database lists them (directories among them).
    fn package_gone<'p>(
        after: &After<'_, '_>,
        files: impl Iterator<Item = &'p [u8]>,
        divert: &dyn Fn(&[u8]) -> Option<Vec<u8>>,
        docs: &mut Vec<SharedPath>,
    ) -> bool {
        let mut listed = false;
        let mut touched = false;
        let mut leftovers = Vec::new();
        for p in files {
            let target = divert(p).unwrap_or_else(|| p.to_vec());
            let Some(real) = after.real(&target) else {
                listed = true;
                continue;
            };
            let before = after
                .m
                .nodes
                .get(&real[..])
                .map(|n| after.m.entry(*n).kind());
            if before.is_some_and(Kind::is_dir) || after.is_dir_link(&real, before) {
                continue;
            }
            listed = true;
            if after.kind(&real).is_none() {
                touched |= after.gone.contains(&real[..]);
                continue;
            }
            if !pkgdb::is_doc(&real) {
                return false;
            }
            // Documentation reached through another package's symlinked
            // directory belongs to that package.
            if real == target {
                leftovers.push(SharedPath::from(real));
            }
        }
        if listed && touched {
            docs.extend(leftovers);
        }
        listed && touched
    }

    fn prune_dpkg(&self, after: &After<'_, 'a>, extra: &mut Vec<SharedPath>) -> Option<Rewrite> {
        let status = self.read_file(pkgdb::DPKG_STATUS, pkgdb::MAX_DB_BYTES)?;
        let records = pkgdb::dpkg_records(&status);
        let diversions = self
            .read_file(pkgdb::DPKG_DIVERSIONS, pkgdb::MAX_DB_BYTES)
            .map(|t| pkgdb::diversions(&t))
            .unwrap_or_default();
        // info/ files by the package they belong to.
        let mut info: HashMap<Vec<u8>, Vec<SharedPath>> = HashMap::new();
        for (path, _) in Self::children(&self.nodes, pkgdb::DPKG_INFO) {
            let (dir, name) = entry::split_parent(path);
            if dir != pkgdb::DPKG_INFO {
                continue;
            }
            if let Some(owner) = pkgdb::info_owner(name) {
                info.entry(owner.to_vec()).or_default().push(path.clone());
            }
        }
        let mut drop = Vec::new();
        let mut gone = Vec::new();
        for r in &records {
            if matches!(r.state.as_str(), "not-installed" | "config-files") {
                continue;
            }
            let keys = [format!("{}:{}", r.name, r.architecture), r.name.clone()];
            let Some((key, list)) = keys.iter().find_map(|k| {
                let mut p = pkgdb::DPKG_INFO.to_vec();
                p.extend_from_slice(format!("/{k}.list").as_bytes());
                self.read_file(&p, pkgdb::MAX_DB_BYTES).map(|l| (k, l))
            }) else {
                continue;
            };
            let divert = |p: &[u8]| -> Option<Vec<u8>> {
                let (to, by) = diversions.get(p)?;
                (by.as_slice() != r.name.as_bytes()).then(|| to.clone())
            };
            let mut docs = Vec::new();
            if !Self::package_gone(after, pkgdb::list_paths(&list), &divert, &mut docs) {
                continue;
            }
            extra.extend(docs);
            extra.extend(info.get(key.as_bytes()).into_iter().flatten().cloned());
            drop.push(r.span.clone());
            gone.push(gone_package("dpkg", r));
        }
        rewrite(pkgdb::DPKG_STATUS, &status, drop, gone)
    }

    fn prune_apk(&self, after: &After<'_, 'a>, extra: &mut Vec<SharedPath>) -> Option<Rewrite> {
        let installed = self.read_file(pkgdb::APK_INSTALLED, pkgdb::MAX_DB_BYTES)?;
        let records = pkgdb::apk_records(&installed);
        let mut drop = Vec::new();
        let mut gone = Vec::new();
        for r in &records {
            let mut docs = Vec::new();
            let files = r.files.iter().map(Vec::as_slice);
            if !Self::package_gone(after, files, &|_| None, &mut docs) {
                continue;
            }
            extra.extend(docs);
            drop.push(r.span.clone());
            gone.push(gone_package("apk", r));
        }
        rewrite(pkgdb::APK_INSTALLED, &installed, drop, gone)
    }
}

fn gone_package(manager: &'static str, r: &Record) -> GonePackage {
    GonePackage {
        manager,
        name: r.name.clone(),
        architecture: r.architecture.clone(),
        version: r.version.clone(),
    }
}

fn rewrite(
    path: &[u8],
    text: &[u8],
    drop: Vec<std::ops::Range<usize>>,
    gone: Vec<GonePackage>,
) -> Option<Rewrite> {
    if gone.is_empty() {
        return None;
    }
    Some(Rewrite {
        path: SharedPath::from(path),
        content: Arc::from(pkgdb::without(text, &drop)),
        gone,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::super::tests::{Spec, indexes};
    use super::*;
    use crate::transform::filter::PathFilter;

    const DIR: tar::EntryType = tar::EntryType::Directory;
    const FILE: tar::EntryType = tar::EntryType::Regular;
    const SYM: tar::EntryType = tar::EntryType::Symlink;

    /// Removes the paths it lists, as the category "test".
    struct Remove(&'static [&'static str]);

    impl PathFilter for Remove {
        fn remove(&self, path: &[u8], _: Kind) -> Option<&str> {
            self.0
                .iter()
                .any(|p| p.as_bytes() == path)
                .then_some("test")
        }
    }

    const STATUS: &str = "Package: a\nStatus: install ok installed\nVersion: 1\n\n\
Package: b\nStatus: install ok installed\nArchitecture: amd64\nMulti-Arch: same\nVersion: 2\n\n\
Package: c\nStatus: install ok installed\nVersion: 3\n\n\
Package: d\nStatus: install ok installed\nVersion: 4\n\n\
Package: e\nStatus: install ok installed\nVersion: 5\n\n\
Package: f\nStatus: deinstall ok config-files\nVersion: 6\n";

    /// The files of the dpkg test image and what `Remove` takes away:
    /// `a` loses its program (its copyright stays by itself), `b` keeps
    /// one of its two files, `c` lists `/bin/c` through the merged-/usr
    /// symlink, `e` diverted `d`'s `/usr/bin/d` and loses its own file at
    /// that path while `d`'s diverted file stays, `f` left only its
    /// configuration.
    fn dpkg_image() -> Vec<Spec<'static>> {
        vec![
            ("usr/", DIR, "", b""),
            ("usr/bin/", DIR, "", b""),
            ("usr/lib/", DIR, "", b""),
            ("bin", SYM, "usr/bin", b""),
            ("usr/bin/a-tool", FILE, "", b"a"),
            ("usr/share/doc/a/copyright", FILE, "", b"a licence"),
            ("usr/bin/b-tool", FILE, "", b"b"),
            ("usr/lib/b.so", FILE, "", b"b lib"),
            ("usr/share/doc/b/copyright", FILE, "", b"b licence"),
            ("usr/bin/c", FILE, "", b"c"),
            ("usr/bin/d.distrib", FILE, "", b"d"),
            ("usr/bin/d", FILE, "", b"e's d"),
            ("var/lib/dpkg/info/", DIR, "", b""),
            ("var/lib/dpkg/status", FILE, "", STATUS.as_bytes()),
            ("var/lib/dpkg/status-old", FILE, "", STATUS.as_bytes()),
            ("var/lib/dpkg/diversions", FILE, "", b"/usr/bin/d\n/usr/bin/d.distrib\ne\n"),
            (
                "var/lib/dpkg/info/a.list",
                FILE,
                "",
                b"/.\n/usr\n/usr/bin\n/usr/bin/a-tool\n/usr/share/doc/a\n/usr/share/doc/a/copyright\n",
            ),
            ("var/lib/dpkg/info/a.md5sums", FILE, "", b"x  usr/bin/a-tool\n"),
            (
                "var/lib/dpkg/info/b:amd64.list",
                FILE,
                "",
                b"/usr/bin/b-tool\n/usr/lib/b.so\n/usr/share/doc/b/copyright\n",
            ),
            ("var/lib/dpkg/info/c.list", FILE, "", b"/bin\n/bin/c\n"),
            ("var/lib/dpkg/info/d.list", FILE, "", b"/usr/bin/d\n"),
            ("var/lib/dpkg/info/e.list", FILE, "", b"/usr/bin/d\n"),
        ]
    }

    const REMOVED: &[&str] = &["usr/bin/a-tool", "usr/lib/b.so", "usr/bin/c", "usr/bin/d"];

    fn stanzas_of(names: &[&str]) -> String {
        STATUS
            .split_inclusive("\n\n")
            .filter(|s| {
                names
                    .iter()
                    .any(|n| s.starts_with(&format!("Package: {n}\n")))
            })
            .collect()
    }

    #[test]
    fn packages_whose_files_are_all_gone_leave_dpkg_status_with_their_info_files() {
        let image = dpkg_image();
        let idx = indexes(&[&image[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let (removed, stats, rewrites) = merged.m.decide(&Remove(REMOVED));
        assert_eq!(rewrites.len(), 1);
        let r = &rewrites[0];
        assert_eq!(&r.path[..], b"var/lib/dpkg/status");
        let gone: Vec<&str> = r.gone.iter().map(|g| g.name.as_str()).collect();
        assert_eq!(gone, ["a", "c", "e"]);
        assert_eq!(r.gone[0].version, "1");
        assert_eq!(
            std::str::from_utf8(&r.content).unwrap(),
            stanzas_of(&["b", "d", "f"])
        );
        let with_package: Vec<String> = removed
            .iter()
            .filter(|(_, c)| c == CATEGORY)
            .map(|(p, _)| String::from_utf8_lossy(p).into_owned())
            .collect();
        assert_eq!(
            with_package,
            [
                "usr/share/doc/a/copyright",
                "var/lib/dpkg/info/a.list",
                "var/lib/dpkg/info/a.md5sums",
                "var/lib/dpkg/info/c.list",
                "var/lib/dpkg/info/e.list",
            ]
        );
        let c = stats.by_category[CATEGORY];
        assert_eq!(c.files, 5);
        let listed: u64 = [
            "a licence",
            "/.\n/usr\n/usr/bin\n/usr/bin/a-tool\n/usr/share/doc/a\n/usr/share/doc/a/copyright\n",
            "x  usr/bin/a-tool\n",
            "/bin\n/bin/c\n",
            "/usr/bin/d\n",
        ]
        .iter()
        .map(|s| s.len() as u64)
        .sum();
        assert_eq!(c.bytes, listed);
    }

    #[test]
    fn the_squashed_layer_holds_the_rewritten_status_and_not_a_link_to_its_twin() {
        let image = dpkg_image();
        let idx = indexes(&[&image[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let (plan, stats) = merged.squash(true, &Remove(REMOVED));
        let names: Vec<&str> = stats
            .packages_gone
            .iter()
            .map(|g| g.name.as_str())
            .collect();
        assert_eq!(names, ["a", "c", "e"]);
        let mut tar = Vec::new();
        crate::layer::write::write_plan(&mut tar, &plan, &idx).unwrap();
        let mut files = std::collections::BTreeMap::new();
        for e in tar::Archive::new(&tar[..]).entries().unwrap() {
            let mut e = e.unwrap();
            let path = e.path().unwrap().to_string_lossy().into_owned();
            let kind = e.header().entry_type();
            let mut s = String::new();
            e.read_to_string(&mut s).unwrap();
            files.insert(path, (kind, s));
        }
        assert_eq!(
            files["var/lib/dpkg/status"],
            (FILE, stanzas_of(&["b", "d", "f"]))
        );
        // The old copy (identical before the rewrite) keeps its own bytes.
        assert_eq!(files["var/lib/dpkg/status-old"], (FILE, STATUS.to_string()));
        assert!(files.contains_key("var/lib/dpkg/info/b:amd64.list"));
        assert!(files.contains_key("var/lib/dpkg/info/d.list"));
        assert!(!files.contains_key("var/lib/dpkg/info/a.list"));
        assert!(!files.contains_key("usr/share/doc/a/copyright"));
        assert!(files.contains_key("usr/share/doc/b/copyright"));
    }

    #[test]
    fn nothing_gone_leaves_the_database_untouched() {
        let image = dpkg_image();
        let idx = indexes(&[&image[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let (_, stats, rewrites) = merged.m.decide(&Remove(&["usr/lib/b.so"]));
        assert!(rewrites.is_empty());
        assert!(!stats.by_category.contains_key(CATEGORY));
    }

    #[test]
    fn a_status_file_in_a_kept_base_is_left_alone() {
        let image = dpkg_image();
        let upper: Vec<Spec<'static>> = vec![("srv/", DIR, "", b"")];
        let idx = indexes(&[&image[..], &upper[..]]);
        let merged = super::super::merge(&idx, 1).unwrap();
        let (_, _, rewrites) = merged.m.decide(&Remove(REMOVED));
        assert!(rewrites.is_empty());
    }

    #[test]
    fn apk_packages_whose_files_are_all_gone_leave_installed() {
        let db = "P:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\n\n\
P:curl\nV:8.5.0-r0\nA:x86_64\nF:usr/bin\nR:curl\nF:usr/share/licenses/curl\nR:COPYING\n\n";
        let image: Vec<Spec<'_>> = vec![
            ("lib/ld-musl-x86_64.so.1", FILE, "", b"musl"),
            ("usr/bin/curl", FILE, "", b"curl"),
            ("usr/share/licenses/curl/COPYING", FILE, "", b"licence"),
            ("lib/apk/db/installed", FILE, "", db.as_bytes()),
        ];
        let idx = indexes(&[&image[..]]);
        let merged = super::super::merge(&idx, 0).unwrap();
        let (removed, _, rewrites) = merged.m.decide(&Remove(&["usr/bin/curl"]));
        assert_eq!(rewrites.len(), 1);
        assert_eq!(rewrites[0].gone[0].manager, "apk");
        assert_eq!(rewrites[0].gone[0].name, "curl");
        assert_eq!(
            std::str::from_utf8(&rewrites[0].content).unwrap(),
            "P:musl\nV:1.2.4-r2\nA:x86_64\nF:lib\nR:ld-musl-x86_64.so.1\n\n"
        );
        assert!(
            removed
                .iter()
                .any(|(p, c)| &p[..] == b"usr/share/licenses/curl/COPYING" && c == CATEGORY)
        );
    }
}
