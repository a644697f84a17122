//! Transform stages between decode and encode: [`squash`] merges layers
//! (whiteouts applied, shadowed content dropped), [`filter`] removes what a
//! profile says, and dedup turns identical files into hard links (inside
//! `squash`, where inodes are known). Each returns its own stats.
//!
//! The output of this stage is a [`crate::layer::plan::Plan`] per output layer: a sorted
//! list of entries that point back into the decoded layers, so the encoder
//! can stream contents from the spool files.
//!
//! [`tree::TreeView`] is the merged tree as later decisions read it (the
//! profiles compile their filter from it): `profile` depends on this
//! stage's two interfaces, [`tree::TreeView`] and [`filter::PathFilter`],
//! and this stage knows nothing of profiles.

pub mod elf;
pub mod filter;
pub mod paths;
pub mod pkgdb;
pub mod squash;
pub mod tree;
