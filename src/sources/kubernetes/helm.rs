//! The Helm config diff: Helm 3 keeps each revision of a release in a Secret `sh.helm.release.v1.<release>.v<N>` of
//! type `helm.sh/release.v1`, whose `release` key is base64 of the gzip of the release's JSON (inside the API's own
//! base64 of every Secret value). The collector decodes the latest revision and the one to compare it with (the
//! revision deployed before the window began, else the one before the latest), and writes the user-supplied values
//! and the rendered manifest of each, redacted, with a unified diff of the redacted sides, in the shape of the
//! `config_diff` kind: `baseline/<item>`, `current/<item>`, `<item>.diff`. `history.json` lists every revision
//! found, without values or manifest.
//!
//! Only Helm's records of the release are ever read: a list selected by Helm's labels and the record type, or,
//! where RBAC refuses that list (it cannot limit a list of Secrets to some of them, so the recommended Role grants
//! none), a `get` of each record by name.

use std::io::Read;

use base64::Engine;
use futures::StreamExt;
use serde_json::{Value, json};

use super::{Api, Error, HelmSpec};
use crate::sources::{
    CollectError, Collection, Outcome, Verdict,
    config_diff::{Item, Text, write_item},
};

/// A decoded release record beyond this is no Helm record (Helm stores a release in one Secret, at most 1 MiB):
/// what a corrupt or hostile one expands to is cut here.
const MAX_RELEASE: u64 = 64 << 20;
/// Records asked for at once when they are got by name.
const CONCURRENCY: usize = 8;

/// One revision of the release, as far as choosing and listing revisions needs: its values and manifest are
/// decoded again, for the two compared only, so at most one decoded record is held at a time (each may expand to
/// [`MAX_RELEASE`]), however many revisions the release keeps.
struct Revision {
    version: u64,
    secret: String,
    status: String,
    deployed: Option<jiff::Timestamp>,
    /// Its entry of `history.json`.
    history: Value,
    /// Its Secret's place among those read.
    at: usize,
}

pub async fn collect(api: &Api, spec: &HelmSpec, cx: &Collection, _max_bytes: u64) -> Result<Outcome, CollectError> {
    let mut out = Outcome::default();
    let release = &api.site.release;
    let (secrets, found_by) = match records(api, spec, release, &mut out).await {
        Ok(found) => found,
        Err(e) => {
            out.warn(cx.redact_str(&e.to_string()));
            out.verdict = Verdict::AllFailed("the release's Helm records could not be read".into());
            return Ok(out);
        }
    };
    out.detail("release", release);
    out.detail("namespace", &api.namespace);
    out.detail("found_by", found_by);
    let mut revisions = Vec::new();
    for (at, s) in secrets.iter().enumerate() {
        match decode(s).and_then(|record| revision(s, &record, at)) {
            Ok(r) => revisions.push(r),
            Err(why) => {
                let name = s["metadata"]["name"].as_str().unwrap_or("a Secret");
                out.warn(cx.redact_str(&format!("{name}: {why}")));
            }
        }
    }
    revisions.sort_by_key(|r| r.version);
    let history: Vec<&Value> = revisions.iter().map(|r| &r.history).collect();
    cx.write_small("history.json", "application/json", serde_json::to_string_pretty(&history)?.as_bytes())?;
    let Some(latest) = revisions.last() else {
        if out.warnings.is_empty() {
            out.verdict =
                Verdict::Absent(format!("no Helm record of release `{release}` in namespace {}", api.namespace));
        } else {
            out.verdict = Verdict::AllFailed("no Helm record of the release could be decoded".into());
        }
        return Ok(out);
    };
    let baseline = compared_with(&revisions, cx.window.since);
    out.detail("current", latest.version);
    out.detail("baseline", baseline.map(|b| b.version));
    let origin = |r: &Revision| {
        let when = r.deployed.map(|t| format!(", deployed {t}")).unwrap_or_default();
        format!("revision {} ({}{when}), Secret {}", r.version, r.status, r.secret)
    };
    // Each compared record decodes as it did a moment ago (the same bytes); decoded one at a time.
    let [current_values, current_manifest] = sides(&decode(&secrets[latest.at]).unwrap_or_default());
    let [baseline_values, baseline_manifest] = match baseline {
        Some(b) => sides(&decode(&secrets[b.at]).unwrap_or_default()).map(|t| Ok((origin(b), t))),
        None => [(); 2].map(|()| Err(format!("revision {} is the only one of the release", latest.version))),
    };
    let mut items = Vec::new();
    for (name, current, baseline) in
        [("values.json", current_values, baseline_values), ("manifest.yaml", current_manifest, baseline_manifest)]
    {
        let item = Item { name: name.to_string(), source: Some(origin(latest)), current: Some(current), baseline };
        // One key makes every marker of this bundle: both sides' markers compare.
        items.push(write_item(cx, &item, true)?);
    }
    out.detail("items", &items);
    Ok(out)
}

/// The revision the latest is compared with: the last one deployed before the window began, when it is older
/// than the latest; else the one before the latest; `None` when there is only one.
fn compared_with(revisions: &[Revision], since: Option<jiff::Timestamp>) -> Option<&Revision> {
    let (latest, older) = revisions.split_last()?;
    let before_window = since
        .and_then(|s| older.iter().rev().find(|r| r.deployed.is_some_and(|d| d < s)))
        .filter(|r| r.version < latest.version);
    before_window.or_else(|| older.last())
}

/// The release's Helm records as the API returns them, and how they were found: the list selected by Helm's
/// labels and the record type, or, where that list is refused, each name got in turn.
async fn records(
    api: &Api,
    spec: &HelmSpec,
    release: &str,
    out: &mut Outcome,
) -> Result<(Vec<Value>, &'static str), Error> {
    let labels = format!("owner=helm,name={release}");
    match api.list("v1", "secrets", Some(&labels), Some("type=helm.sh/release.v1")).await {
        Ok(list) => {
            let items = list["items"].as_array().cloned().unwrap_or_default();
            // Only what is Helm's record of this release, whatever a server returns beside it.
            let prefix = format!("sh.helm.release.v1.{release}.v");
            let ours = items
                .into_iter()
                .filter(|s| s["type"] == "helm.sh/release.v1")
                .filter(|s| s["metadata"]["name"].as_str().is_some_and(|n| n.starts_with(&prefix)))
                .collect();
            Ok((ours, "list"))
        }
        Err(e) if e.code() == Some(403) => {
            let max = spec.max_revision.unwrap_or(100);
            let names: Vec<String> = (1..=max).map(|n| format!("sh.helm.release.v1.{release}.v{n}")).collect();
            let got: Vec<(String, Result<Value, Error>)> = futures::stream::iter(names)
                .map(|name| async move {
                    let r = api.get("v1", "secrets", &name).await;
                    (name, r)
                })
                .buffered(CONCURRENCY)
                .collect()
                .await;
            let mut found = Vec::new();
            let mut other_errors = 0;
            for (_, r) in got {
                match r {
                    Ok(s) => found.push(s),
                    // Absent, or beyond the names the Role lists: not a record of this release.
                    Err(e) if matches!(e.code(), Some(403 | 404)) => {}
                    Err(e) => {
                        other_errors += 1;
                        if other_errors <= 3 {
                            out.warn(e.to_string());
                        }
                    }
                }
            }
            if other_errors > 3 {
                out.warn(format!("{} more records could not be got", other_errors - 3));
            }
            if found.is_empty() && other_errors == max as usize {
                return Err(e);
            }
            Ok((found, "get by name (listing Secrets refused)"))
        }
        Err(e) => Err(e),
    }
}

/// The two sides one revision gives: its user-supplied values (`{}` when it has none) and its rendered manifest.
fn sides(record: &Value) -> [Text; 2] {
    let config = if record["config"].is_null() { json!({}) } else { record["config"].clone() };
    let values = serde_json::to_vec_pretty(&config).unwrap_or_default();
    let manifest = record["manifest"].as_str().unwrap_or_default().as_bytes().to_vec();
    [values, manifest].map(|bytes| Text { bytes, truncated: false })
}

/// Decodes a Helm release Secret into the release's JSON: the API's base64 of `data.release`, Helm's base64
/// inside it, then gzip (Helm compresses; an older record may not be), at most [`MAX_RELEASE`] of it. Each step
/// says what was wrong.
fn decode(secret: &Value) -> Result<Value, String> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let data = secret["data"]["release"].as_str().ok_or("no data.release")?;
    let helm = b64.decode(data.trim()).map_err(|e| format!("data.release is not base64: {e}"))?;
    let packed = b64.decode(helm.trim_ascii()).map_err(|e| format!("the release record is not Helm's base64: {e}"))?;
    let mut json = Vec::new();
    if packed.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(&packed[..])
            .take(MAX_RELEASE + 1)
            .read_to_end(&mut json)
            .map_err(|e| format!("the release record does not decompress: {e}"))?;
        if json.len() as u64 > MAX_RELEASE {
            return Err(format!("the release record expands beyond {} MiB: not a Helm release", MAX_RELEASE >> 20));
        }
    } else {
        json = packed;
    }
    serde_json::from_slice(&json).map_err(|e| format!("the release record is not JSON: {e}"))
}

/// What choosing and listing revisions needs of a decoded `record`, the Secret at `at` of those read.
fn revision(secret: &Value, record: &Value, at: usize) -> Result<Revision, String> {
    let name = secret["metadata"]["name"].as_str().unwrap_or_default().to_string();
    let version = record["version"]
        .as_u64()
        .or_else(|| name.rsplit_once(".v").and_then(|(_, v)| v.parse().ok()))
        .ok_or("the release record has no version")?;
    let status = record["info"]["status"]
        .as_str()
        .or_else(|| secret["metadata"]["labels"]["status"].as_str())
        .unwrap_or("unknown")
        .to_string();
    let deployed = record["info"]["last_deployed"].as_str().and_then(|t| t.parse().ok());
    let (info, chart) = (&record["info"], &record["chart"]["metadata"]);
    let history = json!({
        "revision": version, "secret": name, "status": status,
        "last_deployed": info["last_deployed"], "first_deployed": info["first_deployed"],
        "description": info["description"], "chart_version": chart["version"], "app_version": chart["appVersion"],
    });
    Ok(Revision { version, secret: name, status, deployed, history, at })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn revision(version: u64, deployed: &str) -> Revision {
        Revision {
            version,
            secret: format!("sh.helm.release.v1.caracal.v{version}"),
            status: "superseded".into(),
            deployed: Some(deployed.parse().unwrap()),
            history: json!({}),
            at: 0,
        }
    }

    #[test]
    fn the_latest_is_compared_with_what_ran_before_the_window() {
        let r = [
            revision(3, "2026-12-01T08:00:00Z"),
            revision(4, "2026-12-03T08:00:00Z"),
            revision(5, "2026-12-04T10:30:00Z"),
            revision(6, "2026-12-04T10:40:00Z"),
        ];
        let at = |s: &str| Some(s.parse().unwrap());
        // Two upgrades inside the window: the diff goes back to what ran when it began.
        assert_eq!(compared_with(&r, at("2026-12-04T10:00:00Z")).unwrap().version, 4);
        // Nothing deployed in the window: the one before the latest.
        assert_eq!(compared_with(&r, at("2026-12-05T00:00:00Z")).unwrap().version, 5);
        assert_eq!(compared_with(&r, None).unwrap().version, 5);
        // Everything deployed in the window: the one before the latest.
        assert_eq!(compared_with(&r, at("2026-11-01T00:00:00Z")).unwrap().version, 5);
        assert!(compared_with(&r[..1], None).is_none());
    }
}
