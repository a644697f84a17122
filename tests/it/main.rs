//! One integration test binary: every test shares the registries and temp
//! dirs owned by `harness`.
mod batch;
mod cli;
mod copy;
mod errors;
mod fuzz_layers;
mod harness;
mod harness_tests;
mod hostile_layers;
mod profiles;
mod rewrite;
mod squash_model;
mod tls;
