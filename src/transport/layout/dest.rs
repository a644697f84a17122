//! Writing an `oci:` layout directory: blobs renamed into place as they
//! arrive, `index.json` replaced atomically under the layout's lock in
//! [`Dest::commit`], and what a failed run added removed again.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use super::{REF_NAME, blob_path, in_layout};
use crate::cleanup::{self, DirLock, StagingDir};
use crate::digest::Digest;
use crate::image::{Descriptor, Manifest};
use crate::transport::{Capabilities, Dest, Staged};

/// The prefix of the staging directories slim makes inside a layout.
const STAGING_PREFIX: &str = ".slim-staging-";

/// Writes an image into an OCI layout directory.
///
/// Several runs may write into one layout at once (each its own tag): the
/// layout is created once, each run stages in its own locked directory, and
/// `index.json` is rewritten under an exclusive lock of the layout
/// directory. A run that fails or is stopped removes what it added that
/// nothing else uses, and the directories it created.
pub struct LayoutDest {
    dir: PathBuf,
    tag: Option<String>,
    undo: Arc<Undo>,
    staging: StagingDir,
    /// Undoes this run's writes if the run is stopped; dropped at commit.
    on_stop: Mutex<Option<cleanup::Guard>>,
    /// Docker v2s2 images are converted to OCI media types (the OCI image
    /// layout spec); off for slim's private staging layout, which passes
    /// an image on as it was made.
    oci_only: bool,
}

/// What a run into a layout did, to be undone if it does not commit.
struct Undo {
    dir: PathBuf,
    /// The topmost directory this run created (`dir` or one of its
    /// ancestors); `None` if `dir` existed.
    created_from: Option<PathBuf>,
    /// `dir` held no image when the run began (it was new, empty, or held
    /// only what an earlier, killed slim run left there).
    fresh: bool,
    staging: PathBuf,
    /// Blob files this run put in place (they were not there before).
    added: Mutex<Vec<PathBuf>>,
}

impl Undo {
    fn run(&self) {
        let Ok(lock) = DirLock::exclusive(&self.dir) else {
            return;
        };
        cleanup::remove_tree(&self.staging);
        // Another run writing here may be using the blobs this one added
        // (it found them present and did not write its own copy).
        if live_staging(&self.dir) {
            return;
        }
        let added = std::mem::take(&mut *self.added.lock().unwrap_or_else(|e| e.into_inner()));
        if self.fresh && !self.dir.join("index.json").exists() {
            // Nothing names anything here: everything in it is a slim run's.
            if let Ok(entries) = fs::read_dir(&self.dir) {
                for e in entries.flatten() {
                    let _ = match e.file_type() {
                        Ok(t) if t.is_dir() => fs::remove_dir_all(e.path()),
                        _ => fs::remove_file(e.path()),
                    };
                }
            }
            drop(lock);
            if let Some(top) = &self.created_from {
                remove_created_dirs(&self.dir, top);
            }
            return;
        }
        // An image is named here: keep what it uses, remove what only this
        // run added (another run may have committed an image that uses it).
        let Ok(reachable) = reachable_blobs(&self.dir) else {
            return;
        };
        for path in added {
            if !reachable.contains(&path) {
                let _ = fs::remove_file(&path);
            }
        }
    }
}

/// Removes `dir` and its ancestors up to `top`, each only if empty.
fn remove_created_dirs(dir: &Path, top: &Path) {
    let mut d = Some(dir);
    while let Some(p) = d {
        if fs::remove_dir(p).is_err() || p == top {
            break;
        }
        d = p.parent();
    }
}

/// The topmost of `dir` and its ancestors that does not exist.
fn topmost_missing(dir: &Path) -> Option<PathBuf> {
    let mut missing = None;
    for a in dir.ancestors() {
        if a.as_os_str().is_empty() || a.exists() {
            break;
        }
        missing = Some(a.to_path_buf());
    }
    missing
}

/// Whether any run is staging in `dir` now.
fn live_staging(dir: &Path) -> bool {
    fs::read_dir(dir).into_iter().flatten().flatten().any(|e| {
        e.file_name().to_string_lossy().starts_with(STAGING_PREFIX) && cleanup::is_held(&e.path())
    })
}

/// Every blob file that `index.json` reaches (manifests, indexes, configs,
/// layers), as paths.
fn reachable_blobs(dir: &Path) -> Result<HashSet<PathBuf>> {
    let index = Manifest::parse(
        "index.json",
        fs::read(dir.join("index.json"))?,
        Some(crate::image::media::OCI_INDEX),
    )?;
    let mut seen = HashSet::new();
    let mut todo = index.manifests()?;
    while let Some(d) = todo.pop() {
        let path = dir.join(blob_path(&d.digest));
        if !seen.insert(path.clone()) {
            continue;
        }
        if crate::image::media::is_manifest_type(&d.media_type)
            && let Ok(bytes) = fs::read(&path)
            && let Ok(m) = Manifest::parse("manifest", bytes, Some(&d.media_type))
        {
            todo.extend(m.manifests()?);
            todo.extend(m.blobs()?);
        }
    }
    Ok(seen)
}

impl LayoutDest {
    /// A private layout that keeps Docker v2s2 media types as they come
    /// (containers/image and skopeo read such layouts too), so an image
    /// staged in it is passed on unchanged.
    pub fn keeping_media_types(mut self) -> LayoutDest {
        self.oci_only = false;
        self
    }

    pub fn create(dir: &Path, tag: Option<String>) -> Result<LayoutDest> {
        if dir.exists() && !dir.is_dir() {
            bail!("{} exists and is not a directory", dir.display());
        }
        let created_from = topmost_missing(dir);
        {
            let _permit = cleanup::permit()?;
            fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let undo_dirs = |e: anyhow::Error| {
            if let Some(top) = &created_from {
                remove_created_dirs(dir, top);
            }
            e
        };
        let lock = DirLock::exclusive(dir)
            .with_context(|| format!("locking {}", dir.display()))
            .map_err(undo_dirs)?;
        // Left by runs that were killed: nobody holds them.
        cleanup::sweep_stale(dir, STAGING_PREFIX);
        let fresh = match layout_state(dir)? {
            State::Layout => false,
            State::Fresh => true,
            State::Foreign => {
                drop(lock);
                bail!(
                    "{} is a non-empty directory that is not an OCI layout; choose a new or empty directory",
                    dir.display()
                );
            }
        };
        let staging = StagingDir::create_in(dir, STAGING_PREFIX, false)
            .with_context(|| format!("creating a staging directory in {}", dir.display()))
            .map_err(undo_dirs)?;
        drop(lock);
        let undo = Arc::new(Undo {
            dir: dir.to_path_buf(),
            created_from,
            fresh,
            staging: staging.path().to_path_buf(),
            added: Mutex::new(Vec::new()),
        });
        let on_stop = cleanup::on_stop({
            let undo = undo.clone();
            move || undo.run()
        });
        Ok(LayoutDest {
            oci_only: true,
            dir: dir.to_path_buf(),
            tag,
            undo,
            staging,
            on_stop: Mutex::new(Some(on_stop)),
        })
    }

    fn blob_file(&self, d: &Digest) -> PathBuf {
        self.dir.join(blob_path(d))
    }

    fn write_blob_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<()> {
        let target = self.blob_file(d);
        if target.is_file() {
            return Ok(());
        }
        let mut tmp = tempfile::NamedTempFile::new_in(self.staging.path())?;
        tmp.write_all(bytes)?;
        self.place(tmp, &target)
    }

    /// Renames a finished temp file into place (a blob, or `index.json`).
    fn place(&self, tmp: tempfile::NamedTempFile, target: &Path) -> Result<()> {
        tmp.as_file().sync_all()?;
        let mut tmp = tmp;
        set_readable(&mut tmp)?;
        let _permit = cleanup::permit()?;
        fs::create_dir_all(target.parent().expect("blob paths have parents"))?;
        let existed = target.exists();
        tmp.persist(target)
            .map_err(|e| e.error)
            .with_context(|| format!("writing {}", target.display()))?;
        if !existed && target.starts_with(self.dir.join("blobs")) {
            self.undo
                .added
                .lock()
                .expect("added lock")
                .push(target.to_path_buf());
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

enum State {
    /// Holds `index.json`.
    Layout,
    /// New, empty, or only what slim runs put there (blobs, `oci-layout`,
    /// live staging directories).
    Fresh,
    /// Anything else.
    Foreign,
}

fn layout_state(dir: &Path) -> Result<State> {
    let mut state = State::Fresh;
    for e in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = e?.file_name();
        let name = name.to_string_lossy();
        match name.as_ref() {
            "index.json" => return Ok(State::Layout),
            "blobs" | "oci-layout" => {}
            n if n.starts_with(STAGING_PREFIX) => {}
            _ => state = State::Foreign,
        }
    }
    Ok(state)
}

/// Temp files are created 0600; blobs in a layout are world-readable.
pub(super) fn set_readable(tmp: &mut tempfile::NamedTempFile) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
    Ok(())
}

impl Dest for LayoutDest {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci:{}:{t}", self.dir.display()),
            None => format!("oci:{}", self.dir.display()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oci_only: self.oci_only,
            ..Capabilities::default()
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> crate::transport::Result<bool> {
        Ok(fs::metadata(self.blob_file(&desc.digest))
            .is_ok_and(|m| m.is_file() && m.len() == desc.size))
    }

    fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> crate::transport::Result<()> {
        in_layout(|| {
            debug_assert_eq!(blob.digest, desc.digest);
            self.place(blob.file, &self.blob_file(&blob.digest))
        })
    }

    fn put_manifest(&self, m: &Manifest) -> crate::transport::Result<()> {
        in_layout(|| self.write_blob_bytes(&m.digest, &m.bytes))
    }

    fn commit(&self, root: &Manifest) -> crate::transport::Result<()> {
        in_layout(|| {
            self.put_manifest(root)?;
            // Other runs may rewrite index.json at the same time (other tags).
            let _lock = DirLock::exclusive(&self.dir)
                .with_context(|| format!("locking {}", self.dir.display()))?;
            let index_path = self.dir.join("index.json");
            let mut index: Value = if index_path.is_file() {
                serde_json::from_slice(&fs::read(&index_path)?)
                    .with_context(|| format!("{} is not JSON", index_path.display()))?
            } else {
                json!({"schemaVersion": 2, "mediaType": crate::image::media::OCI_INDEX, "manifests": []})
            };
            let entries = index
                .get_mut("manifests")
                .and_then(Value::as_array_mut)
                .with_context(|| format!("{} has no manifests array", index_path.display()))?;
            // The name moves to the new image (an untagged write replaces the
            // untagged entries).
            entries.retain(|e| {
                let name = e
                    .get("annotations")
                    .and_then(|a| a.get(REF_NAME))
                    .and_then(Value::as_str);
                name != self.tag.as_deref()
            });
            let mut entry = json!({
                "mediaType": root.media_type,
                "digest": root.digest.to_string(),
                "size": root.bytes.len(),
            });
            if let Some(t) = &self.tag {
                entry["annotations"] = json!({ REF_NAME: t });
            }
            entries.push(entry);
            let layout = self.dir.join("oci-layout");
            if !layout.is_file() {
                let mut tmp = tempfile::NamedTempFile::new_in(self.staging.path())?;
                tmp.write_all(br#"{"imageLayoutVersion":"1.0.0"}"#)?;
                self.place(tmp, &layout)?;
            }
            let mut tmp = tempfile::NamedTempFile::new_in(self.staging.path())?;
            serde_json::to_writer(&mut tmp, &index)?;
            self.place(tmp, &index_path)?;
            // Named: nothing to undo any more.
            self.on_stop.lock().expect("guard lock").take();
            Ok(())
        })
    }

    fn abort(&self) {
        self.on_stop.lock().expect("guard lock").take();
        self.undo.run();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn staged(dest: &LayoutDest, bytes: &[u8]) -> (Descriptor, Staged) {
        let digest = Digest::sha256_of(bytes);
        let mut file = tempfile::NamedTempFile::new_in(dest.staging_dir()).unwrap();
        file.write_all(bytes).unwrap();
        let desc = Descriptor::new(
            crate::image::media::OCI_LAYER_GZIP,
            digest.clone(),
            bytes.len() as u64,
        );
        let size = bytes.len() as u64;
        (desc, Staged { file, digest, size })
    }

    /// Regression: a failed copy into an existing empty directory left
    /// `blobs/` behind without `index.json`, and the next run was refused as
    /// "a non-empty directory that is not an OCI layout".
    #[test]
    fn abort_empties_a_directory_that_was_empty() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        fs::create_dir(&dir).unwrap();
        let dest = LayoutDest::create(&dir, Some("v1".into())).unwrap();
        let (desc, blob) = staged(&dest, b"layer bytes");
        dest.put_blob(&desc, blob).unwrap();
        assert!(dir.join("blobs").is_dir());
        dest.abort();
        drop(dest);
        assert_eq!(fs::read_dir(&dir).unwrap().count(), 0, "directory emptied");
        LayoutDest::create(&dir, Some("v1".into())).expect("a retry may use the directory");
    }

    #[test]
    fn abort_keeps_an_existing_layout() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("out");
        fs::create_dir(&dir).unwrap();
        fs::write(
            dir.join("index.json"),
            br#"{"schemaVersion":2,"manifests":[]}"#,
        )
        .unwrap();
        let dest = LayoutDest::create(&dir, Some("v1".into())).unwrap();
        dest.abort();
        drop(dest);
        assert!(dir.join("index.json").is_file());
    }
}
