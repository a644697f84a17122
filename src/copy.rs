//! The copy stage: moves an image tree (index -> manifests -> config and
//! layers) from a [`Source`] to a [`Dest`], children before parents, the
//! root last.
//!
//! Each blob is skipped when the destination has it, mounted when source and
//! destination share a registry, and otherwise spooled to a temp file through
//! a digest-verifying reader and handed over only once verified. Blobs move
//! on `jobs` threads. Nothing is rewritten unless the destination cannot hold
//! the source's media types (Docker v2s2 into an OCI layout is converted, as
//! skopeo does) or platforms were deselected, so a plain copy keeps every
//! manifest digest.

use std::collections::HashSet;
use std::io::{self, BufWriter, Write};
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::digest::Digest;
use crate::image::{Descriptor, Manifest, Platform, convert, media};
use crate::progress::{BlobOutcome, ProgressReader, Reporter};
use crate::rewrite::RewriteOptions;
use crate::stats::ImageReport;
pub use crate::stats::{CopyOutcome, CopyStats};
use crate::transport::growing::{Announce, Growing, Started};
use crate::transport::{Dest, Source, Staged, StreamKind, io_error, open_verified};

/// How to copy.
pub struct CopyOptions {
    /// Platforms to keep from an index (empty: all).
    pub platforms: Vec<Platform>,
    /// Blobs moved at once.
    pub jobs: usize,
    /// Slim container images on the way (`None`: a faithful copy).
    pub rewrite: Option<RewriteOptions>,
}

impl Default for CopyOptions {
    fn default() -> Self {
        CopyOptions {
            platforms: Vec::new(),
            jobs: 3,
            rewrite: None,
        }
    }
}

/// Copies the image `src` names to `dst`. On failure, the destination's name
/// is untouched and [`Dest::abort`] has cleaned up.
pub fn copy_image(
    src: &dyn Source,
    dst: &dyn Dest,
    opts: &CopyOptions,
    reporter: &dyn Reporter,
) -> Result<CopyOutcome> {
    let copier = Copier {
        src,
        dst,
        opts,
        reporter,
        done: Mutex::new(HashSet::new()),
        stats: Mutex::new(CopyStats::default()),
        platforms: Mutex::new(Vec::new()),
        converted: Mutex::new(false),
        images: Mutex::new(Vec::new()),
    };
    let result = copier.run();
    if result.is_err() {
        dst.abort();
    }
    result
}

pub(crate) struct Copier<'a> {
    pub(crate) src: &'a dyn Source,
    pub(crate) dst: &'a dyn Dest,
    opts: &'a CopyOptions,
    pub(crate) reporter: &'a dyn Reporter,
    /// Blobs already handled in this run (shared layers across platforms).
    done: Mutex<HashSet<Digest>>,
    stats: Mutex<CopyStats>,
    platforms: Mutex<Vec<Platform>>,
    converted: Mutex<bool>,
    images: Mutex<Vec<ImageReport>>,
}

impl Copier<'_> {
    fn run(&self) -> Result<CopyOutcome> {
        let root = self.src.root()?;
        let source_digest = root.digest.clone();
        let root = self.select_root(root)?;
        let written = self.transfer(root, true)?;
        self.dst
            .commit(&written)
            .with_context(|| format!("writing {}", self.dst.name()))?;
        let stats = self.stats.lock().expect("stats lock").clone();
        let platforms = self.platforms.lock().expect("platforms lock").clone();
        Ok(CopyOutcome {
            root: written,
            source_digest,
            converted_to_oci: *self.converted.lock().expect("lock"),
            platforms,
            stats,
            images: std::mem::take(&mut *self.images.lock().expect("images lock")),
        })
    }

    pub(crate) fn record_image(&self, r: ImageReport) {
        self.images.lock().expect("images lock").push(r);
    }

    /// Marks a blob as handled in this run; `false` if it already was.
    pub(crate) fn mark_done(&self, d: &Digest) -> bool {
        self.done.lock().expect("done lock").insert(d.clone())
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
        self.src.manifest(chosen)
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
            self.copy_blobs(&m.blobs()?)?;
            self.to_dest_types(m)?
        } else {
            self.transfer_image(m)?
        };
        if !is_root {
            self.dst.put_manifest(&out).with_context(|| {
                format!("writing manifest {} to {}", out.digest, self.dst.name())
            })?;
        }
        self.stats.lock().expect("stats lock").manifests += 1;
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
                    self.platforms
                        .lock()
                        .expect("platforms lock")
                        .push(p.clone());
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
                self.copy_blobs(std::slice::from_ref(d))?;
                (d.media_type.clone(), d.digest.clone(), d.size)
            };
            if written.0 != d.media_type || written.1 != d.digest {
                changed = true;
                new_children.push(d.retarget(&written.0, &written.1, written.2).raw);
            } else {
                new_children.push(d.raw.clone());
            }
        }
        if self.platforms.lock().expect("platforms lock").is_empty()
            && !self.opts.platforms.is_empty()
        {
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
            && self.platforms.lock().expect("platforms lock").is_empty()
        {
            self.check_single_platform(&m)?;
        }
        if let Some(rw) = &self.opts.rewrite
            && m.is_container_image()
        {
            let out = self.slim_image(&m, rw)?;
            return self.to_dest_types(out);
        }
        self.copy_blobs(&m.blobs()?)?;
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
        self.platforms.lock().expect("platforms lock").push(p);
        Ok(())
    }

    fn to_dest_types(&self, m: Manifest) -> Result<Manifest> {
        if self.dst.capabilities().oci_only && m.kind.is_docker() {
            let mut converted = self.converted.lock().expect("lock");
            if !*converted {
                self.reporter.note(&format!(
                    "{} holds OCI images only: converting Docker v2s2 media types to OCI (manifest digests change)",
                    self.dst.name()
                ));
                *converted = true;
            }
            return Ok(convert::to_oci(&m)?);
        }
        Ok(m)
    }

    /// Copies blobs on up to `jobs` threads; the first error wins.
    pub(crate) fn copy_blobs(&self, blobs: &[Descriptor]) -> Result<()> {
        let todo: Vec<&Descriptor> = {
            let mut done = self.done.lock().expect("done lock");
            blobs
                .iter()
                .filter(|d| done.insert(d.digest.clone()))
                .collect()
        };
        crate::parallel::try_map(todo, self.opts.jobs.clamp(1, 16), |d| self.copy_blob(d))
            .map_err(|failed| failed.first())?;
        Ok(())
    }

    fn copy_blob(&self, d: &Descriptor) -> Result<()> {
        let outcome = if self.dst.has_blob(d)? {
            BlobOutcome::Existed
        } else if let Some(from) = self.src.registry_location()
            && self.dst.mount_blob(d, from)?
        {
            BlobOutcome::Mounted
        } else {
            self.reporter.blob_start(d, "copying");
            if let Some(staged) = self.stage_streaming(d)? {
                self.dst
                    .put_blob(d, staged)
                    .with_context(|| format!("writing blob {} to {}", d.digest, self.dst.name()))?;
            }
            BlobOutcome::Copied
        };
        self.count_blob(d, outcome);
        self.reporter.blob_done(d, outcome);
        Ok(())
    }

    /// Spools a blob from the source while the destination, where it can,
    /// uploads it from the growing spool file. The upload is committed only
    /// once the whole blob has been verified against its digest (and the
    /// registry checks it again); on any failure the session is cancelled.
    /// Returns the spooled blob when it still has to be stored.
    fn stage_streaming(&self, d: &Descriptor) -> Result<Option<Staged>> {
        let Started {
            file,
            growing,
            stream,
        } = crate::transport::growing::start(self.dst, StreamKind::Copy)?;
        let staged = stage_blob(self.src, d, file, self.reporter, Some(&growing));
        match (staged, stream) {
            (Err(e), Some(s)) => {
                s.abort();
                Err(e)
            }
            (Err(e), None) => Err(e),
            (Ok(staged), None) => Ok(Some(staged)),
            (Ok(staged), Some(s)) => match s.commit(d) {
                Ok(()) => Ok(None),
                Err(e) => {
                    tracing::warn!(error = %e, blob = %d.digest, "the streamed upload failed; uploading the blob again");
                    Ok(Some(staged))
                }
            },
        }
    }

    pub(crate) fn count_blob(&self, d: &Descriptor, outcome: BlobOutcome) {
        let mut st = self.stats.lock().expect("stats lock");
        match outcome {
            BlobOutcome::Copied => {
                st.blobs_copied += 1;
                st.bytes_copied += d.size;
            }
            BlobOutcome::Existed => st.blobs_existing += 1,
            BlobOutcome::Mounted => st.blobs_mounted += 1,
            BlobOutcome::Read => {}
        }
    }
}

/// Spools a blob from the source into `file`, verifying digest and size on
/// the way; `growing` (an upload following the file) is told how far the
/// file is written, and that it is complete only once it is verified.
fn stage_blob(
    src: &dyn Source,
    d: &Descriptor,
    mut file: tempfile::NamedTempFile,
    reporter: &dyn Reporter,
    growing: Option<&Growing>,
) -> Result<Staged> {
    let result = (|| -> Result<()> {
        let reader = open_verified(src, d)?;
        let mut reader = ProgressReader::new(reader, d, reporter);
        let mut w = BufWriter::with_capacity(256 << 10, Announce::new(file.as_file_mut(), growing));
        // Errors name the blob and the source already (the verifying reader
        // and the transports say which).
        io::copy(&mut reader, &mut w).map_err(io_error)?;
        w.flush()?;
        Ok(())
    })();
    if let Some(g) = growing {
        g.end(result.is_ok());
    }
    result.map(|()| Staged {
        file,
        digest: d.digest.clone(),
        size: d.size,
    })
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
