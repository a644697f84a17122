//! slim makes container images small: it pulls an image, squashes and
//! dedups its layers, strips what the program never reads, recompresses, and
//! pushes a minimized OCI image, with no Docker engine.
//!
//! The pipeline, one module per stage:
//!
//! ```text
//! reference  -> reference.rs     what the user typed: registry, oci:, oci-archive:, docker-archive:, docker-daemon:
//!               transport/resolve.rs  short names: the local engine's image first, else the registry
//! fetch      -> transport/       sources and destinations; registry/ speaks the Distribution API
//!               transport/engine.rs, unix_http.rs  the Docker Engine API (Docker, Podman) on a Unix socket
//!               registry/origin.rs    every request: credentials only to their origin, redirects
//!               registry/limits.rs    retries, waits, the low-speed and silence limits
//!               registry/blob.rs, upload.rs, listing.rs   downloads, uploads, catalog and tags
//!               transport/growing.rs  uploads that follow a blob file while it is written
//!               spool.rs         a blob file read while it is written (Growing), for encode and upload
//!               digest.rs        every blob and manifest verified while it streams
//! model      -> image/           manifests, indexes, descriptors, platforms, media types, exact bytes
//! decode     -> decompress.rs    gzip | zstd | plain, by magic (layers and docker-archive)
//! copy       -> copy/mod.rs      the image tree, children first, root last
//!               copy/blobs.rs    one blob: present | mounted | streamed | spooled; verified before use
//!               parallel.rs      the bounded worker pool (blobs, layers, batch images)
//! slim       -> copy/slim.rs     per image: decode -> squash/filter/dedup -> encode -> push
//!               image/provenance.rs  source and settings recorded in the output
//! decode     -> layer/read/      blob -> entries + spooled contents (layer/entry.rs: whiteouts)
//!               layer/limits.rs  what one entry's headers and one image's index may hold
//! squash     -> transform/       squash/ (whiteouts, shadowing, hard links, dedup), filter.rs,
//!                                tree.rs (TreeView: the merged tree as profiles read it)
//! encode     -> layer/plan.rs    what an output layer holds (transform -> encode)
//!               layer/write.rs   deterministic tar; layer/encode.rs: parallel gzip | zstd, digests
//! config     -> image/config.rs  diff_ids and history rewritten together
//! filter     -> profile/         profiles (profiles/*.toml), auto-detection, safety keeps; reads
//!                                transform's TreeView, implements its PathFilter
//! progress   -> progress.rs      events for the CLI to draw
//! stats      -> stats.rs         what each stage did, as plain data
//! report     -> report.rs        JSON, table and Markdown of what a run did
//! verify     -> sandbox/         materialize an image, run it with runc/crun, probes
//! stop       -> cleanup.rs       undo on SIGINT/SIGTERM and --timeout; staging dirs held by a lock
//! many       -> batch/           job files, work lists, shards, idempotency checks, a pool of images
//! ```
//!
//! `cli/` parses arguments and prints; nothing below it writes to the
//! terminal.

pub mod batch;
pub mod cleanup;
pub mod cli;
pub mod copy;
pub mod decompress;
pub mod digest;
pub mod image;
pub mod layer;
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
