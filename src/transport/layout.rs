//! OCI image layouts (image-layout spec): `oci:DIR[:TAG]` and
//! `oci-archive:FILE[:TAG]`.
//!
//! Reading: `index.json` names images by the `org.opencontainers.image.ref.name`
//! annotation; blobs live at `blobs/<alg>/<hex>`. An archive is read in place
//! through a [`TarIndex`].
//!
//! Writing: blobs are renamed into place as they arrive; `index.json` is
//! replaced atomically in [`Dest::commit`], so the tag appears only when
//! every blob it needs is there. An archive is built as a layout in a temp
//! directory next to the target and renamed over it at the end.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::cleanup::{self, DirLock, StagingDir};

use super::tarindex::TarIndex;
use super::{Capabilities, Dest, Source, Staged, read_manifest_blob};
use crate::digest::Digest;
use crate::image::{Descriptor, MAX_MANIFEST_BYTES, Manifest};

pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// Files of a layout: a directory or a tar of one.
enum Files {
    Dir(PathBuf),
    Tar(TarIndex),
}

impl Files {
    fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>> {
        match self {
            Files::Dir(d) => {
                let p = d.join(name);
                let f = fs::File::open(&p).with_context(|| format!("reading {}", p.display()))?;
                let mut out = Vec::new();
                f.take(limit + 1).read_to_end(&mut out)?;
                if out.len() as u64 > limit {
                    bail!(
                        "{} is larger than the {limit} bytes slim accepts",
                        p.display()
                    );
                }
                Ok(out)
            }
            Files::Tar(t) => t.read(name, limit),
        }
    }

    fn open(&self, name: &str) -> Result<Box<dyn Read + Send + '_>> {
        Ok(match self {
            Files::Dir(d) => {
                let p = d.join(name);
                Box::new(io::BufReader::with_capacity(
                    256 << 10,
                    fs::File::open(&p).with_context(|| format!("opening {}", p.display()))?,
                ))
            }
            Files::Tar(t) => Box::new(io::BufReader::with_capacity(256 << 10, t.open(name)?)),
        })
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Files::Dir(d) => d.join(name).is_file(),
            Files::Tar(t) => t.contains(name),
        }
    }
}

fn blob_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().name(), d.hex())
}

/// Reads an image from an OCI layout directory or archive.
pub struct LayoutSource {
    files: Files,
    location: String,
    tag: Option<String>,
}

impl LayoutSource {
    pub fn open_dir(path: &Path, tag: Option<String>) -> Result<LayoutSource> {
        if !path.is_dir() {
            // The caller's context names the reference, path and all.
            bail!("no such directory (an OCI layout is a directory with index.json)");
        }
        let s = LayoutSource {
            files: Files::Dir(path.to_path_buf()),
            location: format!("oci:{}", path.display()),
            tag,
        };
        s.check_layout()?;
        Ok(s)
    }

    pub fn open_archive(path: &Path, tag: Option<String>) -> Result<LayoutSource> {
        if !path.is_file() {
            bail!("no such file");
        }
        let s = LayoutSource {
            files: Files::Tar(TarIndex::build(path)?),
            location: format!("oci-archive:{}", path.display()),
            tag,
        };
        s.check_layout()?;
        Ok(s)
    }

    fn check_layout(&self) -> Result<()> {
        if !self.files.exists("index.json") {
            bail!("{}: not an OCI image layout (no index.json)", self.location);
        }
        if self.files.exists("oci-layout") {
            let v: Value = serde_json::from_slice(&self.files.read("oci-layout", 4096)?)
                .with_context(|| format!("{}: oci-layout is not JSON", self.location))?;
            let version = v
                .get("imageLayoutVersion")
                .and_then(Value::as_str)
                .unwrap_or("");
            if !version.starts_with("1.") {
                bail!(
                    "{}: unsupported imageLayoutVersion {version:?}",
                    self.location
                );
            }
        }
        Ok(())
    }

    fn index(&self) -> Result<Vec<Descriptor>> {
        let bytes = self.files.read("index.json", MAX_MANIFEST_BYTES)?;
        let m = Manifest::parse(&format!("{} index.json", self.location), bytes, None)?;
        Ok(m.manifests()?)
    }
}

/// Lists the names in an index.json's entries, for messages.
fn names(entries: &[Descriptor]) -> String {
    let names: Vec<&str> = entries
        .iter()
        .filter_map(|d| d.annotations.get(REF_NAME).map(String::as_str))
        .collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

impl Source for LayoutSource {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("{}:{t}", self.location),
            None => self.location.clone(),
        }
    }

    fn root(&self) -> Result<Manifest> {
        let entries = self.index()?;
        let entry = match &self.tag {
            Some(tag) => entries
                .iter()
                .find(|d| d.annotations.get(REF_NAME) == Some(tag))
                .with_context(|| {
                    format!(
                        "{}: no image tagged {tag:?} (tags: {})",
                        self.location,
                        names(&entries)
                    )
                })?,
            None => match entries.as_slice() {
                [only] => only,
                [] => bail!("{}: the layout holds no image", self.location),
                _ => bail!(
                    "{}: the layout holds {} images; name one with {}:TAG (tags: {})",
                    self.location,
                    entries.len(),
                    self.location,
                    names(&entries)
                ),
            },
        };
        self.manifest(entry)
    }

    fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        let what = format!("manifest {} in {}", desc.digest, self.location);
        let reader = self
            .files
            .open(&blob_path(&desc.digest))
            .with_context(|| format!("{what}: missing from the layout"))?;
        read_manifest_blob(&what, reader, desc)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        self.files
            .open(&blob_path(&desc.digest))
            .with_context(|| format!("blob {} is missing from {}", desc.digest, self.location))
    }
}

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
fn set_readable(tmp: &mut tempfile::NamedTempFile) -> Result<()> {
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
            oci_only: true,
            ..Capabilities::default()
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(fs::metadata(self.blob_file(&desc.digest))
            .is_ok_and(|m| m.is_file() && m.len() == desc.size))
    }

    fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> Result<()> {
        debug_assert_eq!(blob.digest, desc.digest);
        self.place(blob.file, &self.blob_file(&blob.digest))
    }

    fn put_manifest(&self, m: &Manifest) -> Result<()> {
        self.write_blob_bytes(&m.digest, &m.bytes)
    }

    fn commit(&self, root: &Manifest) -> Result<()> {
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
    }

    fn abort(&self) {
        self.on_stop.lock().expect("guard lock").take();
        self.undo.run();
    }
}

/// Writes an image as an OCI archive: a layout built in a temp directory,
/// then a tar of it renamed over the target.
pub struct ArchiveDest {
    target: PathBuf,
    tag: Option<String>,
    /// `.slim-archive-…` next to the target: the layout, then the tar.
    tmp: StagingDir,
    layout: LayoutDest,
}

impl ArchiveDest {
    pub fn create(target: &Path, tag: Option<String>) -> Result<ArchiveDest> {
        let parent = parent_dir(target);
        if !parent.is_dir() {
            bail!("{}: no such directory", parent.display());
        }
        // Sweeping what killed runs left needs the directory's lock, so that
        // another run's new directory is not taken for a stale one.
        let lock = DirLock::exclusive(&parent).ok();
        let tmp = StagingDir::create_in(&parent, ".slim-archive-", lock.is_some())
            .with_context(|| format!("creating a temp directory in {}", parent.display()))?;
        drop(lock);
        let layout = LayoutDest::create(&tmp.path().join("layout"), tag.clone())?;
        Ok(ArchiveDest {
            target: target.to_path_buf(),
            tag,
            tmp,
            layout,
        })
    }
}

pub fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

impl Dest for ArchiveDest {
    fn name(&self) -> String {
        match &self.tag {
            Some(t) => format!("oci-archive:{}:{t}", self.target.display()),
            None => format!("oci-archive:{}", self.target.display()),
        }
    }

    fn capabilities(&self) -> Capabilities {
        self.layout.capabilities()
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        self.layout.has_blob(desc)
    }

    fn staging_dir(&self) -> &Path {
        self.layout.staging_dir()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> Result<()> {
        self.layout.put_blob(desc, blob)
    }

    fn put_manifest(&self, m: &Manifest) -> Result<()> {
        self.layout.put_manifest(m)
    }

    fn commit(&self, root: &Manifest) -> Result<()> {
        self.layout.commit(root)?;
        let mut out = tempfile::NamedTempFile::new_in(self.tmp.path())?;
        {
            let mut builder = tar::Builder::new(io::BufWriter::new(out.as_file_mut()));
            append_tree(&mut builder, self.layout.dir(), Path::new(""))?;
            builder.into_inner()?.flush()?;
        }
        out.as_file().sync_all()?;
        set_readable(&mut out)?;
        let _permit = cleanup::permit()?;
        out.persist(&self.target)
            .map_err(|e| e.error)
            .with_context(|| format!("writing {}", self.target.display()))?;
        Ok(())
    }
}

/// Appends a directory tree to a tar in sorted order with fixed metadata,
/// skipping slim's staging directories.
pub fn append_tree<W: Write>(b: &mut tar::Builder<W>, root: &Path, rel: &Path) -> Result<()> {
    let mut names: Vec<_> = fs::read_dir(root.join(rel))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<io::Result<_>>()?;
    names.sort();
    for name in names {
        if name.to_string_lossy().starts_with(".slim-") {
            continue;
        }
        let rel_path = rel.join(&name);
        let full = root.join(&rel_path);
        let meta = fs::metadata(&full)?;
        let mut h = tar::Header::new_ustar();
        h.set_mtime(0);
        h.set_uid(0);
        h.set_gid(0);
        if meta.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            h.set_mode(0o755);
            h.set_size(0);
            b.append_data(&mut h, &rel_path, io::empty())?;
            append_tree(b, root, &rel_path)?;
        } else {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_mode(0o644);
            h.set_size(meta.len());
            b.append_data(&mut h, &rel_path, fs::File::open(&full)?)?;
        }
    }
    Ok(())
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
