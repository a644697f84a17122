//! Test harness for the `it` integration binary: real registries, judges and
//! a hostile server, so tests exercise `slim` end to end with independent
//! tools checking the result. Nothing here uses slim's own code.
//!
//! - [`context`] — `TestContext` (a temp dir per test, runs `slim` hermetically)
//!   and `Output` (stdout, stderr, exit code, assertions).
//! - [`registry`] — the real Distribution registry (`docker-registry` 2.8) on a
//!   free loopback port: anonymous, htpasswd or token auth; shared or private;
//!   or HTTPS on the first non-loopback IPv4 address with a CA made for it
//!   (`RegistryConfig::tls`, `Registry::shared_tls`); access-log parsing to
//!   count requests.
//! - [`token`] — the Docker token issuer for the token-auth registry (JWT RS256
//!   signed with `openssl`), counting the tokens it issues.
//! - [`judges`] — skopeo and umoci wrappers (`inspect`, `copy`, `unpack`).
//! - [`tree`] — an unpacked rootfs as comparable data (`tree_of`,
//!   `assert_same_tree`).
//! - [`fixture`] — the committed `fixtures/oci` image, pushing it (OCI, v2s2),
//!   and a two-platform index built from it.
//! - [`layout`] — the one builder of test images (`write_image` of layer
//!   blobs and a config into an OCI layout), media types, and the tar and
//!   gzip helpers that make layers (`Layer`, `tar_of`, `file_header`).
//! - [`runner`] — running slim as the tests do (`slim_copy`), `oci:`
//!   references, the fixture's tree as judge, a registry's tags, and the
//!   clean-failure assertion.
//! - [`hostile`] — a `/v2/` server with switchable faults (bad digests,
//!   truncated bodies, 5xx/429, non-JSON manifests).
//! - [`http`] — the tiny HTTP/1.1 server and raw client under the two servers.
//! - [`proxy`] — a fault-injecting reverse proxy in front of a real registry
//!   (resets, stalls, trickles, 5xx/429 bursts, canned answers, restarts),
//!   recording what clients sent.
//! - [`process`] — spawning children that die with the test binary.
//! - [`podman`] — a real Docker Engine API: `podman system service` on a
//!   Unix socket with its own storage and config; the podman CLI as judge.
//! - [`tripwire`] — a proxy and a credential helper that record any attempt
//!   to reach a registry.
//!
//! Not every test uses every helper or re-export, hence the `allow` below.
#![allow(dead_code, unused_imports)]

pub mod context;
pub mod fixture;
pub mod hostile;
pub mod http;
pub mod judges;
pub mod layout;
pub mod podman;
pub mod process;
pub mod proxy;
pub mod pushgateway;
pub mod registry;
pub mod runner;
pub mod token;
pub mod tree;
pub mod tripwire;

pub use context::{Output, SLIM, TestContext, unique_name};
pub use fixture::{
    FIXTURE_TAG, FixtureImage, MultiArch, fixture_image, fixture_layout, fixture_ref,
    multiarch_layout, push_fixture, push_fixture_multiarch, push_fixture_v2s2, put_blob, tag_only,
};
pub use hostile::{Fault, Hostile};
pub use judges::{
    Skopeo, is_root, manifest_digest_of, sha256_digest, skopeo_copy, skopeo_inspect,
    skopeo_inspect_raw, umoci_try_unpack, umoci_unpack,
};
pub use layout::*;
pub use podman::Podman;
pub use proxy::{Action, Proxy};
pub use registry::{AccessLogEntry, Registry, RegistryAuth, RegistryConfig};
pub use runner::*;
pub use token::TokenIssuer;
pub use tree::{Kind, Node, Tree, assert_same_tree, diff_trees, tree_of};
pub use tripwire::Tripwire;

/// The one user the authenticated registries and the token issuer accept.
pub const USER: &str = "slim";
/// Its password.
pub const PASSWORD: &str = "s3cret";
