//! The one builder of test images: an OCI layout holding one image made of
//! layer blobs and a config, plus the tar and gzip helpers that make those
//! blobs ([`Layer`] for well-formed trees, [`tar_of`] and [`file_header`]
//! for raw headers the tar crate's builder would refuse).

use std::io::Write as _;
use std::path::Path;

use serde_json::{Value, json};

use super::fixture::{put_blob, tag_only};
use super::judges::sha256_digest;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// One layer as it is stored: its blob, media type and the diff_id the
/// config names (which a hostile test may make wrong on purpose).
pub struct LayerBlob {
    pub blob: Vec<u8>,
    pub media_type: String,
    pub diff_id: String,
}

impl LayerBlob {
    /// `tar` gzipped (fast level), with its true diff_id.
    pub fn gzip_tar(tar: &[u8]) -> LayerBlob {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(tar).expect("gzip");
        LayerBlob {
            blob: gz.finish().expect("gzip"),
            media_type: OCI_LAYER_GZIP.to_string(),
            diff_id: sha256_digest(tar),
        }
    }

    /// Exactly these bytes, under `media_type`, the config naming `diff_id`.
    pub fn raw(blob: &[u8], media_type: &str, diff_id: &str) -> LayerBlob {
        LayerBlob {
            blob: blob.to_vec(),
            media_type: media_type.to_string(),
            diff_id: diff_id.to_string(),
        }
    }
}

/// What [`write_image`] wrote.
pub struct WrittenImage {
    /// `oci:DIR:TAG`.
    pub reference: String,
    /// The layer blob digests, bottom first.
    pub layers: Vec<String>,
    pub manifest_digest: String,
}

/// Writes into the OCI layout `dir` (created if needed) one image tagged
/// `tag`: `layers` bottom first, and `config` (an object) after `os`
/// (linux) and `architecture` (amd64), with its `rootfs` set here.
pub fn write_image(dir: &Path, tag: &str, layers: &[LayerBlob], mut config: Value) -> WrittenImage {
    std::fs::create_dir_all(dir.join("blobs").join("sha256")).expect("creating layout dirs");
    let mut descriptors = Vec::new();
    let mut digests = Vec::new();
    for layer in layers {
        let digest = put_blob(dir, &layer.blob);
        descriptors.push(json!({
            "mediaType": layer.media_type, "digest": digest, "size": layer.blob.len(),
        }));
        digests.push(digest);
    }
    let diff_ids: Vec<&str> = layers.iter().map(|l| l.diff_id.as_str()).collect();
    let mut full = json!({"architecture": "amd64", "os": "linux"});
    if let Value::Object(fields) = config.take() {
        full.as_object_mut().expect("an object").extend(fields);
    }
    full["rootfs"] = json!({"type": "layers", "diff_ids": diff_ids});
    let config = serde_json::to_vec(&full).expect("config");
    let manifest = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {"mediaType": OCI_CONFIG, "digest": put_blob(dir, &config), "size": config.len()},
        "layers": descriptors,
    }))
    .expect("manifest");
    let manifest_digest = tag_only(dir, &manifest, OCI_MANIFEST, tag);
    WrittenImage {
        reference: format!("oci:{}:{tag}", dir.display()),
        layers: digests,
        manifest_digest,
    }
}

/// An image of plain `tars` (bottom first), each gzipped, and an empty
/// runtime config. Returns `oci:DIR:TAG`.
pub fn layout_of_tars(dir: &Path, tars: &[Vec<u8>], tag: &str) -> String {
    let layers: Vec<LayerBlob> = tars.iter().map(|t| LayerBlob::gzip_tar(t)).collect();
    write_image(dir, tag, &layers, json!({"config": {}})).reference
}

/// `bytes` gzipped at the default level.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

/// A tar header for a regular file, fixed owner and time; `name` is written
/// as raw bytes, so it may hold what the tar crate's builder refuses (`..`).
pub fn file_header(name: &[u8], size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.as_old_mut().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_cksum();
    h
}

/// A tar of `(path, content)` files.
pub fn tar_of(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content) in files {
        b.append(
            &file_header(name.as_bytes(), content.len() as u64),
            *content,
        )
        .unwrap();
    }
    b.into_inner().unwrap()
}

/// A tar builder for well-formed test layers: directories, files, symlinks.
pub struct Layer(tar::Builder<Vec<u8>>);

fn header() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

impl Default for Layer {
    fn default() -> Layer {
        Layer::new()
    }
}

impl Layer {
    pub fn new() -> Layer {
        Layer(tar::Builder::new(Vec::new()))
    }

    pub fn dir(mut self, path: &str) -> Layer {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        self.0
            .append_data(&mut h, format!("{path}/"), std::io::empty())
            .unwrap();
        self
    }

    pub fn file(mut self, path: &str, mode: u32, content: &[u8]) -> Layer {
        let mut h = header();
        h.set_mode(mode);
        h.set_size(content.len() as u64);
        self.0.append_data(&mut h, path, content).unwrap();
        self
    }

    pub fn symlink(mut self, path: &str, target: &str) -> Layer {
        let mut h = header();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        self.0.append_link(&mut h, path, target).unwrap();
        self
    }

    pub fn finish(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}
