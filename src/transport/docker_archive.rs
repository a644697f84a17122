//! `docker save` / `docker load` archives: `docker-archive:PATH[:NAME:TAG]`,
//! `-` for stdin or stdout.
//!
//! Reading: the archive's `manifest.json` lists, per image, a config file and
//! layer tars. slim presents it as a Docker v2s2 image: the config blob as
//! is, and each layer as it is stored (plain tars are addressed by their
//! diff_id, compressed ones by their own digest). A stream (stdin, or an
//! engine's export for `docker-daemon:`) is spooled to a temp file first,
//! since `manifest.json` may come last.
//!
//! Writing: layers are stored uncompressed and named by diff_id, as
//! `docker save` and containers/image do, which checks each diff_id against
//! the config. The archive is written to a temp file renamed over the target,
//! or to stdout (or into an engine's `docker load`) only once everything is
//! ready.

use std::collections::HashMap;
use std::fs;
use std::io::{self, BufReader, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use tempfile::NamedTempFile;

use super::tarindex::TarIndex;
use super::{Capabilities, Dest, Source, Staged};
use crate::cleanup::{DirLock, StagingDir};
use crate::decompress as decode;
use crate::digest::{Algorithm, Digest, HashingWriter};
use crate::image::media::{self, Compression};
use crate::image::{Descriptor, MAX_CONFIG_BYTES, MAX_MANIFEST_BYTES, Manifest};
use crate::reference::RegistryRef;

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ArchiveEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

pub struct DockerArchiveSource {
    location: String,
    index: TarIndex,
    manifest: Manifest,
    /// Blob digest -> member path.
    members: HashMap<Digest, String>,
    _spool: Option<StagingDir>,
}

impl DockerArchiveSource {
    /// Opens an archive file, or stdin (`path` `None`), spooled up to
    /// `max_archive` bytes.
    pub fn open(
        path: Option<&Path>,
        name: Option<String>,
        max_archive: u64,
    ) -> Result<DockerArchiveSource> {
        match path {
            Some(p) => {
                if !p.is_file() {
                    bail!("{}: no such file", p.display());
                }
                Self::from_file(
                    p.to_path_buf(),
                    None,
                    format!("docker-archive:{}", p.display()),
                    name,
                )
            }
            None => Self::from_stream(
                io::stdin().lock(),
                Spool {
                    location: "docker-archive:-".to_string(),
                    reading: "reading the archive from stdin".to_string(),
                    prefix: "slim-stdin-",
                    max: max_archive,
                },
                name,
            ),
        }
    }

    /// Reads a `docker save` stream (stdin, an engine's export): spooled to
    /// a temp directory up to its end-of-archive marker and at most
    /// `spool.max` bytes (`manifest.json` may come last), then opened.
    pub fn from_stream(
        input: impl Read,
        spool: Spool,
        name: Option<String>,
    ) -> Result<DockerArchiveSource> {
        let dir = StagingDir::create_temp(spool.prefix)?;
        let path = dir.path().join("archive.tar");
        let file =
            fs::File::create(&path).with_context(|| format!("creating {}", path.display()))?;
        spool_tar(input, file, spool.max)
            .with_context(|| format!("{}: {}", spool.location, spool.reading))?;
        Self::from_file(path, Some(dir), spool.location, name)
    }

    fn from_file(
        file: PathBuf,
        spool: Option<StagingDir>,
        location: String,
        name: Option<String>,
    ) -> Result<DockerArchiveSource> {
        let index = TarIndex::build(&file)?;
        let list_bytes = index
            .read("manifest.json", MAX_MANIFEST_BYTES)
            .with_context(|| format!("{location}: not a docker save archive (no manifest.json)"))?;
        let list: Vec<ArchiveEntry> = serde_json::from_value(crate::image::parse_json(
            &format!("{location}: manifest.json"),
            &list_bytes,
            crate::image::MAX_JSON_VALUES,
        )?)
        .with_context(|| format!("{location}: manifest.json is malformed"))?;
        let entry = pick_entry(&location, list, name.as_deref())?;

        let config = index.read(&entry.config, MAX_CONFIG_BYTES)?;
        let config_digest = Digest::sha256_of(&config);
        if let Some(named) = digest_in_name(&entry.config)
            && named != config_digest
        {
            crate::digest::Digest::verify(
                &named,
                &format!("{location}: config {}", entry.config),
                &config,
            )?;
        }
        let config_json = crate::image::parse_json(
            &format!("{location}: config {}", entry.config),
            &config,
            crate::image::MAX_JSON_VALUES,
        )?;
        let diff_ids: Vec<Digest> = config_json
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|d| d.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        if diff_ids.len() != entry.layers.len() {
            bail!(
                "{location}: the config lists {} diff_ids but manifest.json lists {} layers",
                diff_ids.len(),
                entry.layers.len()
            );
        }

        let mut members = HashMap::new();
        members.insert(config_digest.clone(), entry.config.clone());
        let mut layers = Vec::new();
        for (layer, diff_id) in entry.layers.iter().zip(&diff_ids) {
            let size = index
                .size_of(layer)
                .with_context(|| format!("{location}: layer {layer} is missing"))?;
            let mut head = [0u8; 4];
            let n = index.open(layer)?.read(&mut head)?;
            let compression = decode::sniff(&head[..n]);
            let (media_type, digest) = match compression {
                Compression::None => (media::DOCKER_LAYER, diff_id.clone()),
                c => {
                    let digest = match digest_in_name(layer) {
                        Some(d) => d,
                        None => hash_member(&index, layer)?,
                    };
                    let mt = if c == Compression::Gzip {
                        media::DOCKER_LAYER_GZIP
                    } else {
                        media::OCI_LAYER_ZSTD
                    };
                    (mt, digest)
                }
            };
            members.insert(digest.clone(), layer.clone());
            layers
                .push(json!({"mediaType": media_type, "size": size, "digest": digest.to_string()}));
        }
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": config.len(), "digest": config_digest.to_string()},
            "layers": layers,
        });
        let manifest = Manifest::from_json(&format!("{location} image"), &manifest)?;
        Ok(DockerArchiveSource {
            location,
            index,
            manifest,
            members,
            _spool: spool,
        })
    }
}

/// Where a streamed archive comes from, for [`DockerArchiveSource::from_stream`].
pub struct Spool {
    /// The reference, for messages (`docker-archive:-`).
    pub location: String,
    /// What reading it is, for messages (`reading the archive from stdin`).
    pub reading: String,
    /// The temp directory's name prefix.
    pub prefix: &'static str,
    /// At most this many bytes are spooled.
    pub max: u64,
}

fn pick_entry(location: &str, list: Vec<ArchiveEntry>, name: Option<&str>) -> Result<ArchiveEntry> {
    let tags_of = |list: &[ArchiveEntry]| {
        list.iter()
            .flat_map(|e| e.repo_tags.clone().unwrap_or_default())
            .collect::<Vec<_>>()
            .join(", ")
    };
    match name {
        Some(n) => {
            let want = RegistryRef::parse(n).map(|r| r.to_string()).ok();
            let found = list.iter().position(|e| {
                e.repo_tags.iter().flatten().any(|t| {
                    t == n
                        || (want.is_some()
                            && RegistryRef::parse(t).map(|r| r.to_string()).ok() == want)
                })
            });
            match found {
                Some(i) => Ok(list.into_iter().nth(i).expect("index in range")),
                None => bail!(
                    "{location}: no image named {n:?} (names: {})",
                    tags_of(&list)
                ),
            }
        }
        None if list.len() == 1 => Ok(list.into_iter().next().expect("one entry")),
        None if list.is_empty() => bail!("{location}: the archive holds no image"),
        None => bail!(
            "{location}: the archive holds {} images; name one with {location}:NAME:TAG (names: {})",
            list.len(),
            tags_of(&list)
        ),
    }
}

/// Copies a tar stream to `file` up to its end-of-archive marker, and no
/// further: a stream that goes on past it (or never ends) is not read
/// beyond the archive, and one longer than `max` bytes is refused before it
/// fills the disk.
fn spool_tar(input: impl Read, file: fs::File, max: u64) -> Result<()> {
    struct Tee<R> {
        input: R,
        out: io::BufWriter<fs::File>,
        copied: u64,
        max: u64,
        /// Why the spool stopped the stream, when it did.
        stopped: Option<SpoolStop>,
    }
    impl<R: Read> Tee<R> {
        fn stop(&mut self, why: SpoolStop) -> io::Error {
            self.stopped = Some(why);
            io::Error::other("spooling stopped")
        }
    }
    impl<R: Read> Read for Tee<R> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.input.read(buf)?;
            let before = self.copied;
            self.copied += n as u64;
            if self.copied > self.max {
                return Err(self.stop(SpoolStop::TooLarge(self.max)));
            }
            // Every 64 MiB: leave the disk some room.
            if before >> 26 != self.copied >> 26
                && let Ok(st) = rustix::fs::fstatvfs(self.out.get_ref())
                && st.f_bavail.saturating_mul(st.f_frsize) < MIN_FREE_SPACE
            {
                return Err(self.stop(SpoolStop::DiskFull));
            }
            self.out.write_all(&buf[..n])?;
            Ok(n)
        }
    }
    let tee = Tee {
        input: io::BufReader::with_capacity(1 << 20, input),
        out: io::BufWriter::with_capacity(1 << 20, file),
        copied: 0,
        max,
        stopped: None,
    };
    let mut archive = tar::Archive::new(tee);
    let mut buf = vec![0u8; 1 << 20];
    let read = (|| -> Result<()> {
        for entry in archive.entries().context("not a tar stream")? {
            let mut entry = entry.context("a malformed tar header")?;
            loop {
                match entry.read(&mut buf) {
                    Ok(0) => break,
                    Ok(_) => {}
                    Err(e) => return Err(anyhow::Error::new(e).context("a truncated member")),
                }
            }
        }
        Ok(())
    })();
    let mut tee = archive.into_inner();
    // A stop is the reason, not the read error it caused.
    if let Some(why) = tee.stopped {
        return Err(why.into());
    }
    read?;
    // The tar reader stops at the first zero block of the end marker; the
    // spool gets a whole marker.
    tee.out.write_all(&[0u8; 1024])?;
    tee.out.flush()?;
    Ok(())
}

/// Spooling stdin stops while this much space is left in the temp directory.
const MIN_FREE_SPACE: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
enum SpoolStop {
    #[error(
        "the archive is larger than {} (--max-archive-size); refusing to spool more of it (raise --max-archive-size if it really is that big)",
        crate::units::human(*.0)
    )]
    TooLarge(u64),
    #[error(
        "less than 1 GiB is left free in the temp directory; stopped spooling the archive before the disk filled (point TMPDIR at a larger file system, or pass a docker-archive file instead of stdin)"
    )]
    DiskFull,
}

/// `blobs/sha256/<hex>` names its own digest (Docker 25+ archives).
fn digest_in_name(member: &str) -> Option<Digest> {
    let mut parts = member.rsplit('/');
    let hex = parts.next()?;
    let alg = parts.next()?;
    format!("{alg}:{hex}").parse().ok()
}

fn hash_member(index: &TarIndex, member: &str) -> Result<Digest> {
    let mut w = HashingWriter::new(io::sink(), Algorithm::Sha256);
    io::copy(&mut index.open(member)?, &mut w)?;
    Ok(w.finish().0)
}

/// Runs a transport step, its failure worded by this module.
fn in_archive<T>(f: impl FnOnce() -> Result<T>) -> super::Result<T> {
    f().map_err(super::Error::archive)
}

impl Source for DockerArchiveSource {
    fn name(&self) -> String {
        self.location.clone()
    }

    fn root(&self) -> super::Result<Manifest> {
        Ok(self.manifest.clone())
    }

    fn manifest(&self, desc: &Descriptor) -> super::Result<Manifest> {
        in_archive(|| bail!("{}: has no manifest {}", self.location, desc.digest))
    }

    fn open_blob(&self, desc: &Descriptor) -> super::Result<Box<dyn Read + Send + '_>> {
        let member = in_archive(|| {
            let member = self
                .members
                .get(&desc.digest)
                .with_context(|| format!("{}: no blob {}", self.location, desc.digest))?;
            self.index.open(member)
        })?;
        Ok(Box::new(BufReader::with_capacity(256 << 10, member)))
    }
}

/// Where the finished archive goes.
enum Target {
    File(PathBuf),
    Stdout,
    /// To whoever holds this destination, through
    /// [`DockerArchiveDest::write_archive`] (an engine's `docker load`).
    Caller,
}

pub struct DockerArchiveDest {
    target: Target,
    name: Option<String>,
    staging: StagingDir,
    /// Blob digest -> (file in staging, diff_id for layers).
    stored: Mutex<HashMap<Digest, (PathBuf, Option<Digest>)>>,
}

impl DockerArchiveDest {
    pub fn create(path: Option<&Path>, name: Option<String>) -> Result<DockerArchiveDest> {
        let (target, staging) = match path {
            Some(p) => {
                let parent = super::layout::parent_dir(p);
                if !parent.is_dir() {
                    bail!("{}: no such directory", parent.display());
                }
                let lock = DirLock::exclusive(&parent).ok();
                let staging = StagingDir::create_in(&parent, ".slim-archive-", lock.is_some())?;
                (Target::File(p.to_path_buf()), staging)
            }
            None => (Target::Stdout, StagingDir::create_temp("slim-")?),
        };
        Ok(DockerArchiveDest {
            target,
            name: name.as_deref().map(repo_tag),
            staging,
            stored: Mutex::new(HashMap::new()),
        })
    }

    /// Blobs are staged in a temp directory (`PREFIX…`); the archive is
    /// written only by [`DockerArchiveDest::write_archive`], which its
    /// holder calls in place of [`Dest::commit`].
    pub fn staged(name: Option<String>, prefix: &str) -> Result<DockerArchiveDest> {
        Ok(DockerArchiveDest {
            target: Target::Caller,
            name: name.as_deref().map(repo_tag),
            staging: StagingDir::create_temp(prefix)?,
            stored: Mutex::new(HashMap::new()),
        })
    }

    /// The `RepoTags` entry the archive names its image by.
    pub fn repo_tag(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The config's diff_ids, from the staged config blob of `root`.
    pub fn diff_ids(&self, root: &Manifest) -> Result<Vec<String>> {
        let stored = self.stored.lock().expect("stored lock");
        let config = root.config()?.context("the image has no config")?;
        let (config_file, _) = stored
            .get(&config.digest)
            .context("config was not written")?;
        let config_json: Value = serde_json::from_slice(&fs::read(config_file)?)?;
        Ok(config_json
            .pointer("/rootfs/diff_ids")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|d| d.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Writes the archive of `root` (whose blobs were all put here) to
    /// `out`, in one pass over the staged files.
    pub fn write_archive<W: Write>(&self, out: W, root: &Manifest) -> Result<W> {
        let diff_ids = self.diff_ids(root)?;
        let stored = self.stored.lock().expect("stored lock");
        let config = root.config()?.context("the image has no config")?;
        let (config_file, _) = stored
            .get(&config.digest)
            .context("config was not written")?;
        let layers = root.layers()?;
        if diff_ids.len() != layers.len() {
            bail!(
                "the config lists {} diff_ids for {} layers; the image is inconsistent",
                diff_ids.len(),
                layers.len()
            );
        }
        let mut b = tar::Builder::new(out);
        let mut names = Vec::new();
        let mut written = std::collections::HashSet::new();
        for (layer, want) in layers.iter().zip(&diff_ids) {
            let (file, diff_id) = stored.get(&layer.digest).context("layer was not written")?;
            let diff_id = diff_id.as_ref().expect("layers have diff_ids");
            if &diff_id.to_string() != want {
                bail!(
                    "layer {}: uncompressed content hashes to {diff_id}, but the config says {want} (corrupt image)",
                    layer.digest
                );
            }
            let name = format!("{}.tar", diff_id.hex());
            if written.insert(name.clone()) {
                append_file(&mut b, &name, file)?;
            }
            names.push(name);
        }
        let config_name = format!("{}.json", config.digest.hex());
        append_file(&mut b, &config_name, config_file)?;
        let repo_tags: Vec<&str> = self.name.iter().map(String::as_str).collect();
        let manifest = serde_json::to_vec(&json!([{
            "Config": config_name,
            "RepoTags": repo_tags,
            "Layers": names,
        }]))?;
        let mut h = header(manifest.len() as u64);
        b.append_data(&mut h, "manifest.json", &manifest[..])?;
        Ok(b.into_inner()?)
    }
}

/// The `RepoTags` entry for a destination name: `NAME:TAG`, a bare name
/// meaning `:latest` as everywhere else. `docker load` refuses a RepoTag
/// without a tag, and skopeo cannot find the image by name in such an
/// archive; slim used to write the bare name.
fn repo_tag(name: &str) -> String {
    let last = name.rsplit('/').next().unwrap_or(name);
    if last.contains(':') {
        name.to_string()
    } else {
        format!("{name}:latest")
    }
}

fn header(size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(size);
    h
}

fn append_file<W: Write>(b: &mut tar::Builder<W>, name: &str, path: &Path) -> Result<()> {
    let f = fs::File::open(path)?;
    let mut h = header(f.metadata()?.len());
    b.append_data(&mut h, name, BufReader::with_capacity(256 << 10, f))?;
    Ok(())
}

impl Dest for DockerArchiveDest {
    fn name(&self) -> String {
        let base = match &self.target {
            Target::File(p) => format!("docker-archive:{}", p.display()),
            Target::Stdout | Target::Caller => "docker-archive:-".to_string(),
        };
        match &self.name {
            Some(n) => format!("{base}:{n}"),
            None => base,
        }
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            oci_only: false,
            single_image: true,
            keeps_manifests: false,
        }
    }

    fn has_blob(&self, desc: &Descriptor) -> super::Result<bool> {
        Ok(self
            .stored
            .lock()
            .expect("stored lock")
            .contains_key(&desc.digest))
    }

    fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    fn put_blob(&self, desc: &Descriptor, blob: Staged) -> super::Result<()> {
        in_archive(|| {
            let entry = if media::layer_compression(&desc.media_type).is_some() {
                // Store uncompressed, named by diff_id.
                let mut reader = BufReader::with_capacity(256 << 10, blob.file.reopen()?);
                reader.rewind()?;
                let (_, mut decoded) = decode::decoder(reader)?;
                let tmp = NamedTempFile::new_in(self.staging.path())?;
                let mut w = HashingWriter::new(
                    io::BufWriter::with_capacity(256 << 10, tmp),
                    Algorithm::Sha256,
                );
                io::copy(&mut decoded, &mut w)
                    .with_context(|| format!("decompressing layer {}", desc.digest))?;
                let (diff_id, _, buf) = w.finish();
                let tmp = buf.into_inner().map_err(|e| e.into_error())?;
                let path = self.staging.path().join(format!("{}.tar", diff_id.hex()));
                tmp.persist(&path).map_err(|e| e.error)?;
                (path, Some(diff_id))
            } else {
                let path = self
                    .staging
                    .path()
                    .join(format!("{}.blob", blob.digest.hex()));
                blob.file.persist(&path).map_err(|e| e.error)?;
                (path, None)
            };
            self.stored
                .lock()
                .expect("stored lock")
                .insert(desc.digest.clone(), entry);
            Ok(())
        })
    }

    fn put_manifest(&self, m: &Manifest) -> super::Result<()> {
        in_archive(|| {
            bail!(
                "a docker archive holds one image; cannot add manifest {}",
                m.digest
            )
        })
    }

    fn commit(&self, root: &Manifest) -> super::Result<()> {
        in_archive(|| {
            match &self.target {
                Target::File(p) => {
                    let tmp = NamedTempFile::new_in(self.staging.path())?;
                    let w =
                        self.write_archive(io::BufWriter::with_capacity(256 << 10, tmp), root)?;
                    let tmp = w.into_inner().map_err(|e| e.into_error())?;
                    tmp.as_file().sync_all()?;
                    {
                        use std::os::unix::fs::PermissionsExt;
                        fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o644))?;
                    }
                    let _permit = crate::cleanup::permit()?;
                    tmp.persist(p)
                        .map_err(|e| e.error)
                        .with_context(|| format!("writing {}", p.display()))?;
                }
                Target::Stdout => {
                    let stdout = io::stdout().lock();
                    let mut w =
                        self.write_archive(io::BufWriter::with_capacity(256 << 10, stdout), root)?;
                    w.flush().context("writing the archive to stdout")?;
                }
                Target::Caller => bail!("this archive is written by its holder, not committed"),
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_tags_always_carry_a_tag() {
        assert_eq!(repo_tag("demo"), "demo:latest");
        assert_eq!(repo_tag("demo:v1"), "demo:v1");
        assert_eq!(
            repo_tag("localhost:5000/team/demo"),
            "localhost:5000/team/demo:latest"
        );
        assert_eq!(
            repo_tag("localhost:5000/team/demo:v2"),
            "localhost:5000/team/demo:v2"
        );
    }
}
