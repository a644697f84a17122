//! Provenance: what a slimmed image records about where it came from and
//! how it was made, so a rerun can tell "slimmed from this source with these
//! settings" from a manifest alone (batch/check.rs reads it back).
//!
//! OCI manifests and indexes carry it as annotations; Docker configs as
//! labels, since v2s2 manifests have no annotations. The base-image keys are
//! OCI's pre-defined ones (image-spec `annotations.md`).

use serde_json::{Map, Value};

use crate::digest::Digest;

/// Annotation keys slim writes (OCI manifests and indexes; Docker configs
/// get them as labels, since v2s2 manifests have no annotations).
pub const ANNOTATION_SOURCE_DIGEST: &str = "dev.slim.source.digest";
pub const ANNOTATION_SETTINGS: &str = "dev.slim.settings";
pub const ANNOTATION_SETTINGS_DIGEST: &str = "dev.slim.settings.digest";
/// OCI's pre-defined base-image annotations.
pub const ANNOTATION_BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const ANNOTATION_BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// The digest of a settings description: identifies "slimmed the same
/// way".
pub fn settings_digest(settings: &str) -> Digest {
    Digest::sha256_of(settings.as_bytes())
}

/// Records where an image came from and how it was slimmed (manifest or
/// index annotations; config labels for Docker images).
pub fn record_provenance(map: &mut Map<String, Value>, source: &Digest, settings: &str) {
    map.insert(
        ANNOTATION_SOURCE_DIGEST.into(),
        Value::String(source.to_string()),
    );
    map.insert(
        ANNOTATION_SETTINGS.into(),
        Value::String(settings.to_string()),
    );
    map.insert(
        ANNOTATION_SETTINGS_DIGEST.into(),
        Value::String(settings_digest(settings).to_string()),
    );
}

/// The OCI base-image annotations: they claim the image shares its first
/// layers with the base, so they name the `--keep-base REF` image, stay as
/// the source had them when `--keep-base N` keeps layers, and go when no
/// source layer is kept (a claim the output no longer makes true).
pub fn record_base(map: &mut Map<String, Value>, keep: usize, base: Option<(String, Digest)>) {
    match base {
        Some((name, digest)) => {
            map.insert(ANNOTATION_BASE_NAME.into(), Value::String(name));
            map.insert(
                ANNOTATION_BASE_DIGEST.into(),
                Value::String(digest.to_string()),
            );
        }
        None if keep == 0 => {
            map.remove(ANNOTATION_BASE_NAME);
            map.remove(ANNOTATION_BASE_DIGEST);
        }
        None => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_annotations_name_the_kept_base_or_go() {
        let source = Digest::sha256_of(b"source");
        let mut map = Map::new();
        map.insert(ANNOTATION_BASE_NAME.into(), "debian".into());
        record_provenance(&mut map, &source, "profile=none");
        assert_eq!(map[ANNOTATION_SOURCE_DIGEST], source.to_string());
        assert_eq!(
            map[ANNOTATION_SETTINGS_DIGEST],
            Digest::sha256_of(b"profile=none").to_string()
        );
        // --keep-base N: as the source had them.
        record_base(&mut map, 2, None);
        assert_eq!(map[ANNOTATION_BASE_NAME], "debian");
        // Nothing kept: the claim goes.
        record_base(&mut map, 0, None);
        assert!(!map.contains_key(ANNOTATION_BASE_NAME));
        record_base(&mut map, 1, Some(("base:1".into(), source.clone())));
        assert_eq!(map[ANNOTATION_BASE_DIGEST], source.to_string());
    }
}
