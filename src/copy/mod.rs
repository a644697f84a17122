//! The copy stage: moves an image tree (index -> manifests -> config and
//! layers) from a [`Source`] to a [`Dest`], children before parents, the
//! root last.
//!
//! ```text
//! mod.rs      the tree walk: platforms chosen, attestations carried, media
//!             types made fit for the destination, manifests put, root last
//! blobs.rs    one blob: skip if present | cross-repo mount | stream | spool
//!             and verify; once per run, counted
//! slim.rs     one platform image: decode -> squash/filter/dedup -> encode,
//!             through blobs.rs
//! options.rs  how to copy and how to slim
//! ```
//!
//! Nothing is rewritten unless the destination cannot hold the source's
//! media types (Docker v2s2 into an OCI layout is converted, as skopeo does)
//! or platforms were deselected, so a plain copy keeps every manifest
//! digest.

mod blobs;
mod options;
mod slim;

use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::io;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::digest::Digest;
use crate::image::{Descriptor, Manifest, Platform, convert, media};
use crate::progress::Reporter;
use crate::stats::ImageReport;
pub use crate::stats::{CopyOutcome, CopyStats};
use crate::transport::{Dest, Source, SourceLimits, io_error, open_source, open_verified};
use blobs::Blobs;
pub use options::{CopyOptions, DetailRequest, Format, KeepBase, RewriteOptions, SquashMode};

/// Copies the image `src` names to `dst`. On failure, the destination's name
/// is untouched and [`Dest::abort`] has cleaned up.
pub fn copy_image(
    src: &dyn Source,
    dst: &dyn Dest,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<CopyOutcome> {
    let result = open_base(opts).and_then(|base| {
        Walk {
            src,
            dst,
            opts,
            reporter,
            base: base.as_deref(),
            blobs: Blobs::new(src, dst, reporter, opts.jobs),
            manifests: Cell::new(0),
            platforms: RefCell::new(Vec::new()),
            converted: Cell::new(false),
            images: RefCell::new(Vec::new()),
        }
        .run()
    });
    if result.is_err() {
        dst.abort();
    }
    result
}

/// The `--keep-base REF` image, opened once per copy: settings only name
/// it. Registry images are read with the copy's client.
fn open_base(opts: &CopyOptions) -> Result<Option<Box<dyn Source>>> {
    match opts.rewrite.as_ref().map(|rw| &rw.keep_base) {
        Some(KeepBase::Image(r)) => {
            Ok(Some(open_source(r, &opts.client, SourceLimits::default())?))
        }
        _ => Ok(None),
    }
}

/// One copy's walk down the tree; blobs go through `blobs`.
struct Walk<'a> {
    src: &'a dyn Source,
    dst: &'a dyn Dest,
    opts: &'a CopyOptions,
    reporter: &'a dyn Reporter,
    /// The `--keep-base REF` image, if one is named.
    base: Option<&'a dyn Source>,
    blobs: Blobs<'a>,
    /// Manifests written (the root included).
    manifests: Cell<usize>,
    platforms: RefCell<Vec<Platform>>,
    converted: Cell<bool>,
    images: RefCell<Vec<ImageReport>>,
}

impl Walk<'_> {
    fn run(&self) -> Result<CopyOutcome> {
        let root = self.src.root()?;
        let source_digest = root.digest.clone();
        let root = self.select_root(root)?;
        let written = self.transfer(root, true)?;
        self.dst
            .commit(&written)
            .with_context(|| format!("writing {}", self.dst.name()))?;
        let stats = CopyStats {
            manifests: self.manifests.get(),
            ..self.blobs.stats()
        };
        Ok(CopyOutcome {
            root: written,
            source_digest,
            converted_to_oci: self.converted.get(),
            platforms: self.platforms.borrow().clone(),
            stats,
            images: self.images.take(),
        })
    }

    /// A destination that holds one image gets one platform of an index:
    /// the one `--platform` names, else the host's.
    fn select_root(&self, root: Manifest) -> Result<Manifest> {
        if !root.is_index() || !self.dst.capabilities().single_image {
            return Ok(root);
        }
        let images: Vec<Descriptor> = root
            .manifests()?
            .into_iter()
            .filter(|d| {
                d.platform.is_some() && media::is_manifest_type(&d.media_type) && !is_attestation(d)
            })
            .collect();
        let (wanted, explicit) = if self.opts.platforms.is_empty() {
            (vec![Platform::host()], false)
        } else {
            (self.opts.platforms.clone(), true)
        };
        let matching: Vec<&Descriptor> = images
            .iter()
            .filter(|d| {
                wanted
                    .iter()
                    .any(|w| w.selects(d.platform.as_ref().expect("filtered")))
            })
            .collect();
        let chosen = match matching.as_slice() {
            [one] => *one,
            [] => bail!(
                "{} holds one platform and no platform of {} matches {} (available: {}); choose one with --platform",
                self.dst.name(),
                self.src.name(),
                list(&wanted),
                list(
                    &images
                        .iter()
                        .filter_map(|d| d.platform.clone())
                        .collect::<Vec<_>>()
                )
            ),
            _ => bail!(
                "{} holds one platform; {} matches several ({}); choose one with --platform",
                self.dst.name(),
                list(&wanted),
                list(
                    &matching
                        .iter()
                        .filter_map(|d| d.platform.clone())
                        .collect::<Vec<_>>()
                )
            ),
        };
        if !explicit {
            self.reporter.note(&format!(
                "{} holds one platform: writing {}",
                self.dst.name(),
                chosen.platform.as_ref().expect("filtered")
            ));
        }
        Ok(self.src.manifest(chosen)?)
    }

    /// Copies a manifest and everything below it; returns it as written.
    fn transfer(&self, m: Manifest, is_root: bool) -> Result<Manifest> {
        self.transfer_as(m, is_root, false)
    }

    /// `carry`: copy as it is, never slimmed (attestations and other
    /// manifests that are not a platform's image).
    fn transfer_as(&self, m: Manifest, is_root: bool, carry: bool) -> Result<Manifest> {
        let out = if m.is_index() {
            self.transfer_index(m)?
        } else if carry {
            self.blobs.copy_all(&m.blobs()?)?;
            self.to_dest_types(m)?
        } else {
            self.transfer_image(m)?
        };
        if !is_root {
            self.dst.put_manifest(&out).with_context(|| {
                format!("writing manifest {} to {}", out.digest, self.dst.name())
            })?;
        }
        self.manifests.set(self.manifests.get() + 1);
        Ok(out)
    }

    fn keep(&self, d: &Descriptor, kept_digests: &HashSet<Digest>) -> bool {
        if self.opts.platforms.is_empty() {
            return true;
        }
        if is_attestation(d) {
            return d
                .annotations
                .get("vnd.docker.reference.digest")
                .and_then(|s| s.parse::<Digest>().ok())
                .is_some_and(|ref_d| kept_digests.contains(&ref_d));
        }
        match &d.platform {
            Some(p) => self.opts.platforms.iter().any(|w| w.selects(p)),
            // Not a platform image: carried over.
            None => true,
        }
    }

    fn transfer_index(&self, m: Manifest) -> Result<Manifest> {
        let children = m.manifests()?;
        // Platform images first, so attestations can follow the ones kept.
        let mut kept_digests = HashSet::new();
        for d in children.iter().filter(|d| !is_attestation(d)) {
            if self.keep(d, &HashSet::new()) {
                kept_digests.insert(d.digest.clone());
            }
        }
        let mut changed = false;
        let mut new_children = Vec::new();
        for d in &children {
            if !self.keep(d, &kept_digests) {
                changed = true;
                continue;
            }
            let written = if media::is_manifest_type(&d.media_type) {
                let child = self.src.manifest(d)?;
                if let Some(p) = &d.platform
                    && !is_attestation(d)
                {
                    self.platforms.borrow_mut().push(p.clone());
                }
                // Attestations describe the image they were made for; they
                // are carried over as they are, not slimmed.
                let carry =
                    is_attestation(d) || d.platform.as_ref().is_some_and(|p| p.os == "unknown");
                let out = self.transfer_as(child, false, carry)?;
                (
                    out.media_type.clone(),
                    out.digest.clone(),
                    out.bytes.len() as u64,
                )
            } else {
                // An index entry that is not a manifest: copy it as a blob.
                self.blobs.copy_all(std::slice::from_ref(d))?;
                (d.media_type.clone(), d.digest.clone(), d.size)
            };
            if written.0 != d.media_type || written.1 != d.digest {
                changed = true;
                new_children.push(d.retarget(&written.0, &written.1, written.2).raw);
            } else {
                new_children.push(d.raw.clone());
            }
        }
        if self.platforms.borrow().is_empty() && !self.opts.platforms.is_empty() {
            let available: Vec<Platform> =
                children.iter().filter_map(|d| d.platform.clone()).collect();
            bail!(
                "no platform matches {} (available: {})",
                list(&self.opts.platforms),
                list(&available)
            );
        }
        let out = if changed || self.opts.rewrite.is_some() {
            let mut json = m.json.clone();
            json["manifests"] = Value::Array(new_children);
            let mut out = Manifest::from_json(&format!("index of {}", self.src.name()), &json)?;
            if let Some(rw) = &self.opts.rewrite {
                out = self.annotate_index(out, &m.digest, rw)?;
            }
            out
        } else {
            m
        };
        self.to_dest_types(out)
    }

    /// A slimmed index: OCI when any image in it became OCI, and annotated
    /// with the source index digest and the settings.
    fn annotate_index(
        &self,
        m: Manifest,
        source: &Digest,
        rw: &RewriteOptions,
    ) -> Result<Manifest> {
        let any_oci = m
            .manifests()?
            .iter()
            .any(|d| d.media_type == media::OCI_MANIFEST);
        let m = if m.kind.is_docker() && any_oci {
            convert::to_oci(&m)?
        } else {
            m
        };
        if m.kind.is_docker() {
            return Ok(m);
        }
        let mut json = m.json.clone();
        let obj = json.as_object_mut().expect("indexes are objects");
        let ann = obj
            .entry("annotations")
            .or_insert(Value::Object(Default::default()));
        if let Some(ann) = ann.as_object_mut() {
            crate::image::provenance::record_provenance(ann, source, &rw.settings);
        }
        Ok(Manifest::from_json(
            &format!("index of {}", self.src.name()),
            &json,
        )?)
    }

    fn transfer_image(&self, m: Manifest) -> Result<Manifest> {
        if !self.opts.platforms.is_empty()
            && m.is_container_image()
            && self.platforms.borrow().is_empty()
        {
            self.check_single_platform(&m)?;
        }
        if let Some(rw) = &self.opts.rewrite
            && m.is_container_image()
        {
            let (out, report) = slim::slim_image(&self.blobs, &m, rw, self.base)?;
            self.images.borrow_mut().push(report);
            return self.to_dest_types(out);
        }
        self.blobs.copy_all(&m.blobs()?)?;
        self.to_dest_types(m)
    }

    /// `--platform` on a single-platform image: it must match.
    fn check_single_platform(&self, m: &Manifest) -> Result<()> {
        let config = m.config()?.expect("container images have a config");
        let mut bytes = Vec::new();
        io::Read::read_to_end(&mut open_verified(self.src, &config)?, &mut bytes)
            .map_err(io_error)?;
        let json = crate::image::parse_json(
            &format!("config {}", config.digest),
            &bytes,
            crate::image::MAX_JSON_VALUES,
        )?;
        let p = Platform::from_json(&json);
        if !self.opts.platforms.iter().any(|w| w.selects(&p)) {
            bail!(
                "the image is a single-platform image for {p}, not {}",
                list(&self.opts.platforms)
            );
        }
        self.platforms.borrow_mut().push(p);
        Ok(())
    }

    fn to_dest_types(&self, m: Manifest) -> Result<Manifest> {
        if self.dst.capabilities().oci_only && m.kind.is_docker() {
            if !self.converted.get() {
                self.reporter.note(&format!(
                    "{} holds OCI images only: converting Docker v2s2 media types to OCI (manifest digests change)",
                    self.dst.name()
                ));
                self.converted.set(true);
            }
            return Ok(convert::to_oci(&m)?);
        }
        Ok(m)
    }
}

fn is_attestation(d: &Descriptor) -> bool {
    d.annotations
        .get("vnd.docker.reference.type")
        .map(String::as_str)
        == Some("attestation-manifest")
}

fn list(ps: &[Platform]) -> String {
    if ps.is_empty() {
        return "none".to_string();
    }
    ps.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
