//! What the commands print on stdout, as text apart from where it goes: `main.rs` writes it (and handles a reader
//! that closed the pipe), the tests here read it. Everything taken from a bundle or an alert is escaped before it
//! is shown: evidence is hostile and must not steer the terminal or forge lines.

mod inspect;
mod list;
mod plan;
mod results;

pub use inspect::{Inspect, InspectPublic};
pub use list::{List, list_json};
pub use plan::Plan;
pub use results::{Custody, Fingerprints, Readiness, StoredBundles, Verified, snapshot_json};

use jiff::Timestamp;

/// One end of a time window: an open end is shown as `open`.
fn window_end(t: Option<Timestamp>) -> String {
    t.map_or("open".to_string(), |t| t.to_string())
}
