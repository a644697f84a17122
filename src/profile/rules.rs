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
    /// Decides every path of `tree`: two walks of its paths, nothing per
    /// path kept but the decisions (a million-path tree is not copied).
    pub(super) fn decide_all(&mut self, tree: &dyn TreeView) {
        let mut decisions = HashMap::new();
        let mut saved = Vec::new();
        for path in tree.paths() {
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
        // goes (paths are sorted: a directory's subtree follows it). The
        // directories whose subtree is being walked are a stack, each with
        // its category and whether all below it went so far.
        if !self.rules.dirs.is_empty() {
            let kept = |p: &[u8]| {
                self.rules.keep.is_match(&*String::from_utf8_lossy(p))
                    || self.safe.reason(p).is_some()
            };
            let mut open: Vec<(&[u8], String, bool)> = Vec::new();
            let close = |open: &mut Vec<(&[u8], String, bool)>,
                         decisions: &mut HashMap<Vec<u8>, String>| {
                let (dir, cat, all_gone) = open.pop().expect("an open directory");
                if all_gone {
                    decisions.insert(dir.to_vec(), cat);
                } else if let Some(parent) = open.last_mut() {
                    // What stays below this directory stays below its parent.
                    parent.2 = false;
                }
            };
            for path in tree.paths() {
                // (The root is never open: a directory here is not empty.)
                let below = |dir: &[u8]| {
                    path.len() > dir.len() && path.starts_with(dir) && path[dir.len()] == b'/'
                };
                while open.last().is_some_and(|(dir, _, _)| !below(dir)) {
                    close(&mut open, &mut decisions);
                }
                let is_dir = tree.kind(path) == Some(Kind::Dir);
                if let Some(top) = open.last_mut() {
                    // A directory below goes with this one, unless it is
                    // kept itself.
                    let gone = (is_dir && !kept(path)) || decisions.contains_key(path);
                    top.2 &= gone;
                }
                // The root always stays.
                if path.is_empty() || !is_dir || kept(path) {
                    continue;
                }
                let s = String::from_utf8_lossy(path);
                if let Some((cat, _)) = self.rules.dirs.iter().find(|(_, set)| set.is_match(&*s)) {
                    open.push((path, cat.clone(), true));
                }
            }
            while !open.is_empty() {
                close(&mut open, &mut decisions);
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
