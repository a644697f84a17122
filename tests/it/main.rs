//! One integration test binary: every test shares the registries and temp
//! dirs owned by `harness`.
mod action;
mod analyze;
mod attach;
mod batch;
mod cli;
mod config;
mod copy;
mod daemon;
mod errors;
mod fuzz_layers;
mod fuzz_parsers;
mod harness;
mod harness_tests;
mod hostile_inputs;
mod hostile_layers;
mod hostile_registry;
mod metrics;
mod minimize;
mod packages;
mod profiles;
mod report_html;
mod rewrite;
mod sandbox;
mod squash_model;
mod tls;
mod verify;
