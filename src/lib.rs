//! slim makes container images small: it pulls an image, squashes and
//! dedups its layers, strips what the program never reads, recompresses, and
//! pushes a minimized OCI image, with no Docker engine.
//!
//! The pipeline, in the order data flows; each folder owns one stage, and
//! no module imports from a later one (`bench/imports.py` checks it):
//!
//! ```text
//! below all  digest.rs         every blob and manifest verified while it streams
//!            units.rs          sizes for people (the one byte formatter)
//!            spool.rs          a blob file read while it is written (Growing), for encode and upload
//!            parallel.rs       the bounded worker pool (blobs, layers, batch images and checks)
//!            cleanup.rs        undo on SIGINT/SIGTERM and --timeout; staging dirs held by a lock
//!            memory.rs         freed heap pages given back (an index drained into its successor)
//! reference  reference.rs      what the user typed: registry, oci:, oci-archive:, docker-archive:, docker-daemon:
//! model      image/            manifests, indexes, descriptors, platforms, media types, exact bytes;
//!                              config.rs (diff_ids and history), convert.rs, provenance.rs
//! fetch      registry/         the Distribution API: client, origin (credentials only to their
//!                              origin), auth, request/reply, manifest, blob, upload, listing, limits
//!            decompress.rs     gzip | zstd | plain, by magic (layers and docker-archive)
//!            progress.rs       events for the CLI to draw
//!            transport/        sources and destinations: registry, layout/, docker_archive,
//!                              docker_daemon over engine.rs and unix_http/; resolve.rs (short
//!                              names: the local engine first); growing.rs (uploads that follow a file)
//! decode     layer/read/       blob -> entries + spooled contents (entry.rs: whiteouts; limits.rs)
//! squash     transform/        squash/ (whiteouts, shadowing, hard links, dedup; details.rs the
//!                              per-path data), tree.rs (the merged tree as TreeView), filter.rs
//!                              (PathFilter), paths.rs (per-path data: tops, waste, size trees)
//! filter     profile/          profiles (profiles/*.toml): load, rules, detect, safety keeps;
//!                              reads transform's TreeView, implements its PathFilter
//! encode     layer/plan.rs     what an output layer holds: the contract of transform and encode
//!            layer/write.rs    deterministic tar; encode.rs (parallel gzip | zstd, digests); pipe.rs
//! copy       settings.rs       flags and job-file values, checked, as copy options
//!            config.rs         the project config file (slim.toml), found upward, into Settings
//!            copy/             mod.rs the image tree (children first, root last); blobs.rs one blob
//!                              mover (present | mounted | streamed | spooled, verified); slim.rs one
//!                              platform image: decode -> squash/filter -> encode -> push
//!            stats.rs          what the copy stage did, as plain data
//! run        sandbox/          an image materialized (rootfs.rs, user.rs) and run with runc
//!                              (runtime.rs); probes (probe.rs)
//! learn      minimize/         trace.rs (fanotify on each container's root while the probes run),
//!                              keep.rs (the keep-list and the learned profile it becomes)
//! report     report.rs         JSON, table and Markdown of what a run did; report/html.rs the
//!                              self-contained HTML page, report/treemap.rs its SVG treemaps
//!            attach.rs         the report as an OCI artifact attached to the slim image (--attach-report)
//! many       batch/            job files, work lists, shards, idempotency checks, a pool of images
//! ```
//!
//! `cli/` parses arguments and prints; nothing below it writes to the
//! terminal.

pub mod attach;
pub mod batch;
pub mod cleanup;
pub mod cli;
pub mod config;
pub mod copy;
pub mod decompress;
pub mod digest;
pub mod image;
pub mod layer;
pub mod memory;
pub mod minimize;
pub mod parallel;
pub mod profile;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod report;
pub mod sandbox;
pub mod settings;
pub mod spool;
pub mod stats;
pub mod transform;
pub mod transport;
pub mod units;
