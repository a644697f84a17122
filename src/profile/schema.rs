//! The profile file format (TOML, `deny_unknown_fields`): a name, a
//! description, profiles it extends, when `--profile auto` picks it, and
//! rules (a category, globs to remove, globs to keep).
//!
//! ```toml
//! name = "debian"
//! description = "apt lists, docs, ..."
//! extends = ["base"]
//!
//! [detect]
//! os_release_ids = ["debian"]     # ID or ID_LIKE in /etc/os-release
//! paths = ["usr/bin/python3*"]    # or any of these paths exists
//!
//! [[rule]]
//! category = "docs"
//! remove = ["usr/share/doc/**"]
//! keep = ["usr/share/doc/*/copyright"]
//! dirs = false                    # true: matching directories go too
//! ```
//!
//! Globs match paths without a leading `/` (one is accepted and dropped);
//! `*` stays within one path component, `**` crosses them.

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    pub name: String,
    pub description: String,
    #[serde(default)]
    pub extends: Vec<String>,
    #[serde(default)]
    pub detect: Detect,
    /// Remove node_modules packages a package-lock.json marks `"dev": true`.
    #[serde(default)]
    pub prune_dev_dependencies: bool,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Detect {
    /// Always part of `--profile auto`.
    #[serde(default)]
    pub always: bool,
    /// Picked when /etc/os-release's ID or ID_LIKE names one of these.
    #[serde(default)]
    pub os_release_ids: Vec<String>,
    /// Picked when any path in the image matches one of these globs.
    #[serde(default)]
    pub paths: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    pub category: String,
    /// Directories the remove globs match go too, with everything in them
    /// (only when nothing inside is kept). Off by default: package
    /// managers expect their directories, even empty.
    #[serde(default)]
    pub dirs: bool,
    #[serde(default)]
    pub remove: Vec<String>,
    #[serde(default)]
    pub keep: Vec<String>,
}
