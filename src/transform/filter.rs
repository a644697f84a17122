//! Filter: the predicate that decides which paths leave the image, and the
//! counts of what it removed, by category. Profiles (`profile/`) implement
//! [`PathFilter`]; [`KeepAll`] removes nothing.

use std::collections::BTreeMap;

use crate::layer::entry::Kind;

/// Decides, per path, whether it is removed and under which category.
pub trait PathFilter: Sync {
    /// `Some(category)` removes the path (a directory with everything below
    /// it); `None` keeps it. Paths are normalised (no leading `/`).
    fn remove(&self, path: &[u8], kind: Kind) -> Option<&str>;

    /// A rule would remove `path`, but a safety keep saves it (reports
    /// colour it apart).
    fn kept_by_safety(&self, _path: &[u8]) -> bool {
        false
    }
}

/// Removes nothing (`--profile none`).
pub struct KeepAll;

impl PathFilter for KeepAll {
    fn remove(&self, _: &[u8], _: Kind) -> Option<&str> {
        None
    }
}

/// Files and bytes removed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Count {
    pub files: u64,
    pub bytes: u64,
}

impl Count {
    pub fn add(&mut self, files: u64, bytes: u64) {
        self.files += files;
        self.bytes += bytes;
    }
}

/// What the filter removed, per category.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct FilterStats {
    pub by_category: BTreeMap<String, Count>,
}

impl FilterStats {
    pub fn record(&mut self, category: &str, files: u64, bytes: u64) {
        self.by_category
            .entry(category.to_string())
            .or_default()
            .add(files, bytes);
    }

    pub fn total(&self) -> Count {
        let mut t = Count::default();
        for c in self.by_category.values() {
            t.add(c.files, c.bytes);
        }
        t
    }

    pub fn merge(&mut self, other: &FilterStats) {
        for (k, c) in &other.by_category {
            self.record(k, c.files, c.bytes);
        }
    }
}
