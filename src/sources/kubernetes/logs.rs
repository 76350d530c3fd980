//! TODO

use super::{Api, LogsSpec};
use crate::sources::{CollectError, Collection, Outcome};

pub async fn collect(api: &Api, spec: &LogsSpec, cx: &Collection, max_bytes: u64) -> Result<Outcome, CollectError> {
    let _ = (api, spec, cx, max_bytes);
    todo!()
}
