//! Manifests: GET (bytes, media type and the registry's digest, for the
//! caller to verify), HEAD (the digest, if the registry has it) and PUT
//! (the registry's digest checked against the bytes' own). Distribution
//! spec, "Pulling manifests", "Pushing Manifests".

use reqwest::StatusCode;
use reqwest::header;

use super::auth::Scope;
use super::client::RegistryClient;
use super::error::RegistryError;
use super::reply::{header_str, read_limited};
use super::request::Call;
use crate::digest::Digest;
use crate::image::media;
use crate::reference::RegistryRef;

/// A manifest as a registry served it. Not verified yet.
pub struct FetchedManifest {
    pub bytes: Vec<u8>,
    /// Content-Type without parameters.
    pub content_type: Option<String>,
    /// The `Docker-Content-Digest` header.
    pub digest: Option<String>,
}

/// `/v2/<name>/manifests/<reference>`.
fn path(r: &RegistryRef, reference: &str) -> String {
    format!("/v2/{}/manifests/{reference}", r.repository)
}

/// `verb manifest registry/repository:tag`, or `…@sha256:…` for a digest.
fn what(verb: &str, r: &RegistryRef, reference: &str) -> String {
    format!(
        "{verb} manifest {}/{}:{reference}",
        r.registry, r.repository
    )
}

impl RegistryClient {
    /// Fetches a manifest by tag or digest: its bytes, Content-Type and the
    /// `Docker-Content-Digest` header. The caller verifies the digest.
    pub fn get_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
    ) -> Result<FetchedManifest, RegistryError> {
        let what = what("pulling", r, reference).replace(":sha256:", "@sha256:");
        let resp = Call::new(r, Scope::pull(&r.repository), &what)
            .get(path(r, reference))
            .header(header::ACCEPT, media::ACCEPT_MANIFESTS.join(", "))
            .send(self)?;
        let content_type = header_str(resp.headers(), header::CONTENT_TYPE.as_str())
            .map(|s| s.split(';').next().unwrap_or(&s).trim().to_string());
        let digest = header_str(resp.headers(), "docker-content-digest");
        let bytes = read_limited(resp, crate::image::MAX_MANIFEST_BYTES, &what)?;
        Ok(FetchedManifest {
            bytes,
            content_type,
            digest,
        })
    }

    /// HEAD of a manifest: its digest if the registry has it.
    pub fn head_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
    ) -> Result<Option<Digest>, RegistryError> {
        let resp = Call::new(
            r,
            Scope::pull(&r.repository),
            what("checking", r, reference),
        )
        .head(path(r, reference))
        .header(header::ACCEPT, media::ACCEPT_MANIFESTS.join(", "))
        .or(StatusCode::NOT_FOUND)
        .send(self)?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        Ok(header_str(resp.headers(), "docker-content-digest").and_then(|d| d.parse().ok()))
    }

    /// Pushes manifest bytes under a tag or digest; the digest the registry
    /// reports is checked against the bytes' own.
    pub fn put_manifest(
        &self,
        r: &RegistryRef,
        reference: &str,
        bytes: &[u8],
        media_type: &str,
    ) -> Result<(), RegistryError> {
        let what = what("pushing", r, reference).replace(":sha256:", "@sha256:");
        let resp = Call::new(r, Scope::push(&r.repository), &what)
            .put(path(r, reference))
            .header(header::CONTENT_TYPE, media_type)
            .bytes(bytes.to_vec())
            .timeout(self.opts.upload_deadline(bytes.len() as u64))
            .send(self)?;
        let expected = Digest::sha256_of(bytes);
        if let Some(d) = header_str(resp.headers(), "docker-content-digest")
            && let Ok(d) = d.parse::<Digest>()
            && d.algorithm() == expected.algorithm()
            && d != expected
        {
            return Err(RegistryError::Protocol {
                what,
                reason: format!(
                    "the registry stored the manifest as {d}, but its bytes hash to {expected}"
                ),
            });
        }
        Ok(())
    }
}
