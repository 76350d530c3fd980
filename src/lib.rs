//! `preserve`: a forensic evidence collector for Caracal incidents.
//!
//! Data flows one way: config -> runner -> source -> redaction -> bundle writer -> manifest.
//! `main.rs` only turns CLI arguments into calls on this library and its results into exit codes.

pub mod alert;
pub mod analysis;
pub mod bundle;
pub mod catalog;
pub mod check;
pub mod config;
pub mod progress;
pub mod redact;
pub mod render;
pub mod report;
pub mod runner;
pub mod seal;
pub mod serve;
pub mod snapshot;
pub mod sources;
pub mod store;
pub mod time;
pub mod timeline;
pub mod web;

/// The tool's name and version, as recorded in every manifest.
pub const TOOL_NAME: &str = env!("CARGO_PKG_NAME");
pub const TOOL_VERSION: &str = env!("CARGO_PKG_VERSION");
