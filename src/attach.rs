//! The report travels with the image (`--attach-report`): the JSON report
//! of a run, pushed as an OCI artifact whose `subject` is the slim image,
//! and read back by `slim analyze` of that image.
//!
//! The artifact: `artifactType` [`REPORT_TYPE`], the empty config, one
//! layer (the report, titled `slim-report.json`). The registry lists it
//! among the image's referrers (see `registry/referrers.rs`: the referrers
//! API, else the `sha256-<hex>` tag), so `oras discover`, `regctl artifact
//! list` and registry UIs show it too.

use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::digest::Digest;
use crate::image::{Descriptor, Manifest};
use crate::reference::RegistryRef;
use crate::registry::{Listed, RegistryClient, artifact_manifest};

/// The artifact type (and the layer's media type) of an attached report.
pub const REPORT_TYPE: &str = "application/vnd.slim.report.v1+json";

/// A report bigger than this is not read back (slim's own are kilobytes).
pub const MAX_REPORT_BYTES: u64 = 16 << 20;

/// Pushes `report` (JSON bytes) to `r`'s repository as an artifact whose
/// subject is `subject` (the manifest or index just pushed there).
/// Returns the artifact's digest and how the registry lists it.
pub fn attach_report(
    client: &Arc<RegistryClient>,
    r: &RegistryRef,
    subject: &Descriptor,
    report: &[u8],
) -> Result<(Digest, Listed)> {
    let what = || {
        format!(
            "attaching the report to {}/{}@{}",
            r.registry, r.repository, subject.digest
        )
    };
    client.push_empty_config(r).with_context(what)?;
    let layer_digest = client.push_small_blob(r, report).with_context(what)?;
    let mut layer = Descriptor::new(REPORT_TYPE, layer_digest, report.len() as u64);
    layer.raw["annotations"] =
        serde_json::json!({"org.opencontainers.image.title": "slim-report.json"});
    let mut annotations = serde_json::Map::new();
    annotations.insert(
        "org.opencontainers.image.description".into(),
        Value::String("what slim removed from this image, and why".into()),
    );
    let manifest = artifact_manifest(REPORT_TYPE, &[layer], subject, &annotations);
    client
        .attach_artifact(r, &manifest, &subject.digest)
        .with_context(what)
}

/// The newest report attached to `subject` in `r`'s repository, if any:
/// the artifact's digest and the report. Manifest and blob are verified
/// against their digests and bounded in size.
pub fn read_attached_report(
    client: &Arc<RegistryClient>,
    r: &RegistryRef,
    subject: &Digest,
) -> Result<Option<(Digest, Value)>> {
    let referrers = client.referrers(r, subject)?;
    let Some(artifact) = referrers
        .iter()
        .rev()
        .find(|d| d.raw["artifactType"].as_str() == Some(REPORT_TYPE))
    else {
        return Ok(None);
    };
    let what = format!("the report attached as {}", artifact.digest);
    let fetched = client.get_manifest(r, &artifact.digest.to_string())?;
    if Digest::sha256_of(&fetched.bytes) != artifact.digest {
        bail!("{what}: the registry served a manifest with another digest");
    }
    let manifest = Manifest::parse(
        &what,
        fetched.bytes,
        Some(crate::image::media::OCI_MANIFEST),
    )?;
    if manifest.json["subject"]["digest"].as_str() != Some(&subject.to_string()) {
        bail!("{what}: its subject is not {subject}");
    }
    let layers = manifest.layers()?;
    let Some(layer) = layers.iter().find(|l| l.media_type == REPORT_TYPE) else {
        bail!("{what}: it has no {REPORT_TYPE} layer");
    };
    if layer.size > MAX_REPORT_BYTES {
        bail!("{what}: {} bytes, more than slim reads", layer.size);
    }
    let mut bytes = Vec::new();
    client
        .open_blob(r, &layer.digest, layer.size)?
        .take(MAX_REPORT_BYTES + 1)
        .read_to_end(&mut bytes)
        .with_context(|| format!("reading {what}"))?;
    if Digest::sha256_of(&bytes) != layer.digest || bytes.len() as u64 != layer.size {
        bail!(
            "{what}: the blob does not match its digest {}",
            layer.digest
        );
    }
    let report = crate::image::parse_json(&what, &bytes, crate::image::MAX_JSON_VALUES)?;
    Ok(Some((artifact.digest.clone(), report)))
}
