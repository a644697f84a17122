//! The Distribution API client: manifests and blobs in and out of a registry,
//! with authentication, retries and streaming.
//!
//! Written on reqwest rather than oci-client because slim needs what that
//! crate does not expose: response headers on errors (`Retry-After` on 429),
//! retries at all, tokens scoped to two repositories (cross-repository
//! mounts), a 202 answer to a mount treated as "not mounted", and uploads
//! streamed from a spooled file that can be replayed on a retry.
//!
//! One file per concern; each imports only the ones above it in this list,
//! and nothing outside `registry/` but the reference, digest and image
//! modules:
//!
//! - [`options`]: [`ClientOptions`], plain settings;
//! - [`origin`]: where credentials may go, and every request's send;
//! - [`limits`]: retries, waits, the low-speed and silence guards;
//! - `error.rs`: [`RegistryError`], and which failures are transient;
//! - `reply.rs`: a registry's answer ([`Reply`]) and what slim reads of it;
//! - [`auth`]: credentials, challenges, scopes, tokens (fetched here);
//! - `client.rs`: [`RegistryClient`], its hosts, and
//!   [`RegistryClient::execute`], the loop every request goes through:
//!   credentials on the registry's own origin only, a 401 refreshing them
//!   once, transient failures retried within bounds;
//! - `request.rs`: one request as every endpoint makes it (`Call`): what,
//!   where, scope, send, and the answer checked;
//! - the endpoints: `manifest.rs` (get, head, put), `blob.rs` (exists,
//!   downloads resumed after a break: [`BlobReader`]), `upload.rs`
//!   (mounts, sessions, uploads from a file or streamed:
//!   [`StreamingUpload`]), [`listing`] (catalog and tags, every name
//!   checked before use), `referrers.rs` (artifacts attached to a
//!   manifest: the referrers API, else the `sha256-<hex>` tag schema).

pub mod auth;
mod blob;
mod client;
mod error;
pub mod limits;
pub mod listing;
mod manifest;
pub mod options;
pub mod origin;
mod referrers;
mod reply;
mod request;
mod upload;

pub use auth::Scope;
pub use blob::BlobReader;
pub use client::RegistryClient;
pub use error::{CredentialError, RegistryError};
pub use listing::{Listing, escaped};
pub use manifest::FetchedManifest;
pub use options::ClientOptions;
pub use referrers::{EMPTY_MEDIA_TYPE, Listed, artifact_manifest, tag_of};
pub use reply::Reply;
pub use upload::StreamingUpload;
