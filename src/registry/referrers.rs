//! Referrers: artifacts attached to a manifest through their `subject`
//! (OCI image spec 1.1, "Guidelines for artifact usage"; distribution spec
//! 1.1, "Listing Referrers" and "Referrers Tag Schema").
//!
//! Pushing: the artifact's blobs, then its manifest by digest. A registry
//! with the referrers API says so by answering the PUT with an
//! `OCI-Subject` header, and indexes the artifact itself. Otherwise the
//! client keeps the list: the image index tagged `sha256-<hex of the
//! subject>` is read (a 404 starts an empty one), the artifact's
//! descriptor (its `artifactType` and annotations) appended unless listed
//! already, and the index pushed back under that tag.
//!
//! Listing: `GET /v2/<name>/referrers/<digest>` where it answers 200 with
//! an image index, else the tag schema's index.

use std::sync::Arc;

use reqwest::StatusCode;
use reqwest::header;
use serde_json::{Value, json};

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::reply::{header_str, read_limited};
use super::request::Call;
use crate::digest::Digest;
use crate::image::{Descriptor, media};
use crate::reference::RegistryRef;

/// The empty JSON object `{}`, the config of an artifact that has none
/// (image spec 1.1, "Guidance for an Empty Descriptor").
pub const EMPTY_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
const EMPTY: &[u8] = b"{}";

/// How the registry came to list an artifact.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listed {
    /// The registry's referrers API (it answered `OCI-Subject`).
    Api,
    /// The `sha256-<hex>` tag slim wrote.
    TagSchema,
}

/// The referrers tag of `subject`: `<alg>-<hex>`.
pub fn tag_of(subject: &Digest) -> String {
    format!("{}-{}", subject.algorithm().name(), subject.hex())
}

/// An artifact manifest (image spec 1.1): `artifact_type`, the empty
/// config, `layers` and `subject`; compact JSON, fields in this order, so
/// the same inputs give the same digest.
pub fn artifact_manifest(
    artifact_type: &str,
    layers: &[Descriptor],
    subject: &Descriptor,
    annotations: &serde_json::Map<String, Value>,
) -> Vec<u8> {
    let mut m = json!({
        "schemaVersion": 2,
        "mediaType": media::OCI_MANIFEST,
        "artifactType": artifact_type,
        "config": {
            "mediaType": EMPTY_MEDIA_TYPE,
            "digest": Digest::sha256_of(EMPTY).to_string(),
            "size": EMPTY.len(),
            "data": "e30=",
        },
        "layers": layers.iter().map(|l| l.raw.clone()).collect::<Vec<_>>(),
        "subject": {
            "mediaType": subject.media_type,
            "digest": subject.digest.to_string(),
            "size": subject.size,
        },
    });
    if !annotations.is_empty() {
        m["annotations"] = Value::Object(annotations.clone());
    }
    serde_json::to_vec(&m).expect("JSON values serialize")
}

impl RegistryClient {
    /// Pushes a small blob held in memory, unless the repository has it.
    pub fn push_small_blob(
        self: &Arc<Self>,
        r: &RegistryRef,
        bytes: &[u8],
    ) -> Result<Digest, RegistryError> {
        let digest = Digest::sha256_of(bytes);
        if self.blob_exists(r, &digest, &Scope::push(&r.repository))? {
            return Ok(digest);
        }
        let io = |e: std::io::Error| RegistryError::Protocol {
            what: format!("pushing blob {digest}"),
            reason: format!("cannot stage it in a temporary file: {e}"),
        };
        let mut file = tempfile::NamedTempFile::new().map_err(io)?;
        std::io::Write::write_all(&mut file, bytes).map_err(io)?;
        self.upload_blob(r, &digest, file.path(), bytes.len() as u64)?;
        Ok(digest)
    }

    /// Pushes an artifact (its manifest `bytes`, whose `subject` is in the
    /// same repository) and makes sure the subject's referrers list it.
    /// Its blobs must be pushed already (the empty config included:
    /// [`RegistryClient::push_empty_config`]).
    pub fn attach_artifact(
        &self,
        r: &RegistryRef,
        bytes: &[u8],
        subject: &Digest,
    ) -> Result<(Digest, Listed), RegistryError> {
        let digest = Digest::sha256_of(bytes);
        let json: Value = serde_json::from_slice(bytes).map_err(|e| RegistryError::Protocol {
            what: "attaching an artifact".into(),
            reason: format!("its manifest is not JSON: {e}"),
        })?;
        let what = format!(
            "pushing artifact {digest} to {}/{} (subject {subject})",
            r.registry, r.repository
        );
        let resp = Call::new(r, Scope::push(&r.repository), &what)
            .put(format!("/v2/{}/manifests/{digest}", r.repository))
            .header(header::CONTENT_TYPE, media::OCI_MANIFEST)
            .bytes(bytes.to_vec())
            .send(self)?;
        if header_str(resp.headers(), "oci-subject").as_deref() == Some(&subject.to_string()) {
            return Ok((digest, Listed::Api));
        }
        // The referrers tag schema: read, add, write back.
        let tag = tag_of(subject);
        let mut index = match self.tag_schema_index(r, subject)? {
            Some(index) => index,
            None => json!({
                "schemaVersion": 2,
                "mediaType": media::OCI_INDEX,
                "manifests": [],
            }),
        };
        let manifests = index["manifests"]
            .as_array_mut()
            .expect("checked by tag_schema_index");
        let listed = manifests
            .iter()
            .any(|d| d["digest"].as_str() == Some(&digest.to_string()));
        if !listed {
            let mut d = json!({
                "mediaType": media::OCI_MANIFEST,
                "digest": digest.to_string(),
                "size": bytes.len(),
            });
            let artifact_type = json["artifactType"]
                .as_str()
                .or_else(|| json["config"]["mediaType"].as_str());
            if let Some(t) = artifact_type {
                d["artifactType"] = Value::String(t.to_string());
            }
            if let Some(a) = json.get("annotations").filter(|a| a.is_object()) {
                d["annotations"] = a.clone();
            }
            manifests.push(d);
            let index = serde_json::to_vec(&index).expect("JSON values serialize");
            self.put_manifest(r, &tag, &index, media::OCI_INDEX)?;
        }
        Ok((digest, Listed::TagSchema))
    }

    /// Pushes the empty config `{}` (for artifacts without one).
    pub fn push_empty_config(self: &Arc<Self>, r: &RegistryRef) -> Result<(), RegistryError> {
        self.push_small_blob(r, EMPTY).map(|_| ())
    }

    /// The descriptors of the artifacts whose subject is `subject`: from
    /// the referrers API where the registry has it, else from the
    /// referrers tag. Empty when there are none.
    pub fn referrers(
        &self,
        r: &RegistryRef,
        subject: &Digest,
    ) -> Result<Vec<Descriptor>, RegistryError> {
        let what = format!(
            "listing the referrers of {}/{}@{subject}",
            r.registry, r.repository
        );
        let resp = Call::new(r, Scope::pull(&r.repository), &what)
            .get(format!("/v2/{}/referrers/{subject}", r.repository))
            .header(header::ACCEPT, media::OCI_INDEX)
            .or(StatusCode::NOT_FOUND)
            .or(StatusCode::BAD_REQUEST)
            .or(StatusCode::METHOD_NOT_ALLOWED)
            .send(self)?;
        let is_index = header_str(resp.headers(), header::CONTENT_TYPE.as_str())
            .is_some_and(|t| t.starts_with(media::OCI_INDEX));
        let index = if resp.status() == StatusCode::OK && is_index {
            let bytes = read_limited(resp, crate::image::MAX_MANIFEST_BYTES, &what)?;
            Some(index_json(&what, &bytes)?)
        } else {
            self.tag_schema_index(r, subject)?
        };
        let Some(index) = index else {
            return Ok(Vec::new());
        };
        index["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|d| {
                Descriptor::parse(&what, d).map_err(|e| RegistryError::Protocol {
                    what: what.clone(),
                    reason: e.to_string(),
                })
            })
            .collect()
    }

    /// The index under the referrers tag of `subject`, if there is one. A
    /// manifest there that is no image index is an error (the distribution
    /// spec says to stop rather than overwrite it).
    fn tag_schema_index(
        &self,
        r: &RegistryRef,
        subject: &Digest,
    ) -> Result<Option<Value>, RegistryError> {
        let tag = tag_of(subject);
        let what = format!(
            "reading the referrers tag {}/{}:{tag}",
            r.registry, r.repository
        );
        let resp = Call::new(r, Scope::pull(&r.repository), &what)
            .get(format!("/v2/{}/manifests/{tag}", r.repository))
            .header(header::ACCEPT, media::OCI_INDEX)
            .or(StatusCode::NOT_FOUND)
            .send(self)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let bytes = read_limited(resp, crate::image::MAX_MANIFEST_BYTES, &what)?;
        index_json(&what, &bytes).map(Some)
    }
}

/// An image index's JSON, with a `manifests` list.
fn index_json(what: &str, bytes: &[u8]) -> Result<Value, RegistryError> {
    let bad = |reason: String| RegistryError::Protocol {
        what: what.to_string(),
        reason,
    };
    let v = crate::image::parse_json(what, bytes, crate::image::MAX_JSON_VALUES)
        .map_err(|e| bad(e.to_string()))?;
    let media_type = v["mediaType"].as_str().unwrap_or(media::OCI_INDEX);
    if media_type != media::OCI_INDEX || !v["manifests"].is_array() {
        return Err(bad(format!(
            "it holds a {media_type} with no manifests list, not an image index of referrers; slim does not overwrite it"
        )));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_artifact_manifest_is_stable_and_names_its_subject() {
        let subject = Descriptor::new(media::OCI_MANIFEST, Digest::sha256_of(b"image"), 5);
        let layer = Descriptor::new("application/x.test", Digest::sha256_of(b"r"), 1);
        let a = artifact_manifest(
            "application/x.test",
            std::slice::from_ref(&layer),
            &subject,
            &Default::default(),
        );
        let b = artifact_manifest(
            "application/x.test",
            &[layer],
            &subject,
            &Default::default(),
        );
        assert_eq!(a, b);
        let v: Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["subject"]["digest"], subject.digest.to_string());
        assert_eq!(v["config"]["mediaType"], EMPTY_MEDIA_TYPE);
        assert_eq!(
            v["config"]["digest"],
            "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
        );
        assert_eq!(
            tag_of(&subject.digest),
            format!("sha256-{}", subject.digest.hex())
        );
    }
}
