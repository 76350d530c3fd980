//! TODO

use super::{Api, HelmSpec};
use crate::sources::{CollectError, Collection, Outcome};

pub async fn collect(api: &Api, spec: &HelmSpec, cx: &Collection, max_bytes: u64) -> Result<Outcome, CollectError> {
    let _ = (api, spec, cx, max_bytes);
    todo!()
}
