//! The committed fixture image (`fixtures/oci`, tag `demo:latest`; see
//! `fixtures/README.md`) and ways to put it where tests need it: pushed to a
//! registry as OCI or as Docker v2s2, or wrapped in a two-platform index.
//!
//! Digests are never hard-coded: they are read from the layout, so a rebuilt
//! fixture needs no test changes.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use serde_json::{Value, json};

use super::judges::sha256_digest;
use super::layout::OCI_INDEX;
use super::registry::{Registry, runs_dir};

/// The fixture's tag inside its layout.
pub const FIXTURE_TAG: &str = "demo:latest";

/// Absolute path of `fixtures/oci`.
pub fn fixture_layout() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures")
        .join("oci")
}

/// `oci:/abs/path/fixtures/oci:demo:latest`, usable from any working dir.
pub fn fixture_ref() -> String {
    format!("oci:{}:{FIXTURE_TAG}", fixture_layout().display())
}

/// Path of a blob (`sha256:HEX`) in an OCI layout.
pub fn blob_path(layout: &Path, digest: &str) -> PathBuf {
    let (alg, hex) = digest
        .split_once(':')
        .unwrap_or_else(|| panic!("bad digest {digest}"));
    layout.join("blobs").join(alg).join(hex)
}

/// A blob's bytes.
pub fn read_blob(layout: &Path, digest: &str) -> Vec<u8> {
    let p = blob_path(layout, digest);
    fs::read(&p).unwrap_or_else(|e| panic!("reading blob {}: {e}", p.display()))
}

/// Writes `bytes` as a blob of an OCI layout (its `blobs/sha256` must
/// exist); returns the digest.
pub fn put_blob(layout: &Path, bytes: &[u8]) -> String {
    let digest = sha256_digest(bytes);
    fs::write(blob_path(layout, &digest), bytes).expect("writing a blob");
    digest
}

/// Makes `bytes` (a manifest or index of `media_type`) a blob of the layout
/// and its only image, tagged `tag`; writes `oci-layout` too. Returns the
/// manifest digest.
pub fn tag_only(layout: &Path, bytes: &[u8], media_type: &str, tag: &str) -> String {
    let digest = put_blob(layout, bytes);
    let index = json!({"schemaVersion": 2, "manifests": [{
        "mediaType": media_type, "digest": digest, "size": bytes.len(),
        "annotations": {"org.opencontainers.image.ref.name": tag}}]});
    fs::write(
        layout.join("index.json"),
        serde_json::to_vec(&index).expect("index.json"),
    )
    .expect("writing index.json");
    fs::write(
        layout.join("oci-layout"),
        br#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .expect("writing oci-layout");
    digest
}

/// The descriptor (from `index.json`) tagged `tag` in an OCI layout.
pub fn layout_descriptor(layout: &Path, tag: &str) -> Value {
    let index: Value = serde_json::from_slice(
        &fs::read(layout.join("index.json"))
            .unwrap_or_else(|e| panic!("{}/index.json: {e}", layout.display())),
    )
    .expect("index.json is JSON");
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .unwrap_or_else(|| panic!("no tag {tag} in {}", layout.display()))
}

/// The fixture's parts, read from disk.
pub struct FixtureImage {
    pub manifest_bytes: Vec<u8>,
    pub manifest: Value,
    pub manifest_digest: String,
    pub media_type: String,
    pub config_digest: String,
    pub layer_digests: Vec<String>,
}

/// Read the manifest tagged `tag` in `layout` (the fixture: [`fixture_image`]).
pub fn image_in_layout(layout: &Path, tag: &str) -> FixtureImage {
    let desc = layout_descriptor(layout, tag);
    let manifest_digest = desc["digest"]
        .as_str()
        .expect("descriptor digest")
        .to_string();
    let manifest_bytes = read_blob(layout, &manifest_digest);
    assert_eq!(
        sha256_digest(&manifest_bytes),
        manifest_digest,
        "manifest blob does not match its digest"
    );
    let manifest: Value = serde_json::from_slice(&manifest_bytes).expect("manifest is JSON");
    FixtureImage {
        media_type: desc["mediaType"].as_str().unwrap_or_default().to_string(),
        config_digest: manifest["config"]["digest"]
            .as_str()
            .expect("config digest")
            .to_string(),
        layer_digests: manifest["layers"]
            .as_array()
            .expect("layers")
            .iter()
            .map(|l| l["digest"].as_str().expect("layer digest").to_string())
            .collect(),
        manifest_bytes,
        manifest,
        manifest_digest,
    }
}

/// The committed fixture image.
pub fn fixture_image() -> FixtureImage {
    image_in_layout(&fixture_layout(), FIXTURE_TAG)
}

/// `skopeo copy` the fixture to `REGISTRY/REPO_TAG` (OCI media types kept)
/// and return the pushed manifest digest.
pub fn push_fixture(registry: &Registry, repo_tag: &str) -> String {
    push(registry, &fixture_ref(), repo_tag, &[])
}

/// Like [`push_fixture`], converted to Docker v2s2 (`--format v2s2`).
pub fn push_fixture_v2s2(registry: &Registry, repo_tag: &str) -> String {
    push(registry, &fixture_ref(), repo_tag, &["--format", "v2s2"])
}

/// Push the two-platform index of [`multiarch_layout`] with
/// `skopeo copy --all`; returns the index digest (unchanged by the copy).
pub fn push_fixture_multiarch(registry: &Registry, repo_tag: &str) -> String {
    let m = multiarch_layout();
    push(registry, &m.reference, repo_tag, &["--all"])
}

fn push(registry: &Registry, src: &str, repo_tag: &str, extra: &[&str]) -> String {
    let digest_file =
        tempfile::NamedTempFile::new_in(runs_dir()).expect("temp file for --digestfile");
    let digest_arg = digest_file.path().display().to_string();
    let mut args = vec!["--digestfile", digest_arg.as_str()];
    args.extend(extra);
    registry
        .skopeo()
        .copy(src, &registry.docker_ref(repo_tag), &args);
    let digest = fs::read_to_string(digest_file.path()).expect("reading skopeo --digestfile");
    digest.trim().to_string()
}

/// A two-platform image index built from the fixture.
#[derive(Clone, Debug)]
pub struct MultiArch {
    /// The OCI layout holding it.
    pub layout: PathBuf,
    /// `oci:LAYOUT:multi`.
    pub reference: String,
    pub index_digest: String,
    /// The fixture's own manifest (linux/amd64).
    pub amd64_digest: String,
    /// Same layers, a config saying linux/arm64/v8 (so another config
    /// digest and manifest digest).
    pub arm64_digest: String,
}

/// The tag of the index in [`MultiArch::layout`].
pub const MULTIARCH_TAG: &str = "multi";

/// Build (once per test binary) an OCI layout with an index of two
/// platforms from the fixture, written by hand: linux/amd64 is the
/// fixture's manifest; linux/arm64/v8 reuses its layers with a config whose
/// `architecture`/`variant` say arm64. (The layers really hold amd64
/// busybox: fine for tests that never run them.)
pub fn multiarch_layout() -> &'static MultiArch {
    static M: OnceLock<MultiArch> = OnceLock::new();
    M.get_or_init(|| {
        let dir = runs_dir().join(format!("multiarch-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        write_multiarch_layout(&dir)
    })
}

/// Write the two-platform layout into `dir` (created; must not exist).
pub fn write_multiarch_layout(dir: &Path) -> MultiArch {
    let src = fixture_layout();
    let fx = fixture_image();
    let blobs = dir.join("blobs").join("sha256");
    fs::create_dir_all(&blobs).expect("creating layout dirs");
    for entry in fs::read_dir(src.join("blobs").join("sha256"))
        .expect("fixture blobs")
        .flatten()
    {
        fs::copy(entry.path(), blobs.join(entry.file_name())).expect("copying a fixture blob");
    }
    let put = |bytes: &[u8]| put_blob(dir, bytes);

    let mut config: Value =
        serde_json::from_slice(&read_blob(&src, &fx.config_digest)).expect("config JSON");
    config["architecture"] = json!("arm64");
    config["variant"] = json!("v8");
    let config_bytes = serde_json::to_vec(&config).expect("config");
    let config_digest = put(&config_bytes);

    let mut manifest = fx.manifest.clone();
    manifest["config"]["digest"] = json!(config_digest);
    manifest["config"]["size"] = json!(config_bytes.len());
    let manifest_bytes = serde_json::to_vec(&manifest).expect("manifest");
    let arm64_digest = put(&manifest_bytes);

    let index = json!({
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {
                "mediaType": fx.media_type,
                "digest": fx.manifest_digest,
                "size": fx.manifest_bytes.len(),
                "platform": {"architecture": "amd64", "os": "linux"}
            },
            {
                "mediaType": fx.media_type,
                "digest": arm64_digest,
                "size": manifest_bytes.len(),
                "platform": {"architecture": "arm64", "os": "linux", "variant": "v8"}
            }
        ]
    });
    let index_bytes = serde_json::to_vec(&index).expect("index");
    let index_digest = tag_only(dir, &index_bytes, OCI_INDEX, MULTIARCH_TAG);

    MultiArch {
        layout: dir.to_path_buf(),
        reference: format!("oci:{}:{MULTIARCH_TAG}", dir.display()),
        index_digest,
        amd64_digest: fx.manifest_digest,
        arm64_digest,
    }
}
