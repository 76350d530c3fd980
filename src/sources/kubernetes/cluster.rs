//! TODO

use super::{Api, ClusterSpec};
use crate::sources::{CollectError, Collection, Outcome};

pub async fn collect(api: &Api, spec: &ClusterSpec, cx: &Collection, max_bytes: u64) -> Result<Outcome, CollectError> {
    let _ = (api, spec, cx, max_bytes);
    todo!()
}
