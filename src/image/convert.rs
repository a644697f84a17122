//! Docker v2s2 -> OCI media type conversion, for destinations that hold only
//! OCI content (OCI layouts and archives), as `skopeo copy` does when it
//! writes a Docker image into an `oci:` layout.
//!
//! The config blob is not touched: a Docker image config is a valid OCI image
//! config. Only media types change, so the manifest digest changes and every
//! index above it must be rewritten (the copy stage does that).

use serde_json::Value;

use super::media::{self, Kind};
use super::{ImageError, Manifest};

/// The OCI form of a Docker manifest or manifest list; OCI input is returned
/// unchanged.
pub fn to_oci(m: &Manifest) -> Result<Manifest, ImageError> {
    if !m.kind.is_docker() {
        return Ok(m.clone());
    }
    let mut json = m.json.clone();
    let obj = json.as_object_mut().expect("manifests are objects");
    obj.insert(
        "mediaType".into(),
        Value::String(media::docker_to_oci(&m.media_type).into()),
    );
    if let Some(config) = obj.get_mut("config") {
        convert_descriptor(config);
    }
    for key in ["layers", "manifests"] {
        if let Some(Value::Array(items)) = obj.get_mut(key) {
            items.iter_mut().for_each(convert_descriptor);
        }
    }
    let out = Manifest::from_json(&format!("OCI form of {}", m.digest), &json)?;
    debug_assert!(matches!(out.kind, Kind::OciManifest | Kind::OciIndex));
    Ok(out)
}

fn convert_descriptor(d: &mut Value) {
    if let Some(Value::String(mt)) = d.get_mut("mediaType") {
        *mt = media::docker_to_oci(mt).to_string();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn converts_media_types_and_keeps_the_rest() {
        let body = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": media::DOCKER_MANIFEST,
            "config": {"mediaType": media::DOCKER_CONFIG, "size": 2,
                       "digest": "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},
            "layers": [{"mediaType": media::DOCKER_LAYER_GZIP, "size": 3,
                        "digest": "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
                        "x-extra": true}]
        });
        let m = Manifest::from_json("m", &body).unwrap();
        let oci = to_oci(&m).unwrap();
        assert_eq!(oci.kind, Kind::OciManifest);
        assert_eq!(oci.media_type, media::OCI_MANIFEST);
        assert_eq!(oci.config().unwrap().unwrap().media_type, media::OCI_CONFIG);
        let layer = &oci.layers().unwrap()[0];
        assert_eq!(layer.media_type, media::OCI_LAYER_GZIP);
        assert_eq!(layer.raw["x-extra"], true);
        assert_ne!(oci.digest, m.digest);
    }
}
