//! Auto-detection (`--profile auto`): which profiles apply to an image,
//! from its merged tree: the distribution named by os-release, and the
//! runtimes whose paths exist.

use super::{Profile, glob_set};
use crate::transform::tree::{TreeView, resolve};

/// The profiles `--profile auto` picks for a tree: `always` ones, those
/// whose OS ID matches /etc/os-release, and those whose paths exist.
pub fn detect<'a>(candidates: &'a [Profile], tree: &dyn TreeView) -> Vec<&'a Profile> {
    let os = os_release_ids(tree);
    let mut picked = Vec::new();
    for p in candidates {
        let by_os = p.detect_os.iter().any(|id| os.iter().any(|o| o == id));
        let by_path = !p.detect_paths.is_empty() && {
            let set = glob_set(&p.detect_paths);
            tree.paths()
                .any(|path| set.is_match(&*String::from_utf8_lossy(path)))
        };
        if p.detect_always || by_os || by_path {
            picked.push(p);
        }
    }
    picked
}

/// ID and ID_LIKE of /etc/os-release (or /usr/lib/os-release).
pub fn os_release_ids(tree: &dyn TreeView) -> Vec<String> {
    let text = ["etc/os-release", "usr/lib/os-release"]
        .iter()
        .find_map(|p| {
            let (real, _) = resolve(tree, p.as_bytes())?;
            tree.read(&real, 64 << 10)
        });
    let Some(text) = text else { return Vec::new() };
    let mut ids = Vec::new();
    for line in String::from_utf8_lossy(&text).lines() {
        if let Some((k, v)) = line.split_once('=')
            && (k == "ID" || k == "ID_LIKE")
        {
            let v = v.trim().trim_matches('"').trim_matches('\'');
            ids.extend(v.split_whitespace().map(str::to_string));
        }
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transform::tree::testing::MemTree;

    #[test]
    fn os_release_ids_follow_links_and_split_id_like() {
        let t = MemTree::default()
            .link("etc/os-release", "../usr/lib/os-release")
            .file(
                "usr/lib/os-release",
                0o644,
                b"ID=debian\nID_LIKE=\"ubuntu foo\"\n",
            );
        assert_eq!(os_release_ids(&t), vec!["debian", "ubuntu", "foo"]);
    }
}
