//! Slimming one platform image: the stages between fetch and push.
//!
//! ```text
//! layers -> decode + index (spool)   layer/read.rs, two layers at a time
//!        -> squash | per layer       transform/squash.rs (filter, dedup inside)
//!        -> tar + compress + hash    layer/write.rs, layer/encode.rs
//!        -> push blob, config, manifest
//! ```
//!
//! Kept base layers (`--keep-base`) are copied as they are, so registries and
//! nodes keep sharing them. The new config and manifest are edited as JSON
//! from the source's, and the bytes hashed are the bytes written.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result, bail};
use serde_json::Value;

use super::blobs::Blobs;
use super::options::{DetailRequest, Format, KeepBase, RewriteOptions, SquashMode};
use crate::digest::Digest;
use crate::image::config::{self, LayerChange};
use crate::image::media::{self, Compression};
use crate::image::{Descriptor, Manifest, Platform, provenance};
use crate::layer::encode::{self, Codec};
use crate::layer::limits::IndexBudget;
use crate::layer::read::{IndexOptions, LayerIndex, index_layer};
use crate::layer::write::write_plan;
use crate::progress::{ProgressReader, Reporter};
use crate::stats::{Details, ImageReport, LayerStat, Side};
use crate::transform::filter::{Count, FilterStats};
use crate::transform::squash;
use crate::transport::{Dest, Source, open_verified};

/// Slims one container image, its blobs written through `blobs`; returns
/// its new manifest (not yet put) and what was done. `base` is the opened
/// `--keep-base REF` image.
pub fn slim_image(
    blobs: &Blobs<'_>,
    m: &Manifest,
    opts: &RewriteOptions,
    base: Option<&dyn Source>,
) -> Result<(Manifest, ImageReport)> {
    Slim {
        blobs,
        base,
        src: blobs.src,
        dst: blobs.dst,
        reporter: blobs.reporter,
    }
    .image(m, opts)
}

struct Slim<'a> {
    blobs: &'a Blobs<'a>,
    base: Option<&'a dyn Source>,
    src: &'a dyn Source,
    dst: &'a dyn Dest,
    reporter: &'a dyn Reporter,
}

impl Slim<'_> {
    /// Slims one container image; returns its new manifest (blobs written).
    fn image(&self, m: &Manifest, opts: &RewriteOptions) -> Result<(Manifest, ImageReport)> {
        let src = self.src;
        let config_desc = m.config()?.context("image manifest without config")?;
        let config_json = read_config(src, &config_desc)?;
        let platform = Platform::from_json(&config_json);
        let layers = m.layers()?;
        if layers.is_empty() {
            bail!(
                "image {} from {}: the manifest lists no layers, so there is nothing to slim (copy it as it is with --squash none --profile none)",
                m.digest,
                src.name()
            );
        }
        let diff_ids: Vec<Digest> = config::diff_ids(&config_json)
            .with_context(|| format!("config {} has a malformed diff_id", config_desc.digest))?
            .unwrap_or_default();
        if diff_ids.len() != layers.len() {
            bail!(
                "image {}: the config lists {} diff_ids for {} layers; the image is inconsistent",
                m.digest,
                diff_ids.len(),
                layers.len()
            );
        }
        for l in &layers {
            if media::layer_compression(&l.media_type).is_none() {
                bail!(
                    "layer {}: media type {:?} is not a tar layer slim can rewrite; copy the image as it is with --squash none --profile none",
                    l.digest,
                    l.media_type
                );
            }
            if l.raw.get("urls").is_some() {
                bail!(
                    "layer {} is a foreign (non-distributable) layer; slim cannot rewrite it: copy the image with --squash none --profile none",
                    l.digest
                );
            }
        }
        let (keep, base) = self.keep_count(opts, &layers, &diff_ids, &platform)?;
        let mut notes = Vec::new();

        let source_kind = layers[keep..]
            .iter()
            .chain(layers.iter())
            .find_map(|l| media::layer_compression(&l.media_type))
            .unwrap_or(Compression::Gzip);
        let compression = opts.compression.unwrap_or(match source_kind {
            Compression::None => Compression::Gzip,
            c => c,
        });
        let mut docker = match opts.format {
            Some(Format::Docker) => true,
            Some(Format::Oci) => false,
            None => m.kind.is_docker(),
        };
        if compression == Compression::Zstd && docker {
            if opts.format == Some(Format::Docker) {
                bail!(
                    "zstd layers need OCI media types; drop --format docker or use --compression gzip"
                );
            }
            docker = false;
            notes.push("zstd layers need OCI media types: writing an OCI image".to_string());
            self.reporter
                .note("zstd layers need OCI media types: converting the Docker image to OCI");
        }
        let codec = Codec {
            compression,
            level: opts.level.unwrap_or(Codec::default_level(compression)),
            threads: opts.threads.max(1),
        };

        // Base layers move as they are.
        self.blobs.copy_all(&layers[..keep])?;

        // With kept base layers, the base is read too (not rewritten): the
        // squash must know what it holds to write the right whiteouts.
        let t = std::time::Instant::now();
        let indexes = self.index_layers(&layers, &diff_ids, opts)?;
        tracing::info!(elapsed = ?t.elapsed(), layers = indexes.len(), "decoded and indexed");
        let t = std::time::Instant::now();
        let merged = squash::merge(&indexes, keep)?;
        tracing::debug!(elapsed = ?t.elapsed(), "merged");
        let filter = opts
            .profiles
            .compile(&merged, &config_json)
            .with_context(|| format!("applying profiles to {}", self.src.name()))?;
        let removed_paths = if opts.dry_run || opts.list_removed {
            merged.removed_paths(&filter)
        } else {
            Vec::new()
        };
        let details = match &opts.details {
            Some(req) => Some(Arc::new(self.details(&merged, &filter, opts, req)?)),
            None => None,
        };
        let plans = match opts.squash {
            // A dry run (an analysis) needs the figures, not the plan.
            SquashMode::All if opts.dry_run => vec![(
                crate::layer::plan::Plan::default(),
                merged.squash_stats(opts.hardlink_dedup, &filter),
            )],
            SquashMode::All => vec![merged.squash(opts.hardlink_dedup, &filter)],
            SquashMode::None => {
                drop(merged);
                squash::per_layer(&indexes, &filter)?
            }
        };
        tracing::info!(elapsed = ?t.elapsed(), profiles = ?filter.chosen, "planned");
        let mut removed = FilterStats::default();
        let mut shadowed = Count::default();
        let mut hardlinked = Count::default();
        let mut packages_gone = Vec::new();
        let mut output = Side {
            layers: keep,
            compressed_bytes: layers[..keep].iter().map(|l| l.size).sum(),
            ..Side::default()
        };
        for (_, stats) in &plans {
            removed.merge(&stats.removed);
            shadowed.add(stats.shadowed.files, stats.shadowed.bytes);
            hardlinked.add(stats.hardlinked.files, stats.hardlinked.bytes);
            packages_gone.extend(stats.packages_gone.iter().cloned());
            output.layers += 1;
            output.files += stats.files;
        }
        let out = if opts.dry_run {
            m.clone()
        } else {
            self.write_image(
                m,
                opts,
                &plans,
                &indexes,
                WriteImage {
                    config_desc: &config_desc,
                    config_json: &config_json,
                    codec,
                    docker,
                    keep,
                    base,
                    source_layers: &layers,
                    diff_ids: &diff_ids,
                    output: &mut output,
                },
            )?
        };
        let report = ImageReport {
            platform: Some(platform),
            source_digest: m.digest.clone(),
            output_digest: out.digest.clone(),
            source: source_side(&layers, &indexes),
            output,
            removed,
            shadowed,
            hardlinked,
            compression,
            notes,
            profiles: filter.chosen.clone(),
            kept_by_safety: filter.kept_by_safety.clone(),
            removed_paths,
            packages_gone,
            layers: layer_stats(&layers, &indexes, &config_json),
            details,
        };
        Ok((out, report))
    }

    /// Per-path data of the merged tree, and its listing spooled to an
    /// unnamed temporary file.
    fn details(
        &self,
        merged: &squash::Merged<'_>,
        filter: &dyn crate::transform::filter::PathFilter,
        opts: &RewriteOptions,
        req: &DetailRequest,
    ) -> Result<Details> {
        use std::io::Write;
        let t = std::time::Instant::now();
        let mut listing = None;
        let paths = if req.files {
            let file = tempfile::tempfile().context("creating a temporary file for the listing")?;
            let mut w = std::io::BufWriter::new(&file);
            let paths = merged.details(filter, opts.hardlink_dedup, req.paths, Some(&mut w))?;
            w.flush()
                .context("writing the listing to a temporary file")?;
            drop(w);
            listing = Some(file);
            paths
        } else {
            merged.details(filter, opts.hardlink_dedup, req.paths, None)?
        };
        tracing::info!(elapsed = ?t.elapsed(), "per-path data");
        Ok(Details { paths, listing })
    }

    /// Encodes and writes the planned layers, then the config and the
    /// manifest (returned; the caller puts it).
    fn write_image(
        &self,
        m: &Manifest,
        opts: &RewriteOptions,
        plans: &[(
            crate::layer::plan::Plan,
            crate::transform::squash::SquashStats,
        )],
        indexes: &[Arc<LayerIndex>],
        w: WriteImage<'_>,
    ) -> Result<Manifest> {
        let WriteImage {
            config_desc,
            config_json,
            codec,
            docker,
            keep,
            base,
            source_layers: layers,
            diff_ids,
            output,
        } = w;
        let layer_type = media::layer_type(codec.compression, docker);
        let mut new_layers: Vec<Descriptor> = layers[..keep].to_vec();
        let mut new_diff_ids: Vec<Digest> = diff_ids[..keep].to_vec();
        for (plan, _) in plans {
            // Push while compressing where the destination can take a
            // stream (a registry): the upload follows the blob file as it
            // grows. The finished file is the fallback.
            let crate::transport::growing::Started {
                file,
                growing,
                stream,
            } = crate::transport::growing::start(self.dst, crate::transport::StreamKind::NewLayer)?;
            let t = std::time::Instant::now();
            let id = LAYER_IDS.fetch_add(1, Ordering::Relaxed) as u64;
            let estimate = plan_bytes(plan, indexes);
            self.reporter.layer_start(id, "writing layer", estimate);
            let reporter = self.reporter;
            let encoded = encode::encode(file, codec, Some(&growing), |w| {
                let mut counted = CountingWriter {
                    inner: w,
                    id,
                    reporter,
                };
                write_plan(&mut counted, plan, indexes)
            });
            let encoded = match encoded {
                Ok(e) => e,
                Err(e) => {
                    if let Some(s) = stream {
                        s.abort();
                    }
                    return Err(e)
                        .with_context(|| format!("writing a layer for {}", self.dst.name()));
                }
            };
            tracing::info!(elapsed = ?t.elapsed(), bytes = encoded.uncompressed_size, "encoded");
            let desc = Descriptor::new(layer_type, encoded.digest.clone(), encoded.size);
            self.blobs
                .put_new(&desc, encoded.file, stream.map(|s| (s, growing)))?;
            self.reporter.layer_done(id, &desc);
            output.compressed_bytes += encoded.size;
            output.uncompressed_bytes += encoded.uncompressed_size;
            new_layers.push(desc);
            new_diff_ids.push(encoded.diff_id);
        }

        let description = self.describe(opts, keep, layers.len());
        let change = match opts.squash {
            SquashMode::All => LayerChange::Squashed {
                keep,
                new_diff_id: new_diff_ids.last().expect("one squashed layer"),
                description: &description,
            },
            SquashMode::None => LayerChange::EachRewritten {
                new_diff_ids: &new_diff_ids,
                description: &description,
            },
        };
        let mut new_config = config::rewrite(config_json, &change);
        if docker {
            let labels = new_config
                .pointer_mut("/config")
                .and_then(Value::as_object_mut)
                .map(|c| c.entry("Labels").or_insert(Value::Null));
            if let Some(labels) = labels {
                if !labels.is_object() {
                    *labels = Value::Object(Default::default());
                }
                provenance::record_provenance(
                    labels.as_object_mut().expect("object"),
                    &m.digest,
                    &opts.settings,
                );
            }
        }
        let config_bytes = serde_json::to_vec(&new_config)?;
        let config_type = if docker {
            media::DOCKER_CONFIG
        } else {
            media::OCI_CONFIG
        };
        let new_config_desc = config_desc.retarget(
            config_type,
            &Digest::sha256_of(&config_bytes),
            config_bytes.len() as u64,
        );
        self.blobs.put_bytes(&new_config_desc, &config_bytes)?;

        let mut json = m.json.clone();
        let obj = json.as_object_mut().expect("manifests are objects");
        obj.insert(
            "mediaType".into(),
            Value::String(
                if docker {
                    media::DOCKER_MANIFEST
                } else {
                    media::OCI_MANIFEST
                }
                .into(),
            ),
        );
        obj.insert("config".into(), new_config_desc.raw.clone());
        obj.insert(
            "layers".into(),
            Value::Array(new_layers.iter().map(|d| d.raw.clone()).collect()),
        );
        if docker {
            obj.remove("annotations");
        } else {
            let ann = obj
                .entry("annotations")
                .or_insert(Value::Object(Default::default()));
            if let Some(ann) = ann.as_object_mut() {
                provenance::record_provenance(ann, &m.digest, &opts.settings);
                provenance::record_base(ann, keep, base);
            }
        }
        Ok(Manifest::from_json(
            &format!("slim manifest for {}", m.digest),
            &json,
        )?)
    }

    fn describe(&self, opts: &RewriteOptions, keep: usize, total: usize) -> String {
        match opts.squash {
            SquashMode::All if keep > 0 => format!(
                "squashed {} layers above {keep} kept base layers ({})",
                total - keep,
                opts.settings
            ),
            SquashMode::All => format!("squashed {total} layers ({})", opts.settings),
            SquashMode::None => format!("rewrote each of {total} layers ({})", opts.settings),
        }
    }

    fn keep_count(
        &self,
        opts: &RewriteOptions,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        platform: &Platform,
    ) -> Result<(usize, Option<(String, Digest)>)> {
        let mut base_image = None;
        let keep = match &opts.keep_base {
            KeepBase::None => 0,
            KeepBase::Count(n) => {
                if *n > layers.len() {
                    bail!(
                        "--keep-base {n}: the image has only {} layers",
                        layers.len()
                    );
                }
                *n
            }
            KeepBase::Image(r) => {
                let base = self
                    .base
                    .with_context(|| format!("keep-base {r}: the base image was not opened"))?;
                let (base_digest, base_ids) = base_diff_ids(base, platform)?;
                if base_ids.len() > diff_ids.len() || diff_ids[..base_ids.len()] != base_ids[..] {
                    bail!(
                        "the image is not built on {}: its first layers differ from the base's ({} layers)",
                        base.name(),
                        base_ids.len()
                    );
                }
                base_image = Some((base.name(), base_digest));
                base_ids.len()
            }
        };
        if keep == layers.len() && opts.squash == SquashMode::All {
            bail!("--keep-base keeps all {keep} layers: nothing left to squash");
        }
        Ok((keep, base_image))
    }

    /// Decodes and indexes layers, two at a time; a layer repeated in the
    /// stack is decoded once.
    fn index_layers(
        &self,
        layers: &[Descriptor],
        diff_ids: &[Digest],
        opts: &RewriteOptions,
    ) -> Result<Vec<Arc<LayerIndex>>> {
        let mut unique: Vec<(usize, &Descriptor)> = Vec::new();
        let mut slot_of: Vec<usize> = Vec::with_capacity(layers.len());
        for (i, l) in layers.iter().enumerate() {
            match unique.iter().position(|(_, u)| u.digest == l.digest) {
                Some(p) => slot_of.push(p),
                None => {
                    slot_of.push(unique.len());
                    unique.push((i, l));
                }
            }
        }
        let spool_dir = std::env::temp_dir();
        let idx_opts = IndexOptions {
            max_uncompressed: opts.max_layer_bytes,
            budget: Some(Arc::new(IndexBudget::new(
                opts.max_files,
                crate::layer::limits::MAX_NAME_BYTES,
            ))),
        };
        let done = crate::parallel::try_map(unique.clone(), 2, |(i, desc)| {
            let what = format!("layer {}/{}", i + 1, layers.len());
            self.reporter.blob_start(desc, "reading");
            let ix = open_verified(self.src, desc).and_then(|reader| {
                let reader = ProgressReader::new(reader, desc, self.reporter);
                index_layer(reader, &what, Some(&diff_ids[i]), &spool_dir, &idx_opts)
            })?;
            self.reporter
                .blob_done(desc, crate::progress::BlobOutcome::Read);
            Ok(Arc::new(ix))
        })
        .map_err(|failed| {
            // The failed layer lowest in the stack (every layer below it
            // was read).
            let (k, e): (usize, anyhow::Error) = failed.earliest();
            e.context(format!(
                "reading layer {} of {}",
                unique[k].1.digest,
                self.src.name()
            ))
        })?;
        Ok(slot_of.into_iter().map(|s| done[s].clone()).collect())
    }
}

/// What [`Slim::write_image`] needs besides the plans.
struct WriteImage<'a> {
    config_desc: &'a Descriptor,
    config_json: &'a Value,
    codec: Codec,
    docker: bool,
    keep: usize,
    /// The `--keep-base REF` image (name, manifest digest) the output
    /// shares its first layers with.
    base: Option<(String, Digest)>,
    source_layers: &'a [Descriptor],
    diff_ids: &'a [Digest],
    output: &'a mut Side,
}

/// Numbers the new layers for progress reports.
static LAYER_IDS: AtomicUsize = AtomicUsize::new(0);

/// Roughly the tar bytes a plan writes: contents plus a header per entry.
fn plan_bytes(plan: &crate::layer::plan::Plan, layers: &[Arc<LayerIndex>]) -> u64 {
    use crate::layer::plan::Item;
    plan.iter(layers)
        .map(|i| match i {
            Item::Entry {
                layer,
                index,
                link_to: None,
                ..
            } => 512 + layers[layer as usize].entries[index as usize].size(),
            Item::Rewritten { content, .. } => 512 + content.len() as u64,
            _ => 512,
        })
        .sum()
}

/// Reports tar bytes as they are written.
struct CountingWriter<'a> {
    inner: &'a mut dyn std::io::Write,
    id: u64,
    reporter: &'a dyn crate::progress::Reporter,
}

impl std::io::Write for CountingWriter<'_> {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(data)?;
        self.reporter.layer_progress(self.id, n as u64);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Sizes and file counts of the source image.
fn layer_stats(
    layers: &[Descriptor],
    indexes: &[Arc<LayerIndex>],
    config: &Value,
) -> Vec<LayerStat> {
    let history: Vec<String> = config["history"]
        .as_array()
        .map(|h| {
            h.iter()
                .filter(|e| !e["empty_layer"].as_bool().unwrap_or(false))
                .map(|e| e["created_by"].as_str().unwrap_or("").to_string())
                .collect()
        })
        .unwrap_or_default();
    layers
        .iter()
        .zip(indexes)
        .enumerate()
        .map(|(i, (d, ix))| LayerStat {
            digest: d.digest.to_string(),
            compressed_bytes: d.size,
            uncompressed_bytes: ix.uncompressed_size,
            files: ix
                .entries
                .iter()
                .filter(|e| !e.kind().is_dir() && !e.kind().is_whiteout())
                .count() as u64,
            file_bytes: ix
                .entries
                .iter()
                .filter(|e| e.kind() == crate::layer::entry::Kind::File)
                .map(|e| e.size())
                .sum(),
            whiteouts: ix.entries.iter().filter(|e| e.kind().is_whiteout()).count() as u64,
            created_by: history.get(i).cloned().unwrap_or_default(),
        })
        .collect()
}

fn source_side(layers: &[Descriptor], indexes: &[Arc<LayerIndex>]) -> Side {
    Side {
        layers: layers.len(),
        compressed_bytes: layers.iter().map(|l| l.size).sum(),
        uncompressed_bytes: indexes.iter().map(|i| i.uncompressed_size).sum(),
        files: indexes
            .iter()
            .map(|i| {
                i.entries
                    .iter()
                    .filter(|e| !e.kind().is_dir() && !e.kind().is_whiteout())
                    .count() as u64
            })
            .sum(),
    }
}

/// The config, checked to be what [`config::rewrite`] can rewrite.
fn read_config(src: &dyn Source, desc: &Descriptor) -> Result<Value> {
    let config = crate::transport::read_config(src, desc)?;
    config::check(&config).map_err(|reason| {
        anyhow::anyhow!(
            "config {} of {} is malformed: {reason}",
            desc.digest,
            src.name()
        )
    })?;
    Ok(config)
}

/// The manifest digest and diff_ids of a base image, for the platform being
/// slimmed.
fn base_diff_ids(base: &dyn Source, platform: &Platform) -> Result<(Digest, Vec<Digest>)> {
    let mut m = base.root()?;
    if m.is_index() {
        let child = m
            .manifests()?
            .into_iter()
            .find(|d| {
                d.platform.as_ref().is_some_and(|p| {
                    Platform {
                        variant: None,
                        ..platform.clone()
                    }
                    .selects(p)
                })
            })
            .with_context(|| format!("the base image {} has no {platform} image", base.name()))?;
        m = base.manifest(&child)?;
    }
    let config = m.config()?.context("base image manifest without config")?;
    let json = read_config(base, &config)?;
    config::diff_ids(&json)?
        .context("the base image config has no diff_ids")
        .map(|ids| (m.digest.clone(), ids))
}
