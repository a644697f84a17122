//! Is a destination already slimmed from this source with these settings?
//! Decided from manifests (and, for Docker images, their small config
//! blobs); no layer is read.
//!
//! slim records what it did in its output (image/provenance.rs): an OCI manifest or
//! index carries the annotations `dev.slim.source.digest` and
//! `dev.slim.settings.digest`; a Docker v2s2 manifest, which has no
//! annotations, carries them as labels of its config. A Docker manifest
//! list has neither, so it counts as up to date when every image in it
//! records one of the source index's images (all of them, once each) and the
//! settings, and everything else in it is carried over from the source.
//!
//! A faithful copy records nothing: it is up to date when the destination
//! has the source's manifest digest.

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::Value;

use crate::digest::Digest;
use crate::image::provenance::{ANNOTATION_SETTINGS_DIGEST, ANNOTATION_SOURCE_DIGEST};
use crate::image::{MAX_CONFIG_BYTES, Manifest, Platform, media};
use crate::reference::RegistryRef;
use crate::registry::{RegistryClient, RegistryError};
use crate::transport::registry::RegistrySource;
use crate::transport::{Source, io_error, open_verified};

/// What to do with one item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The destination is slim's output for this source and settings.
    UpToDate { output: Digest, reason: String },
    /// Slim it, because `reason`. `replaces`: the destination tag exists
    /// (so its blobs may well be made again).
    Slim { reason: String, replaces: bool },
}

/// The source's digest now (HEAD; a GET when the registry sends no
/// `Docker-Content-Digest`).
pub fn source_digest(client: &RegistryClient, source: &RegistryRef) -> Result<Digest> {
    let reference = source.manifest_reference();
    if let Some(d) = client.head_manifest(source, &reference)? {
        return Ok(d);
    }
    let fetched = client.get_manifest(source, &reference)?;
    Ok(Digest::sha256_of(&fetched.bytes))
}

/// Compares what the destination records with the source digest and the
/// settings digest (`None`: a faithful copy).
pub fn decide(
    client: &Arc<RegistryClient>,
    source: &RegistryRef,
    source_digest: &Digest,
    destination: &RegistryRef,
    settings_digest: Option<&Digest>,
    platforms: &[Platform],
) -> Result<Decision> {
    let reference = destination.manifest_reference();
    let fetched = match client.get_manifest(destination, &reference) {
        Ok(f) => f,
        Err(RegistryError::NotFound { .. }) => {
            return Ok(Decision::Slim {
                reason: "not written yet".into(),
                replaces: false,
            });
        }
        Err(e) => return Err(e.into()),
    };
    let what = format!("manifest of {destination}");
    let dest = Manifest::parse(&what, fetched.bytes, fetched.content_type.as_deref())?;
    if let Some(d) = fetched
        .digest
        .as_deref()
        .and_then(|d| d.parse::<Digest>().ok())
    {
        d.verify(&what, &dest.bytes)?;
    }
    let Some(settings_digest) = settings_digest else {
        return Ok(if &dest.digest == source_digest {
            Decision::UpToDate {
                output: dest.digest.clone(),
                reason: "a copy of the source's manifest".into(),
            }
        } else {
            Decision::Slim {
                reason: "the destination differs from the source".into(),
                replaces: true,
            }
        });
    };
    let dest_src = RegistrySource::new(client.clone(), destination.with_digest(&dest.digest));
    let found = if dest.kind.is_docker() && dest.is_index() {
        let src = RegistrySource::new(client.clone(), source.with_digest(source_digest));
        docker_list(&dest_src, &dest, &src, settings_digest, platforms)?
    } else {
        let r = recorded(&dest_src, &dest)?;
        compare(r, source_digest, settings_digest)
    };
    Ok(match found {
        Ok(reason) => Decision::UpToDate {
            output: dest.digest,
            reason,
        },
        Err(reason) => Decision::Slim {
            reason,
            replaces: true,
        },
    })
}

/// (source digest, settings digest) as the output records them.
#[derive(Debug, Default)]
struct Recorded {
    source: Option<String>,
    settings: Option<String>,
}

fn compare(
    r: Recorded,
    source_digest: &Digest,
    settings_digest: &Digest,
) -> Result<String, String> {
    let (Some(source), Some(settings)) = (r.source, r.settings) else {
        return Err("the destination was not written by slim".into());
    };
    if source != source_digest.to_string() {
        return Err(format!(
            "the source changed (slimmed from {}, now {})",
            short(&source),
            short(&source_digest.to_string())
        ));
    }
    if settings != settings_digest.to_string() {
        return Err("the settings changed".into());
    }
    Ok(format!(
        "slimmed from {} with these settings",
        short(&source)
    ))
}

fn short(d: &str) -> String {
    match d.split_once(':') {
        Some((alg, hex)) if hex.len() > 12 => format!("{alg}:{}", &hex[..12]),
        _ => d.to_string(),
    }
}

/// What one manifest records: its annotations, or (Docker v2s2) its
/// config's labels.
fn recorded(src: &dyn Source, m: &Manifest) -> Result<Recorded> {
    let from = |map: Option<&Value>| Recorded {
        source: map
            .and_then(|a| a.get(ANNOTATION_SOURCE_DIGEST))
            .and_then(Value::as_str)
            .map(str::to_string),
        settings: map
            .and_then(|a| a.get(ANNOTATION_SETTINGS_DIGEST))
            .and_then(Value::as_str)
            .map(str::to_string),
    };
    if !m.kind.is_docker() || m.is_index() {
        return Ok(from(m.json.get("annotations")));
    }
    let Some(config) = m.config()? else {
        return Ok(Recorded::default());
    };
    if config.size > MAX_CONFIG_BYTES || !media::is_image_config(&config.media_type) {
        return Ok(Recorded::default());
    }
    let mut bytes = Vec::new();
    open_verified(src, &config)?
        .read_to_end(&mut bytes)
        .map_err(io_error)
        .with_context(|| format!("reading config {} of {}", config.digest, src.name()))?;
    let json = crate::image::parse_json(
        &format!("config {} of {}", config.digest, src.name()),
        &bytes,
        crate::image::MAX_JSON_VALUES,
    )?;
    Ok(from(json.pointer("/config/Labels")))
}

/// A Docker manifest list: judged by its images (see the module docs).
fn docker_list(
    dest_src: &dyn Source,
    dest: &Manifest,
    source: &dyn Source,
    settings_digest: &Digest,
    platforms: &[Platform],
) -> Result<Result<String, String>> {
    let src_root = source.root()?;
    if !src_root.is_index() {
        return Ok(Err("the source is no longer an index".into()));
    }
    let kept = |p: &Option<Platform>| {
        platforms.is_empty()
            || p.as_ref()
                .is_some_and(|p| platforms.iter().any(|w| w.selects(p)))
    };
    // What slimming the source would make of each child: an image records
    // its source digest; anything else is carried over by digest.
    let mut expected: BTreeMap<String, usize> = BTreeMap::new();
    for d in src_root.manifests()? {
        if !kept(&d.platform) && d.platform.is_some() {
            continue;
        }
        *expected.entry(d.digest.to_string()).or_default() += 1;
    }
    let mut found: BTreeMap<String, usize> = BTreeMap::new();
    for d in dest.manifests()? {
        let mut key = d.digest.to_string();
        if media::is_manifest_type(&d.media_type) {
            let child = dest_src.manifest(&d)?;
            if child.is_container_image() {
                let r = recorded(dest_src, &child)?;
                if r.source.is_some() || r.settings.is_some() {
                    if r.settings.as_deref() != Some(settings_digest.to_string().as_str()) {
                        return Ok(Err("the settings changed".into()));
                    }
                    key = r.source.unwrap_or_default();
                }
            }
        }
        *found.entry(key).or_default() += 1;
    }
    if found == expected {
        Ok(Ok(format!(
            "every image of {} slimmed with these settings",
            short(&src_root.digest.to_string())
        )))
    } else if found.keys().all(|k| !expected.contains_key(k)) {
        Ok(Err(
            "the destination was not written by slim from this source".into(),
        ))
    } else {
        Ok(Err("the source changed (its images differ)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_digests_are_compared() {
        let src = Digest::sha256_of(b"source");
        let set = Digest::sha256_of(b"settings");
        let rec = |s: &Digest, t: &Digest| Recorded {
            source: Some(s.to_string()),
            settings: Some(t.to_string()),
        };
        assert!(compare(rec(&src, &set), &src, &set).is_ok());
        let other = Digest::sha256_of(b"other");
        assert!(
            compare(rec(&other, &set), &src, &set)
                .unwrap_err()
                .contains("source changed")
        );
        assert!(
            compare(rec(&src, &other), &src, &set)
                .unwrap_err()
                .contains("settings changed")
        );
        assert!(
            compare(Recorded::default(), &src, &set)
                .unwrap_err()
                .contains("not written by slim")
        );
    }
}
