//! Matching: the rules of the profiles in effect, compiled for one image
//! into a [`CompiledFilter`] that decides, per path, whether it goes and
//! under which category, with the image's safety keeps holding what the
//! program needs.

use std::collections::{BTreeMap, HashMap};

use globset::GlobSet;

use super::safety;
use crate::layer::entry::Kind;
use crate::transform::filter::PathFilter;
use crate::transform::tree::TreeView;

/// The rules of the profiles in effect.
pub(super) struct Rules {
    pub(super) remove: Vec<(String, GlobSet)>,
    /// Rules that remove matching directories too.
    pub(super) dirs: Vec<(String, GlobSet)>,
    pub(super) keep: GlobSet,
    /// `node_modules` folders of dev-only packages.
    pub(super) dev_dependencies: BTreeMap<Vec<u8>, String>,
}

impl Rules {
    /// The category of the first rule removing `path`, unless a keep glob
    /// holds it.
    pub(super) fn category(&self, path: &[u8]) -> Option<&str> {
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
    pub(super) rules: Rules,
    pub(super) safe: safety::SafetyKeeps,
    /// Path -> category, for every removed path of the merged tree.
    pub(super) decisions: HashMap<Vec<u8>, String>,
    /// Paths a rule would remove that a safety keep saved, with the reason.
    pub kept_by_safety: Vec<(String, String)>,
}

impl CompiledFilter {
    pub(super) fn decide_all(&mut self, tree: &dyn TreeView) {
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
                // The root always stays.
                if dir.is_empty() || tree.kind(dir) != Some(Kind::Dir) {
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
                    .all(|p| {
                        // A directory below goes with this one, unless it
                        // is kept itself.
                        let kept_dir = || {
                            self.rules.keep.is_match(&*String::from_utf8_lossy(p))
                                || self.safe.reason(p).is_some()
                        };
                        (tree.kind(p) == Some(Kind::Dir) && !kept_dir())
                            || decisions.contains_key(*p)
                    });
                if all_gone {
                    decisions.insert(dir.to_vec(), cat.clone());
                }
            }
        }
        self.decisions = decisions;
        self.kept_by_safety = saved;
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

    fn kept_by_safety(&self, path: &[u8]) -> bool {
        !self.decisions.contains_key(path)
            && self.safe.reason(path).is_some()
            && self.rules.category(path).is_some()
    }
}
