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
//!               digest.rs        every blob and manifest verified while it streams
//! model      -> image/           manifests, indexes, descriptors, platforms, media types, exact bytes
//! decode     -> layer/decode.rs  gzip | zstd | plain, by magic
//! copy       -> copy/mod.rs      the image tree, children first, root last
//!               copy/blobs.rs    one blob: present | mounted | streamed | spooled; verified before use
//!               parallel.rs      the bounded worker pool (blobs, layers, batch images)
//! slim       -> copy/slim.rs     per image: decode -> squash/filter/dedup -> encode -> push
//!               image/provenance.rs  source and settings recorded in the output
//! decode     -> layer/read.rs    blob -> entries + spooled contents (layer/entry.rs: whiteouts)
//!               layer/limits.rs  what one entry's headers and one image's index may hold
//! squash     -> transform/       squash.rs (whiteouts, shadowing, hard links, dedup), filter.rs
//! encode     -> layer/write.rs   deterministic tar; layer/encode.rs: parallel gzip | zstd, digests
//! config     -> image/config.rs  diff_ids and history rewritten together
//! filter     -> profile/         profiles (profiles/*.toml), auto-detection, safety keeps
//! progress   -> progress.rs      events for the CLI to draw
//! stats      -> stats.rs         what each stage did, as plain data
//! report     -> report.rs        JSON, table and Markdown of what a run did
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
pub mod digest;
pub mod image;
pub mod layer;
pub mod parallel;
pub mod profile;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod report;
pub mod settings;
pub mod stats;
pub mod transform;
pub mod transport;
