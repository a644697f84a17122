//! One integration test binary: every test shares the registries and temp
//! dirs owned by `harness`.
mod harness;
mod harness_tests;
