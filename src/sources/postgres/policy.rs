//! The policy-set step of the `postgres` source (`policy_sets = true`): for every binding in
//! `policy_set_bindings`, read in the collector's snapshot, the active and the previous `policy_set_versions` with
//! their manifests, every `policy_versions` row they reference with `content_sha256` recomputed, and a unified diff
//! between the two versions; problems become findings. Layout and format: docs/collectors.md.

use std::{collections::BTreeMap, io::Write};

use serde_json::{Value, json};
use tokio_postgres::Client;

use super::policy_manifest::{self, ManifestHash, References};
use crate::{
    bundle::manifest::{Finding, Severity},
    sources::{CollectError, Collection, Outcome, Redaction},
};

/// Rego content kept per policy version; beyond it the file is cut and marked truncated (the hash still covers
/// the whole content, computed by the server).
pub const CONTENT_CAP: usize = 4 << 20;

/// The format of `policy-sets/<zone>/<set>.json`.
const FORMAT: &str = "preserve-policy-set/1";

fn failed(what: &str) -> impl FnOnce(tokio_postgres::Error) -> CollectError + '_ {
    move |source| super::Error::Query { what: format!("policy sets: {what}"), source }.into()
}

/// One `policy_set_versions` row, its manifest apart.
struct SetVersion {
    id: String,
    version: i64,
    /// Every other column, as JSON.
    row: Value,
    manifest_text: String,
    manifest: Option<Value>,
    manifest_sha256: Option<String>,
}

/// One referenced policy version as the artifact records it; `content` is not held past its file.
#[derive(serde::Serialize)]
struct PolicyRef {
    policy_version_id: String,
    policy_id: Option<String>,
    policy_name: Option<String>,
    version: Option<Value>,
    /// `explicit` (a manifest key naming policy versions) or `inferred` (another string that is an id).
    referenced_as: &'static str,
    missing: bool,
    bytes: Option<i64>,
    content_sha256_stored: Option<String>,
    content_sha256_computed: Option<String>,
    /// `preserve`, or `server` when the content was over the cap and only its start was kept.
    computed_by: Option<&'static str>,
    ok: bool,
    truncated: bool,
    /// The redactor changed the file (it then differs from the hashed content).
    redacted: bool,
    file: Option<String>,
    /// The `policy_versions` row without its content (who created it, when, `created_via_operator`, ...).
    row: Value,
}

/// What the policy tables look like on this server, learned once.
struct Catalog {
    policies: bool,
    policy_sets: bool,
    /// The expression giving a policy version's content as bytes (text is hashed as UTF-8, as Caracal does).
    content_bytes: &'static str,
}

/// Reads every binding and writes its artifacts; one binding that cannot be read is a warning, not the end.
pub async fn collect(cx: &Collection, client: &Client, out: &mut Outcome) -> Result<(), CollectError> {
    let exists = |t: &'static str| async move {
        client
            .query_one("SELECT to_regclass($1) IS NOT NULL", &[&format!("public.{t}")])
            .await
            .map(|r| r.get::<_, bool>(0))
            .map_err(failed("looking up the policy tables"))
    };
    for t in ["policy_set_bindings", "policy_set_versions", "policy_versions"] {
        if !exists(t).await? {
            out.warn(format!("policy sets not read: table public.{t} does not exist"));
            return Ok(());
        }
    }
    let content_type: String = client
        .query_one(
            "SELECT format_type(atttypid, NULL) FROM pg_attribute WHERE attrelid = 'public.policy_versions'::regclass \
             AND attname = 'content' AND NOT attisdropped",
            &[],
        )
        .await
        .map_err(failed("policy_versions.content"))?
        .get(0);
    let catalog = Catalog {
        policies: exists("policies").await?,
        policy_sets: exists("policy_sets").await?,
        content_bytes: if content_type == "bytea" { "pv.content" } else { "convert_to(pv.content::text, 'UTF8')" },
    };
    // Hashes kept in bytea columns print as `\x<hex>` whatever the server's default.
    client.batch_execute("SET LOCAL bytea_output = 'hex'").await.map_err(failed("bytea_output"))?;
    let bindings = client
        .query(
            "SELECT zone_id::text, policy_set_id::text, active_version_id::text, to_jsonb(b)::text \
             FROM public.policy_set_bindings b ORDER BY 1, 2",
            &[],
        )
        .await
        .map_err(failed("reading policy_set_bindings"))?;
    if bindings.is_empty() && super::rls_hides_rows(client, "public", "policy_set_bindings").await.unwrap_or(false) {
        out.findings.push(cx.finding(
            "postgres.rls_zero_rows",
            Severity::Warning,
            "policy_set_bindings: row-level security applies to this role and no binding was read; policy sets \
             were not collected (for Caracal set `settings = { \"caracal.zone_id\" = \"*\" }`)",
        ));
    }
    let mut summaries = Vec::new();
    let (mut checked, mut unread) = (0usize, 0usize);
    for b in &bindings {
        if cx.is_cancelled() {
            return Err(CollectError::Cancelled);
        }
        let binding = Binding {
            zone_id: b.get(0),
            policy_set_id: b.get(1),
            active_version_id: b.get(2),
            row: serde_json::from_str(b.get::<_, &str>(3)).unwrap_or(Value::Null),
        };
        let _ = client.batch_execute("SAVEPOINT preserve_policy").await;
        match one_binding(cx, client, &catalog, &binding, out).await {
            Ok((summary, n)) => {
                let _ = client.batch_execute("RELEASE SAVEPOINT preserve_policy").await;
                checked += n;
                summaries.push(summary);
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK TO SAVEPOINT preserve_policy").await;
                out.warn(format!("policy set {} of zone {}: {e}", binding.policy_set_id, binding.zone_id));
                unread += 1;
            }
        }
    }
    // Clean only when every binding was read and none made a finding (a failed one may have made some first).
    let problems = out.findings.iter().any(|f| f.code.starts_with("policy_set."));
    if !problems && unread == 0 && !summaries.is_empty() {
        out.findings.push(cx.finding(
            "policy_set.ok",
            Severity::Info,
            format!(
                "{} policy-set binding(s), {checked} referenced policy version(s): every manifest_sha256 and \
                 content_sha256 matches, no reference is missing",
                summaries.len()
            ),
        ));
    }
    out.detail("policy_sets", summaries);
    Ok(())
}

struct Binding {
    zone_id: String,
    policy_set_id: String,
    active_version_id: Option<String>,
    row: Value,
}

/// Where a binding's files go: `policy-sets/<zone>/<set>`, each id made safe for a path.
fn base_path(b: &Binding) -> String {
    format!(
        "policy-sets/{}/{}",
        crate::sources::redis::safe_name(b.zone_id.as_bytes()),
        crate::sources::redis::safe_name(b.policy_set_id.as_bytes())
    )
}

/// One binding: its artifacts, its findings; returns its manifest summary and how many policy versions it checked.
async fn one_binding(
    cx: &Collection,
    client: &Client,
    catalog: &Catalog,
    b: &Binding,
    out: &mut Outcome,
) -> Result<(Value, usize), CollectError> {
    let base = base_path(b);
    let policy_set = if catalog.policy_sets {
        client
            .query_opt("SELECT to_jsonb(s)::text FROM public.policy_sets s WHERE s.id::text = $1", &[&b.policy_set_id])
            .await
            .map_err(failed("reading policy_sets"))?
            .and_then(|r| serde_json::from_str::<Value>(r.get::<_, &str>(0)).ok())
    } else {
        None
    };
    let finding = |code: &str, summary: String, details: Value| Finding {
        details: details.as_object().map(|m| m.clone().into_iter().collect()).unwrap_or_default(),
        ..cx.finding(format!("policy_set.{code}"), Severity::Critical, summary)
    };
    let place = |v: &SetVersion| {
        format!("zone {}, policy set {}, version {} ({})", b.zone_id, b.policy_set_id, v.version, v.id)
    };
    let active = match &b.active_version_id {
        Some(id) => {
            let v = read_version(client, "v.id::text = $1", &[id]).await?;
            if v.is_none() {
                out.findings.push(finding(
                    "active_version_missing",
                    format!(
                        "zone {}, policy set {}: the binding's active version {id} is not in policy_set_versions",
                        b.zone_id, b.policy_set_id
                    ),
                    json!({ "zone_id": b.zone_id, "policy_set_id": b.policy_set_id, "policy_set_version_id": id }),
                ));
            }
            v
        }
        None => None,
    };
    if let Some(a) = &active
        && a.row.get("policy_set_id").and_then(Value::as_str) != Some(b.policy_set_id.as_str())
    {
        out.findings.push(finding(
            "active_version_foreign",
            format!("{}: the active version belongs to policy set {}", place(a), a.row["policy_set_id"]),
            json!({ "zone_id": b.zone_id, "policy_set_id": b.policy_set_id, "policy_set_version_id": a.id }),
        ));
    }
    let previous = match &active {
        Some(a) => {
            let set = a.row.get("policy_set_id").and_then(Value::as_str).unwrap_or(&b.policy_set_id).to_string();
            read_version(
                client,
                "v.policy_set_id::text = $1 AND v.version < $2::int8 ORDER BY v.version DESC LIMIT 1",
                &[&set, &a.version],
            )
            .await?
        }
        None => None,
    };

    let mut checked = 0usize;
    let mut manifest_mismatches = 0usize;
    let mut sides = Vec::new();
    let mut refs_by_side: Vec<Vec<PolicyRef>> = Vec::new();
    for (side, version) in [("active", &active), ("previous", &previous)] {
        let Some(v) = version else {
            sides.push(Value::Null);
            refs_by_side.push(Vec::new());
            continue;
        };
        let hash = policy_manifest::manifest_hash(v.manifest.as_ref(), &v.manifest_text, v.manifest_sha256.as_deref());
        if !hash.ok {
            manifest_mismatches += 1;
            let mut f = finding(
                "manifest_mismatch",
                format!(
                    "{} ({side}): manifest_sha256 {} does not match the manifest (computed {})",
                    place(v),
                    hash.stored.as_deref().unwrap_or("(none)"),
                    hash.computed
                ),
                json!({ "zone_id": b.zone_id, "policy_set_id": b.policy_set_id, "policy_set_version_id": v.id,
                        "version": v.version, "side": side, "stored": hash.stored, "computed": hash.computed }),
            );
            if !hash.reproducible {
                // Caracal hashes `JSON.stringify` of the manifest as the API received it; for other shapes than
                // its arrays of one-key objects, jsonb's key order keeps preserve from rebuilding that text.
                f.severity = Severity::Warning;
                f.summary.push_str("; this manifest's shape is not one whose hashed text preserve can rebuild");
            }
            out.findings.push(f);
        }
        let refs = read_references(cx, client, catalog, &base, side, v).await?;
        for r in &refs {
            let details = json!({ "zone_id": b.zone_id, "policy_set_id": b.policy_set_id,
                "policy_set_version_id": v.id, "version": v.version, "side": side,
                "policy_version_id": r.policy_version_id, "policy_id": r.policy_id,
                "stored": r.content_sha256_stored, "computed": r.content_sha256_computed });
            if r.missing {
                out.findings.push(finding(
                    "missing_policy_version",
                    format!(
                        "{} ({side}): the manifest references policy version {}, which does not exist",
                        place(v),
                        r.policy_version_id
                    ),
                    details,
                ));
            } else if !r.ok {
                out.findings.push(finding(
                    "content_mismatch",
                    format!(
                        "{} ({side}): policy version {}: content_sha256 {} does not match its content (computed {})",
                        place(v),
                        r.policy_version_id,
                        r.content_sha256_stored.as_deref().unwrap_or("(none)"),
                        r.content_sha256_computed.as_deref().unwrap_or("?")
                    ),
                    details,
                ));
            }
        }
        checked += refs.iter().filter(|r| !r.missing).count();
        sides.push(side_json(v, &hash, &refs));
        refs_by_side.push(refs);
    }

    let diff_path = match (&active, &previous) {
        (Some(a), Some(p)) => {
            let path = format!("{base}.diff");
            write_diff(cx, client, catalog, &path, b, (p, &refs_by_side[1]), (a, &refs_by_side[0])).await?;
            Some(path)
        }
        _ => None,
    };
    let note = match (&b.active_version_id, &active, &previous) {
        (None, _, _) => Some("the binding has no active version (Caracal then installs deny-all for the zone)"),
        (Some(_), None, _) => Some("the active version is not in policy_set_versions"),
        (Some(_), Some(_), None) => Some("no previous version: the active version is the policy set's first"),
        _ => None,
    };
    let doc = json!({
        "format": FORMAT,
        "zone_id": b.zone_id,
        "policy_set_id": b.policy_set_id,
        "policy_set": policy_set,
        "binding": b.row,
        "active": sides[0],
        "previous": sides[1],
        "note": note,
        "diff": diff_path,
    });
    let text = serde_json::to_vec_pretty(&doc).unwrap_or_default();
    cx.write_small(&format!("{base}.json"), "application/json", &text)?;

    let brief = |v: &Option<SetVersion>| v.as_ref().map(|v| json!({ "id": v.id, "version": v.version }));
    let count = |i: usize, f: fn(&PolicyRef) -> bool| refs_by_side[i].iter().filter(|r| f(r)).count();
    let summary = json!({
        "zone_id": b.zone_id,
        "policy_set_id": b.policy_set_id,
        "artifact": format!("{base}.json"),
        "active": brief(&active),
        "previous": brief(&previous),
        "policies": { "active": refs_by_side[0].len(), "previous": refs_by_side[1].len() },
        "missing": count(0, |r| r.missing) + count(1, |r| r.missing),
        "mismatches": count(0, |r| !r.missing && !r.ok) + count(1, |r| !r.missing && !r.ok),
        "manifest_mismatches": manifest_mismatches,
    });
    Ok((summary, checked))
}

/// The version selected by `filter` (over `public.policy_set_versions v`), if any.
async fn read_version(
    client: &Client,
    filter: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Option<SetVersion>, CollectError> {
    let q = format!(
        "SELECT v.id::text, v.version::int8, v.manifest_json::text, (to_jsonb(v) - 'manifest_json')::text \
         FROM public.policy_set_versions v WHERE {filter}"
    );
    let Some(r) = client.query_opt(&q, params).await.map_err(failed("reading policy_set_versions"))? else {
        return Ok(None);
    };
    let manifest_text: String = r.get::<_, Option<String>>(2).unwrap_or_default();
    let row: Value = serde_json::from_str(r.get::<_, &str>(3)).unwrap_or(Value::Null);
    Ok(Some(SetVersion {
        id: r.get(0),
        version: r.get(1),
        manifest: serde_json::from_str(&manifest_text).ok(),
        manifest_sha256: row.get("manifest_sha256").and_then(Value::as_str).map(str::to_string),
        manifest_text,
        row,
    }))
}

/// The policy versions `v`'s manifest references, each checked, its content written to
/// `<base>/<side>/<policy_version_id>.rego`.
async fn read_references(
    cx: &Collection,
    client: &Client,
    catalog: &Catalog,
    base: &str,
    side: &'static str,
    v: &SetVersion,
) -> Result<Vec<PolicyRef>, CollectError> {
    let References { explicit, candidates } = v.manifest.as_ref().map(policy_manifest::references).unwrap_or_default();
    let all: Vec<String> = explicit.iter().chain(&candidates).cloned().collect();
    let name = if catalog.policies {
        "(SELECT p.name::text FROM public.policies p WHERE p.id::text = pv.policy_id::text)"
    } else {
        "NULL::text"
    };
    let q = format!(
        "SELECT pv.id::text, {name}, (to_jsonb(pv) - 'content')::text, octet_length({c})::int8 \
         FROM public.policy_versions pv WHERE pv.id::text = ANY($1)",
        c = catalog.content_bytes
    );
    let mut found: BTreeMap<String, (Option<String>, Value, Option<i64>)> = BTreeMap::new();
    for r in client.query(&q, &[&all]).await.map_err(failed("reading policy_versions"))? {
        let row = serde_json::from_str(r.get::<_, &str>(2)).unwrap_or(Value::Null);
        found.insert(r.get(0), (r.get(1), row, r.get(3)));
    }
    let mut refs = Vec::new();
    let listed = explicit.iter().map(|id| (id, "explicit")).chain(candidates.iter().map(|id| (id, "inferred")));
    for (id, how) in listed {
        let Some((policy_name, row, bytes)) = found.remove(id) else {
            if how == "explicit" {
                refs.push(PolicyRef::missing(id));
            }
            continue;
        };
        let stored = row.get("content_sha256").and_then(Value::as_str).map(policy_manifest::normalize_hex);
        let mut r = PolicyRef {
            policy_version_id: id.clone(),
            policy_id: row.get("policy_id").and_then(Value::as_str).map(str::to_string),
            policy_name,
            version: row.get("version").cloned(),
            referenced_as: how,
            missing: false,
            bytes,
            content_sha256_stored: stored,
            row,
            ..PolicyRef::missing(id)
        };
        let content = read_content(client, catalog, id).await?;
        r.content_sha256_computed = Some(content.sha256.clone());
        r.computed_by = Some(if content.truncated { "server" } else { "preserve" });
        r.ok = r.content_sha256_stored.as_deref() == Some(content.sha256.as_str());
        r.truncated = content.truncated;
        let file = format!("{base}/{side}/{}.rego", crate::sources::redis::safe_name(id.as_bytes()));
        let mut a = cx.artifact(&file, "text/plain", Redaction::Data)?;
        a.write_all(&content.bytes).map_err(CollectError::io(format!("writing {file}")))?;
        if content.truncated {
            a.set_truncated();
        }
        a.flush_lines().map_err(CollectError::io(format!("writing {file}")))?;
        r.redacted = a.redacted();
        a.finish().map_err(CollectError::io(format!("writing {file}")))?;
        r.file = Some(file);
        refs.push(r);
    }
    Ok(refs)
}

impl PolicyRef {
    /// A referenced id with no row; also what a found one starts from.
    fn missing(id: &str) -> Self {
        Self {
            policy_version_id: id.to_string(),
            policy_id: None,
            policy_name: None,
            version: None,
            referenced_as: "explicit",
            missing: true,
            bytes: None,
            content_sha256_stored: None,
            content_sha256_computed: None,
            computed_by: None,
            ok: false,
            truncated: false,
            redacted: false,
            file: None,
            row: Value::Null,
        }
    }
}

struct Content {
    bytes: Vec<u8>,
    sha256: String,
    truncated: bool,
}

/// A policy version's content, at most [`CONTENT_CAP`] bytes of it, and the SHA-256 of all of it: computed here
/// when it was read whole, by the server otherwise.
async fn read_content(client: &Client, catalog: &Catalog, id: &str) -> Result<Content, CollectError> {
    let q = format!(
        "SELECT substring({c} FROM 1 FOR $2::int4), octet_length({c}) > $2::int4, \
         CASE WHEN octet_length({c}) > $2::int4 THEN encode(sha256({c}), 'hex') END \
         FROM public.policy_versions pv WHERE pv.id::text = $1",
        c = catalog.content_bytes
    );
    let cap = CONTENT_CAP as i32;
    let r = client.query_one(&q, &[&id, &cap]).await.map_err(failed("reading a policy version's content"))?;
    let bytes: Vec<u8> = r.get::<_, Option<Vec<u8>>>(0).unwrap_or_default();
    let truncated = r.get::<_, Option<bool>>(1).unwrap_or(false);
    let sha256 = match r.get::<_, Option<String>>(2) {
        Some(server) if truncated => server,
        _ => policy_manifest::sha256_hex(&bytes),
    };
    Ok(Content { bytes, sha256, truncated })
}

/// One side of the artifact: the version row, its manifest and its hash check, its policies.
fn side_json(v: &SetVersion, hash: &ManifestHash, refs: &[PolicyRef]) -> Value {
    json!({
        "version": v.row,
        "manifest": v.manifest.clone().unwrap_or_else(|| json!({ "unparsed": v.manifest_text })),
        "manifest_sha256": hash,
        "policies": refs,
    })
}

/// The unified diff from `previous` to `active`: the manifests pretty-printed, then each policy's Rego, matched by
/// `policy_id` so a new version of one policy shows as a change of it. Unchanged policies are left out. Written a
/// section at a time, redacted as data (Rego is Postgres data: see `Redactor::redact_data`), so at most two
/// policies' contents are held.
async fn write_diff(
    cx: &Collection,
    client: &Client,
    catalog: &Catalog,
    path: &str,
    b: &Binding,
    (prev, prev_refs): (&SetVersion, &[PolicyRef]),
    (act, act_refs): (&SetVersion, &[PolicyRef]),
) -> Result<(), CollectError> {
    let io = || CollectError::io(format!("writing {path}"));
    let mut a = cx.artifact(path, "text/x-diff", Redaction::Data)?;
    let head = format!(
        "preserve policy-set diff: zone {}, policy set {}, version {} ({}) -> version {} ({})\n\n",
        b.zone_id, b.policy_set_id, prev.version, prev.id, act.version, act.id
    );
    a.write_all(head.as_bytes()).map_err(io())?;
    let pretty = |v: &SetVersion| {
        let mut s =
            v.manifest.as_ref().and_then(|m| serde_json::to_string_pretty(m).ok()).unwrap_or(v.manifest_text.clone());
        s.push('\n');
        s
    };
    let section = unified(&pretty(prev), &pretty(act), "previous/manifest.json", "active/manifest.json");
    a.write_all(section.as_bytes()).map_err(io())?;

    // Keyed by policy; a reference without a known policy (a missing one) by its own id.
    let key = |r: &PolicyRef| r.policy_id.clone().unwrap_or_else(|| format!("policy_version:{}", r.policy_version_id));
    let mut pairs: BTreeMap<String, (Option<&PolicyRef>, Option<&PolicyRef>)> = BTreeMap::new();
    for r in prev_refs {
        pairs.entry(key(r)).or_default().0 = Some(r);
    }
    for r in act_refs {
        pairs.entry(key(r)).or_default().1 = Some(r);
    }
    for (policy, (old, new)) in pairs {
        let same = match (old, new) {
            (Some(o), Some(n)) => {
                o.policy_version_id == n.policy_version_id
                    || (o.content_sha256_computed.is_some() && o.content_sha256_computed == n.content_sha256_computed)
            }
            _ => false,
        };
        if same {
            continue;
        }
        let label = |r: Option<&PolicyRef>, dir: &str| match r {
            Some(r) => format!(
                "{dir}/{}.rego\t{}{}",
                crate::sources::redis::safe_name(policy.as_bytes()),
                r.policy_version_id,
                if r.missing { " (missing)" } else { "" }
            ),
            None => "/dev/null".to_string(),
        };
        let old_text = diff_content(client, catalog, old).await?;
        let new_text = diff_content(client, catalog, new).await?;
        let section = unified(&old_text, &new_text, &label(old, "previous"), &label(new, "active"));
        a.write_all(section.as_bytes()).map_err(io())?;
    }
    a.finish().map_err(io())
}

/// A policy's content as diff text (empty when there is none to read).
async fn diff_content(client: &Client, catalog: &Catalog, r: Option<&PolicyRef>) -> Result<String, CollectError> {
    match r {
        Some(r) if !r.missing => {
            let c = read_content(client, catalog, &r.policy_version_id).await?;
            Ok(String::from_utf8_lossy(&c.bytes).into_owned())
        }
        _ => Ok(String::new()),
    }
}

/// The unified diff of `old` and `new` (three lines of context), empty when they are equal.
fn unified(old: &str, new: &str, old_label: &str, new_label: &str) -> String {
    let diff = similar::TextDiff::configure().timeout(std::time::Duration::from_secs(10)).diff_lines(old, new);
    let mut rendered = diff.unified_diff().context_radius(3).header(old_label, new_label).to_string();
    if !rendered.is_empty() && !rendered.ends_with('\n') {
        rendered.push('\n');
    }
    rendered
}
