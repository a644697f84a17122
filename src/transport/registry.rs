//! Registry transport: an image in a Distribution-API registry.
//!
//! Reading verifies every manifest against the digest it was asked by (or
//! the `Docker-Content-Digest` the registry sends for a tag). Writing checks
//! for each blob first (HEAD), mounts from the source repository when both
//! live in the same registry, uploads from the spooled file otherwise, and
//! pushes the tagged manifest last.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use crate::cleanup::StagingDir;

use super::{Dest, Error, Result, Source, Staged};
use crate::digest::Digest;
use crate::image::{Descriptor, Manifest};
use crate::reference::RegistryRef;
use crate::registry::{RegistryClient, Scope};

pub struct RegistrySource {
    client: Arc<RegistryClient>,
    r: RegistryRef,
}

impl RegistrySource {
    pub fn new(client: Arc<RegistryClient>, r: RegistryRef) -> RegistrySource {
        RegistrySource { client, r }
    }
}

impl Source for RegistrySource {
    fn name(&self) -> String {
        self.r.to_string()
    }

    fn root(&self) -> Result<Manifest> {
        let reference = self.r.manifest_reference();
        let fetched = self.client.get_manifest(&self.r, &reference)?;
        let (bytes, content_type, header_digest) =
            (fetched.bytes, fetched.content_type, fetched.digest);
        let what = format!("manifest of {}", self.r);
        // Pinned by digest: the bytes must hash to it. By tag: to the digest
        // the registry announces, when it announces one.
        let expected = match (
            &self.r.digest,
            header_digest.as_deref().map(str::parse::<Digest>),
        ) {
            (Some(d), _) => Some(d.clone()),
            (None, Some(Ok(d))) => Some(d),
            (None, Some(Err(_))) | (None, None) => None,
        };
        let digest = match expected {
            // Pinned, `what` names the digest (`manifest of r@D`).
            Some(d) if self.r.digest.is_some() => {
                d.verify_named(&what, &bytes)?;
                d
            }
            Some(d) => {
                d.verify(&what, &bytes)?;
                d
            }
            None => Digest::sha256_of(&bytes),
        };
        // The digest of a manifest is always reported as sha256 of its bytes.
        let digest = if digest.algorithm() == crate::digest::Algorithm::Sha256 {
            digest
        } else {
            Digest::sha256_of(&bytes)
        };
        Ok(Manifest::parse_with_digest(
            &what,
            bytes,
            digest,
            content_type.as_deref(),
        )?)
    }

    fn manifest(&self, desc: &Descriptor) -> Result<Manifest> {
        let bytes = self
            .client
            .get_manifest(&self.r, &desc.digest.to_string())?
            .bytes;
        let what = format!("manifest {} of {}", desc.digest, self.r);
        if bytes.len() as u64 != desc.size {
            return Err(crate::registry::RegistryError::Protocol {
                what,
                reason: format!(
                    "the registry sent {} bytes, the index says {}",
                    bytes.len(),
                    desc.size
                ),
            }
            .into());
        }
        desc.digest.verify_named(&what, &bytes)?;
        Ok(Manifest::parse_with_digest(
            &what,
            bytes,
            desc.digest.clone(),
            Some(&desc.media_type),
        )?)
    }

    fn open_blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(std::io::BufReader::with_capacity(
            256 << 10,
            self.client.open_blob(&self.r, &desc.digest, desc.size)?,
        )))
    }

    fn registry_location(&self) -> Option<&RegistryRef> {
        Some(&self.r)
    }
}

pub struct RegistryDest {
    client: Arc<RegistryClient>,
    r: RegistryRef,
    staging: StagingDir,
}

impl RegistryDest {
    pub fn new(client: Arc<RegistryClient>, r: RegistryRef) -> std::io::Result<RegistryDest> {
        let staging = StagingDir::create_temp("slim-")?;
        Ok(RegistryDest { client, r, staging })
    }
}

impl Dest for RegistryDest {
    fn name(&self) -> String {
        self.r.to_string()
    }

    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self
            .client
            .blob_exists(&self.r, &desc.digest, &Scope::push(&self.r.repository))?)
    }

    fn mount_blob(&self, desc: &Descriptor, from: &RegistryRef) -> Result<bool> {
        if from.api_host() != self.r.api_host() || from.repository == self.r.repository {
            return Ok(false);
        }
        Ok(self
            .client
            .mount_blob(&self.r, &from.repository, &desc.digest)?)
    }

    fn staging_dir(&self) -> &Path {
        self.staging.path()
    }

    fn put_blob(&self, _desc: &Descriptor, blob: Staged) -> Result<()> {
        self.client
            .upload_blob(&self.r, &blob.digest, blob.file.path(), blob.size)?;
        Ok(())
    }

    /// Streams blobs while they are written. New layers are not streamed
    /// to a registry on this machine: there the upload is no network wait
    /// to hide, only the registry's own hashing and writing competing with
    /// compression for the same CPUs (measured slower on two cores).
    fn stream_blob(
        &self,
        data: Box<dyn Read + Send>,
        kind: super::StreamKind,
    ) -> Result<Option<Box<dyn super::BlobStream>>> {
        if kind == super::StreamKind::NewLayer
            && crate::reference::is_loopback_host(self.r.api_host())
        {
            return Ok(None);
        }
        Ok(Some(Box::new(self.client.stream_upload(&self.r, data)?)))
    }

    fn put_manifest(&self, m: &Manifest) -> Result<()> {
        self.client
            .put_manifest(&self.r, &m.digest.to_string(), &m.bytes, &m.media_type)?;
        Ok(())
    }

    fn commit(&self, root: &Manifest) -> Result<()> {
        if let Some(d) = &self.r.digest
            && d != &root.digest
        {
            return Err(Error::PinnedDigest {
                destination: self.r.to_string(),
                pinned: d.clone(),
                written: root.digest.clone(),
            });
        }
        let reference = match &self.r.tag {
            Some(t) => t.clone(),
            None => root.digest.to_string(),
        };
        self.client
            .put_manifest(&self.r, &reference, &root.bytes, &root.media_type)?;
        Ok(())
    }
}

impl super::BlobStream for crate::registry::StreamingUpload {
    fn commit(self: Box<Self>, desc: &Descriptor) -> Result<()> {
        Ok((*self).finish(&desc.digest, desc.size)?)
    }

    fn abort(self: Box<Self>) {
        (*self).abort()
    }
}
