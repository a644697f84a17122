//! The image model: manifests, indexes, descriptors and platforms, read from
//! exact JSON bytes.
//!
//! A [`Manifest`] keeps the bytes it was read from: a faithful copy pushes
//! those bytes unchanged, and any rewrite edits a `serde_json::Value` (with
//! `preserve_order`) and hashes exactly the bytes it writes. Typed models such
//! as oci-spec's drop unknown fields and reorder maps, so they are never
//! re-serialized here.

pub mod config;
pub mod convert;
pub mod media;
pub mod provenance;

use std::collections::BTreeMap;
use std::fmt;

use serde_json::Value;

use crate::digest::{Digest, DigestError};
pub use media::Kind;

/// Manifests and configs are small; anything larger is refused before it is
/// read (the distribution spec suggests registries accept at least 4 MiB).
pub const MAX_MANIFEST_BYTES: u64 = 8 << 20;
pub const MAX_CONFIG_BYTES: u64 = 8 << 20;
/// At most this many JSON values in a manifest or config: a parsed value
/// costs 30–80 bytes of memory however few bytes it took in the text
/// (`[0,0,0,…]`), and real ones hold a few thousand.
pub const MAX_JSON_VALUES: usize = 250_000;

/// An upper bound of how many values a JSON text holds: each value but the
/// first follows a `[`, `,` or `:` outside a string. One pass, no
/// allocation.
pub fn json_value_bound(bytes: &[u8]) -> usize {
    let (mut n, mut in_string, mut escaped) = (1usize, false, false);
    for &b in bytes {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
        } else {
            match b {
                b'"' => in_string = true,
                b'[' | b',' | b':' => n += 1,
                _ => {}
            }
        }
    }
    n
}

/// Parses JSON read from an image, refusing texts of more than
/// `max_values` values before building them.
pub fn parse_json(what: &str, bytes: &[u8], max_values: usize) -> Result<Value, ImageError> {
    let values = json_value_bound(bytes);
    if values > max_values {
        return Err(ImageError::Invalid {
            what: what.to_string(),
            reason: format!(
                "holds about {values} JSON values, more than the {max_values} slim accepts (real ones hold a few thousand)"
            ),
        });
    }
    serde_json::from_slice(bytes).map_err(|source| ImageError::NotJson {
        what: what.to_string(),
        source,
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{what}: not valid JSON")]
    NotJson {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
    #[error(
        "{what}: Docker image manifest schema 1 is not supported (re-push the image with a current Docker or convert it with `skopeo copy --format v2s2`)"
    )]
    SchemaV1 { what: String },
    #[error(
        "{what}: media type {media_type:?} is not an image manifest or index slim knows (OCI or Docker v2 schema 2); refusing it, as Docker, containerd and skopeo do"
    )]
    UnknownMediaType { what: String, media_type: String },
    #[error(transparent)]
    Digest(#[from] DigestError),
}

/// A content descriptor (OCI image spec, "Descriptors"), with the JSON it was
/// read from so unknown fields survive a copy.
#[derive(Clone, Debug, PartialEq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    pub platform: Option<Platform>,
    pub annotations: BTreeMap<String, String>,
    pub raw: Value,
}

impl Descriptor {
    pub fn parse(what: &str, v: &Value) -> Result<Descriptor, ImageError> {
        let invalid = |reason: &str| ImageError::Invalid {
            what: what.to_string(),
            reason: reason.to_string(),
        };
        let media_type = v
            .get("mediaType")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("descriptor without mediaType"))?
            .to_string();
        let digest: Digest = v
            .get("digest")
            .and_then(Value::as_str)
            .ok_or_else(|| invalid("descriptor without digest"))?
            .parse()?;
        let size = v
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| invalid("descriptor without a valid size"))?;
        let platform = v.get("platform").map(Platform::from_json);
        let annotations = v
            .get("annotations")
            .and_then(Value::as_object)
            .map(|m| {
                m.iter()
                    .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        Ok(Descriptor {
            media_type,
            digest,
            size,
            platform,
            annotations,
            raw: v.clone(),
        })
    }

    /// A fresh descriptor (for blobs slim wrote).
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Descriptor {
        let raw = serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
        });
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            raw,
        }
    }

    /// The same descriptor pointing at other content (keeps platform,
    /// annotations and unknown fields).
    pub fn retarget(&self, media_type: &str, digest: &Digest, size: u64) -> Descriptor {
        let mut raw = self.raw.clone();
        if let Some(o) = raw.as_object_mut() {
            o.insert("mediaType".into(), Value::String(media_type.to_string()));
            o.insert("digest".into(), Value::String(digest.to_string()));
            o.insert("size".into(), Value::from(size));
        }
        Descriptor {
            media_type: media_type.to_string(),
            digest: digest.clone(),
            size,
            raw,
            ..self.clone()
        }
    }

    /// A short name for messages: `sha256:0123456789ab`.
    pub fn short(&self) -> String {
        short_digest(&self.digest)
    }
}

pub fn short_digest(d: &Digest) -> String {
    format!("{}:{}", d.algorithm().name(), &d.hex()[..12])
}

/// `os/architecture[/variant]`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Platform {
    pub os: String,
    pub architecture: String,
    pub variant: Option<String>,
}

impl Platform {
    pub fn from_json(v: &Value) -> Platform {
        let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_string();
        let variant = v
            .get("variant")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string);
        Platform {
            os: s("os"),
            architecture: s("architecture"),
            variant,
        }
    }

    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        match parts.as_slice() {
            [os, arch] if !os.is_empty() && !arch.is_empty() => Ok(Platform {
                os: os.to_string(),
                architecture: arch.to_string(),
                variant: None,
            }),
            [os, arch, variant] if !os.is_empty() && !arch.is_empty() && !variant.is_empty() => {
                Ok(Platform {
                    os: os.to_string(),
                    architecture: arch.to_string(),
                    variant: Some(variant.to_string()),
                })
            }
            _ => Err(format!(
                "malformed platform {s:?} (expected os/arch[/variant], e.g. linux/arm64)"
            )),
        }
    }

    /// The platform of the machine slim runs on.
    pub fn host() -> Platform {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            "x86" => "386",
            "powerpc64" => "ppc64le",
            other => other,
        };
        Platform {
            os: "linux".into(),
            architecture: architecture.into(),
            variant: None,
        }
    }

    /// Whether `self` (what the user asked for) selects `image`. A request
    /// without a variant matches any variant; `arm64` means `arm64/v8`, as
    /// in containerd's platform matcher.
    pub fn selects(&self, image: &Platform) -> bool {
        if self.os != image.os || self.architecture != image.architecture {
            return false;
        }
        match (&self.variant, &image.variant) {
            (None, _) => true,
            (Some(want), Some(have)) => want == have,
            (Some(want), None) => self.architecture == "arm64" && want == "v8",
        }
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(v) = &self.variant {
            write!(f, "/{v}")?;
        }
        Ok(())
    }
}

/// A manifest or index as read: exact bytes, their digest, the media type it
/// is served or referenced as, and the parsed JSON.
#[derive(Clone, Debug)]
pub struct Manifest {
    pub bytes: Vec<u8>,
    pub digest: Digest,
    pub media_type: String,
    pub kind: Kind,
    pub json: Value,
}

impl Manifest {
    /// Parses manifest bytes. `declared` is the media type from the
    /// descriptor or Content-Type, used when the JSON has no `mediaType`
    /// (umoci writes none).
    pub fn parse(
        what: &str,
        bytes: Vec<u8>,
        declared: Option<&str>,
    ) -> Result<Manifest, ImageError> {
        let digest = Digest::sha256_of(&bytes);
        Self::parse_with_digest(what, bytes, digest, declared)
    }

    pub fn parse_with_digest(
        what: &str,
        bytes: Vec<u8>,
        digest: Digest,
        declared: Option<&str>,
    ) -> Result<Manifest, ImageError> {
        let json = parse_json(what, &bytes, MAX_JSON_VALUES)?;
        if !json.is_object() {
            return Err(ImageError::Invalid {
                what: what.to_string(),
                reason: "a manifest must be a JSON object".into(),
            });
        }
        if json.get("schemaVersion").and_then(Value::as_u64) == Some(1) {
            return Err(ImageError::SchemaV1 {
                what: what.to_string(),
            });
        }
        let in_json = match json.get("mediaType") {
            None | Some(Value::Null) => None,
            Some(Value::String(m)) => Some(m.as_str()),
            Some(other) => {
                return Err(ImageError::Invalid {
                    what: what.to_string(),
                    reason: format!("mediaType is not a string ({other})"),
                });
            }
        };
        // A manifest names what it is; one that names something else is not
        // read by its shape (an unknown type read as OCI was rewritten as an
        // OCI image). A declared type (Content-Type, descriptor) counts when
        // the JSON has none, unless it is a generic JSON type.
        let named = match in_json {
            Some(m) => Some(m),
            None => declared.filter(|d| !media::is_generic_json(d)),
        };
        if let Some(m) = named
            && !media::is_manifest_type(m)
        {
            return Err(ImageError::UnknownMediaType {
                what: what.to_string(),
                media_type: m.chars().take(200).collect(),
            });
        }
        let kind = Kind::detect(in_json.or(declared), &json);
        let media_type = match (in_json, declared) {
            (Some(m), _) => m.to_string(),
            (None, Some(d))
                if media::is_manifest_type(d) && Kind::detect(Some(d), &json) == kind =>
            {
                d.to_string()
            }
            _ => kind.default_media_type().to_string(),
        };
        let m = Manifest {
            bytes,
            digest,
            media_type,
            kind,
            json,
        };
        // Validate every descriptor now, so later stages can rely on them.
        m.config()?;
        m.layers()?;
        m.manifests()?;
        Ok(m)
    }

    fn descriptors(&self, key: &str) -> Result<Vec<Descriptor>, ImageError> {
        match self.json.get(key) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, v)| {
                    Descriptor::parse(
                        &format!("manifest {} {key}[{i}]", short_digest(&self.digest)),
                        v,
                    )
                })
                .collect(),
            Some(_) => Err(ImageError::Invalid {
                what: format!("manifest {}", short_digest(&self.digest)),
                reason: format!("{key} is not an array"),
            }),
        }
    }

    pub fn config(&self) -> Result<Option<Descriptor>, ImageError> {
        self.json
            .get("config")
            .map(|v| {
                Descriptor::parse(
                    &format!("manifest {} config", short_digest(&self.digest)),
                    v,
                )
            })
            .transpose()
    }

    pub fn layers(&self) -> Result<Vec<Descriptor>, ImageError> {
        self.descriptors("layers")
    }

    pub fn manifests(&self) -> Result<Vec<Descriptor>, ImageError> {
        self.descriptors("manifests")
    }

    pub fn is_index(&self) -> bool {
        self.kind.is_index()
    }

    /// An image manifest whose config is a container image config (not an
    /// artifact or attestation): the kind slim can slim.
    pub fn is_container_image(&self) -> bool {
        self.kind.is_image_manifest()
            && self
                .config()
                .ok()
                .flatten()
                .is_some_and(|c| media::is_image_config(&c.media_type))
    }

    /// Every blob this manifest references directly (config then layers),
    /// each once.
    pub fn blobs(&self) -> Result<Vec<Descriptor>, ImageError> {
        let mut out: Vec<Descriptor> = Vec::new();
        for d in self.config()?.into_iter().chain(self.layers()?) {
            if !out.iter().any(|o| o.digest == d.digest) {
                out.push(d);
            }
        }
        Ok(out)
    }

    /// A descriptor of this manifest, for an index.
    pub fn descriptor(&self) -> Descriptor {
        Descriptor::new(
            &self.media_type,
            self.digest.clone(),
            self.bytes.len() as u64,
        )
    }

    /// Serializes edited JSON into a new manifest (compact, field order kept).
    pub fn from_json(what: &str, json: &Value) -> Result<Manifest, ImageError> {
        let bytes = serde_json::to_vec(json).expect("JSON values serialize");
        Manifest::parse(what, bytes, None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_value_bounds() {
        assert_eq!(json_value_bound(b"0"), 1);
        assert_eq!(json_value_bound(br#"[0,0,0]"#), 4);
        assert_eq!(json_value_bound(br#"{"a":[1,2],"b":"x,[:\"]"}"#), 6);
        let big = format!("[{}0]", "0,".repeat(300_000));
        assert!(matches!(
            parse_json("m", big.as_bytes(), MAX_JSON_VALUES),
            Err(ImageError::Invalid { .. })
        ));
        assert!(parse_json("m", br#"{"a":[1,2]}"#, MAX_JSON_VALUES).is_ok());
    }

    #[test]
    fn platform_matching() {
        let p = |s| Platform::parse(s).unwrap();
        assert!(p("linux/arm64").selects(&p("linux/arm64/v8")));
        assert!(p("linux/arm64/v8").selects(&p("linux/arm64")));
        assert!(!p("linux/arm/v7").selects(&p("linux/arm/v6")));
        assert!(!p("linux/amd64").selects(&p("linux/arm64")));
        assert!(Platform::parse("linux").is_err());
    }

    #[test]
    fn manifest_without_media_type_uses_declared() {
        let body = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        let m = Manifest::parse("m", body.to_vec(), Some(media::OCI_MANIFEST)).unwrap();
        assert_eq!(m.kind, Kind::OciManifest);
        assert_eq!(m.media_type, media::OCI_MANIFEST);
        assert!(m.is_container_image());
        assert!(Manifest::parse("m", b"not json".to_vec(), None).is_err());
        assert!(matches!(
            Manifest::parse("m", br#"{"schemaVersion":1}"#.to_vec(), None),
            Err(ImageError::SchemaV1 { .. })
        ));
    }
}
