//! Media types of the OCI image spec and Docker image manifest v2 schema 2,
//! and what each means to slim.

use serde_json::Value;

pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const OCI_LAYER_ND: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const OCI_LAYER_ND_GZIP: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const OCI_LAYER_ND_ZSTD: &str = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const DOCKER_FOREIGN_GZIP: &str = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
pub const DOCKER_V1_SIGNED: &str = "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// What is accepted when asking a registry for a manifest.
pub const ACCEPT_MANIFESTS: &[&str] = &[OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST];

/// The four manifest kinds slim reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    OciManifest,
    OciIndex,
    DockerManifest,
    DockerList,
}

impl Kind {
    /// From the media type when it names a kind, else from the shape
    /// (`manifests` means an index).
    pub fn detect(media_type: Option<&str>, json: &Value) -> Kind {
        match media_type {
            Some(OCI_MANIFEST) => Kind::OciManifest,
            Some(OCI_INDEX) => Kind::OciIndex,
            Some(DOCKER_MANIFEST) => Kind::DockerManifest,
            Some(DOCKER_LIST) => Kind::DockerList,
            _ if json.get("manifests").is_some() => Kind::OciIndex,
            _ => Kind::OciManifest,
        }
    }

    pub fn is_index(self) -> bool {
        matches!(self, Kind::OciIndex | Kind::DockerList)
    }

    pub fn is_image_manifest(self) -> bool {
        !self.is_index()
    }

    pub fn is_docker(self) -> bool {
        matches!(self, Kind::DockerManifest | Kind::DockerList)
    }

    pub fn default_media_type(self) -> &'static str {
        match self {
            Kind::OciManifest => OCI_MANIFEST,
            Kind::OciIndex => OCI_INDEX,
            Kind::DockerManifest => DOCKER_MANIFEST,
            Kind::DockerList => DOCKER_LIST,
        }
    }
}

pub fn is_manifest_type(media_type: &str) -> bool {
    matches!(
        media_type,
        OCI_MANIFEST | OCI_INDEX | DOCKER_MANIFEST | DOCKER_LIST
    )
}

/// Content types that say "JSON" without naming a manifest kind; some
/// registries serve manifests pushed without a type this way.
pub fn is_generic_json(media_type: &str) -> bool {
    matches!(
        media_type,
        "application/json" | "application/octet-stream" | "text/plain" | ""
    )
}

pub fn is_image_config(media_type: &str) -> bool {
    matches!(media_type, OCI_CONFIG | DOCKER_CONFIG)
}

/// How a layer blob is compressed, from its media type; also `--compression`
/// and `compression =`, one type from the flag and the job file to the
/// encoder (settings.rs words its errors). The variants are in the order
/// `--help` lists them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum Compression {
    Gzip,
    Zstd,
    None,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }
}

/// The compression a layer media type declares; `None` for types that are
/// not layers slim can read.
pub fn layer_compression(media_type: &str) -> Option<Compression> {
    match media_type {
        OCI_LAYER | OCI_LAYER_ND | DOCKER_LAYER => Some(Compression::None),
        OCI_LAYER_GZIP | OCI_LAYER_ND_GZIP | DOCKER_LAYER_GZIP | DOCKER_FOREIGN_GZIP => {
            Some(Compression::Gzip)
        }
        OCI_LAYER_ZSTD | OCI_LAYER_ND_ZSTD => Some(Compression::Zstd),
        _ => None,
    }
}

/// The layer media type for a compression in OCI or Docker form.
pub fn layer_type(compression: Compression, docker: bool) -> &'static str {
    match (compression, docker) {
        (Compression::None, false) => OCI_LAYER,
        (Compression::Gzip, false) => OCI_LAYER_GZIP,
        (Compression::Zstd, _) => OCI_LAYER_ZSTD,
        (Compression::None, true) => DOCKER_LAYER,
        (Compression::Gzip, true) => DOCKER_LAYER_GZIP,
    }
}

/// The OCI equivalent of a Docker media type (others unchanged), as
/// containers/image converts when writing Docker images to OCI layouts.
pub fn docker_to_oci(media_type: &str) -> &str {
    match media_type {
        DOCKER_MANIFEST => OCI_MANIFEST,
        DOCKER_LIST => OCI_INDEX,
        DOCKER_CONFIG => OCI_CONFIG,
        DOCKER_LAYER => OCI_LAYER,
        DOCKER_LAYER_GZIP => OCI_LAYER_GZIP,
        DOCKER_FOREIGN_GZIP => OCI_LAYER_ND_GZIP,
        other => other,
    }
}
