//! A snapshot from request to bundle: plan which collectors run over which window, resolve the secrets the
//! redactor must know, run the collectors, write and verify-ready the bundle.

use std::{collections::BTreeMap, path::PathBuf, sync::Arc, time::Duration};

use jiff::{SignedDuration, Timestamp};
use serde::Serialize;

use crate::{
    alert::Alert,
    bundle::{
        self,
        artifact::Staging,
        manifest::{
            BundleStatus, CollectorStatus, Finding, Manifest, Severity, Tool, Trigger, TriggerKind, WindowRecord,
        },
        outdir::OutDir,
        writer::{self, ArchiveOptions, WrittenBundle},
    },
    catalog::{Catalog, CollectorDef},
    config::{ConfigError, CredentialRef, Environment, Secret},
    progress::Progress,
    redact::{FingerprintKey, Redactor, fingerprint::KeyError},
    report,
    runner::{self, PlannedCollector, RunContext, Stop},
    seal::{SealRecord, Sealer},
    store::{self, record::UploadRecord},
    time::{self, Window},
    timeline,
};

/// The collector every snapshot includes.
pub const CONTEXT_COLLECTOR: &str = "context";

/// What the operator (or an alert) asked for.
#[derive(Debug, Clone, Default)]
pub struct Request {
    pub profiles: Vec<String>,
    pub collectors: Vec<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub alerts: Vec<Alert>,
    pub trigger: Option<TriggerKind>,
    /// Upload the bundle to `[store]` while it is written.
    pub upload: bool,
}

/// What will run.
#[derive(Debug, Clone)]
pub struct Plan {
    pub profile_label: String,
    pub profiles: Vec<String>,
    pub collectors: Vec<PlannedCollector>,
    pub window: Window,
    pub trigger: Trigger,
    pub labels: BTreeMap<String, String>,
    /// The key of this bundle's redaction markers: chosen with the plan, so the collectors' descriptions shown
    /// by `--dry-run` and recorded in the manifest carry the same markers as the artifacts.
    pub fingerprint_key: FingerprintKey,
    /// Why the site's fingerprint key could not be used (this bundle is then keyed by a per-bundle key).
    pub fingerprint_key_warning: Option<String>,
    /// The bundle id, when the caller chose it before the run (the sidecar answers an alert with it at once);
    /// otherwise it is made when the run starts.
    pub bundle_id: Option<String>,
    /// Alerts that arrive while this snapshot runs; they join the manifest's trigger.
    pub late_alerts: LateAlerts,
    /// Upload the bundle to `[store]` while it is written.
    pub upload: bool,
}

/// Alerts attached to a running snapshot (the sidecar's answer to an alert storm: one snapshot, every alert in
/// its trigger). Open until the manifest is written; after that an alert is refused and needs a snapshot of
/// its own.
#[derive(Debug, Clone)]
pub struct LateAlerts(Arc<std::sync::Mutex<Option<Vec<Alert>>>>);

impl Default for LateAlerts {
    fn default() -> Self {
        Self(Arc::new(std::sync::Mutex::new(Some(Vec::new()))))
    }
}

impl LateAlerts {
    /// Attaches `alert`; `false` when the snapshot is already writing its manifest.
    pub fn attach(&self, alert: &Alert) -> bool {
        match self.0.lock() {
            Ok(mut g) => g.as_mut().map(|v| v.push(alert.clone())).is_some(),
            Err(_) => false,
        }
    }

    /// Closes the list and returns what was attached.
    pub fn close(&self) -> Vec<Alert> {
        self.0.lock().map(|mut g| g.take().unwrap_or_default()).unwrap_or_default()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error("unknown profile `{0}` (see `preserve list`)")]
    UnknownProfile(String),
    #[error("unknown collector `{0}` (see `preserve list`)")]
    UnknownCollector(String),
    #[error("nothing to collect: give --profile or --collector")]
    Empty,
    #[error("--{which}: {source}")]
    Time { which: &'static str, source: time::TimeParseError },
    #[error("--since is after --until")]
    EmptyWindow,
    #[error("--since `{given}` is in the future ({at}, now is {now}): give a time before now, or a duration ago (2h)")]
    FutureSince { given: String, at: String, now: String },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    FingerprintKey(#[from] KeyError),
    #[error("--upload: no [store] in the site config (give `[store] url = \"s3://bucket/prefix\"`)")]
    NoStore,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("cannot create the staging directory {path}: {source}")]
    Staging { path: PathBuf, source: std::io::Error },
    #[error("{source}; the collected artifacts remain in {staging}")]
    Write { source: writer::WriteError, staging: PathBuf },
}

/// A finished snapshot.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub bundle: WrittenBundle,
    pub manifest: Manifest,
    /// How the bundle was sealed (`[seal]`): its signature, timestamp and custody record, or why one is missing.
    pub seal: SealRecord,
    /// What became of its upload to `[store]`, when it was uploaded.
    pub upload: Option<UploadRecord>,
}

impl Outcome {
    /// `0` complete, `3` partial, as the CLI promises; `4` complete and `5` partial when a part of the seal that
    /// `[seal]` asks for is missing (no signature, or no timestamp: the TSA was down, slow or answered garbage);
    /// `6` complete and `7` partial when the upload was asked for and no confirmed copy is in the store (the bundle
    /// is only on this host: that outranks a missing seal part, which the JSON and `seal.json` still name).
    pub fn exit_code(&self) -> i32 {
        let complete = self.manifest.status == BundleStatus::Complete;
        if self.upload.as_ref().is_some_and(|u| !u.confirmed()) {
            return if complete { 6 } else { 7 };
        }
        match (complete, self.seal.incomplete()) {
            (true, false) => 0,
            (false, false) => 3,
            (true, true) => 4,
            (false, true) => 5,
        }
    }
}

/// Chooses collectors and window. Profiles contribute their collectors in order; `context` is always added first.
pub fn plan(env: &Environment, catalog: &Catalog, req: &Request, now: Timestamp) -> Result<Plan, PlanError> {
    if req.profiles.is_empty() && req.collectors.is_empty() {
        return Err(PlanError::Empty);
    }
    if req.upload && env.store.is_none() {
        return Err(PlanError::NoStore);
    }
    let mut chosen: Vec<&CollectorDef> = Vec::new();
    fn add<'a>(chosen: &mut Vec<&'a CollectorDef>, c: &'a CollectorDef) {
        if !chosen.iter().any(|o| o.name == c.name) {
            chosen.push(c);
        }
    }
    add(
        &mut chosen,
        catalog
            .collectors
            .get(CONTEXT_COLLECTOR)
            .ok_or_else(|| PlanError::UnknownCollector(CONTEXT_COLLECTOR.into()))?,
    );
    let mut default_window: Option<SignedDuration> = None;
    for name in &req.profiles {
        let p = catalog.profiles.get(name).ok_or_else(|| PlanError::UnknownProfile(name.clone()))?;
        for c in catalog.profile_collectors(p) {
            add(&mut chosen, c);
        }
        if let Some(w) = p.window {
            default_window = Some(default_window.map_or(w, |d: SignedDuration| d.max(w)));
        }
    }
    for name in &req.collectors {
        add(&mut chosen, catalog.collectors.get(name).ok_or_else(|| PlanError::UnknownCollector(name.clone()))?);
    }

    let point = |which, s: &Option<String>| {
        s.as_deref().map(|v| time::parse_point(v, now).map_err(|source| PlanError::Time { which, source })).transpose()
    };
    let given_since = point("since", &req.since)?;
    if let (Some(at), Some(given)) = (given_since, &req.since)
        && at > now
    {
        let seconds = |t: Timestamp| t.strftime("%Y-%m-%dT%H:%M:%SZ").to_string();
        return Err(PlanError::FutureSince { given: given.clone(), at: seconds(at), now: seconds(now) });
    }
    let since = given_since.or_else(|| default_window.and_then(|w| now.checked_sub(w).ok()));
    let until = point("until", &req.until)?;
    if let (Some(s), Some(u)) = (since, until)
        && s > u
    {
        return Err(PlanError::EmptyWindow);
    }

    let mut labels = BTreeMap::new();
    for a in &req.alerts {
        for (k, v) in &a.labels {
            labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
    }
    let profiles = req.profiles.clone();
    let profile_label = if profiles.is_empty() { "custom".to_string() } else { profiles.join("+") };
    let (fingerprint_key, fingerprint_key_warning) = fingerprint_key(env)?;
    // Shown by --dry-run before secrets are resolved: at least URL passwords and tokens are hidden.
    let describer = Redactor::new(env.env_secrets.clone(), fingerprint_key.clone());
    let collectors = chosen
        .into_iter()
        .map(|c| PlannedCollector {
            name: c.name.clone(),
            kind: c.kind.clone(),
            source: c.source.clone(),
            timeout: c.timeout.unwrap_or(env.collector_timeout).unsigned_abs(),
            describe: describer.redact_str(&c.source.describe(env), &crate::redact::Tally::default()),
            origin: Some(c.origin.clone()),
        })
        .collect();
    let trigger = Trigger {
        kind: req.trigger.unwrap_or(if req.alerts.is_empty() { TriggerKind::Cli } else { TriggerKind::Alert }),
        alerts: req.alerts.clone(),
        redactions: Vec::new(),
    };
    Ok(Plan {
        profile_label,
        profiles,
        collectors,
        window: Window { since, until },
        trigger,
        labels,
        fingerprint_key,
        fingerprint_key_warning,
        bundle_id: None,
        late_alerts: LateAlerts::default(),
        upload: req.upload,
    })
}

/// The site's fingerprint key, or a per-bundle key. A site key that cannot be read (or is too short) does not stop
/// the snapshot: the evidence matters more than linking its markers to other bundles; the bundle says so instead.
fn fingerprint_key(env: &Environment) -> Result<(FingerprintKey, Option<String>), KeyError> {
    let Some(source) = &env.fingerprint_key else { return Ok((FingerprintKey::per_bundle()?, None)) };
    let why = match FingerprintKey::site_from(source) {
        Ok(key) => return Ok((key, None)),
        Err(e) => e.to_string(),
    };
    let warning = format!(
        "redaction.fingerprint_key: {why}; this bundle's markers are keyed by a per-bundle key and compare with no \
         other bundle's"
    );
    Ok((FingerprintKey::per_bundle()?, Some(warning)))
}

impl Plan {
    /// The plan as data: what `--dry-run` prints and the context collector records.
    pub fn summary(&self, env: &Environment) -> serde_json::Value {
        serde_json::json!({
            "profile": self.profile_label,
            "profiles": self.profiles,
            "window": { "since": self.window.since, "until": self.window.until },
            "trigger": self.trigger,
            "out_dir": env.out_dir,
            "collectors": self.collectors.iter().map(|c| serde_json::json!({
                "name": c.name, "kind": c.kind, "source": c.describe, "timeout": format!("{:#}", SignedDuration::try_from(c.timeout).unwrap_or_default()),
            })).collect::<Vec<_>>(),
        })
    }
}

/// Secret values for the redactor, and what could not be resolved but did not stop the run.
#[derive(Debug, Default)]
pub struct Secrets {
    pub values: Vec<(String, Secret)>,
    pub warnings: Vec<String>,
}

/// Resolves every secret the redactor must know: the site's credentials and those of the planned collectors.
/// An `env:` reference whose variable is unset stops the run (a config error located at the reference) when a
/// planned collector needs it or it is listed in `redact_secrets`; a site credential no planned collector uses
/// only produces a warning; a missing `file:` is left to the collector that needs it to fail on.
pub fn resolve_secrets(env: &Environment, plan: &Plan) -> Result<Secrets, ConfigError> {
    let mut out = Secrets { values: env.env_secrets.clone(), warnings: Vec::new() };
    // The key is a secret like any credential: it must never reach a bundle, or every marker could be tested.
    if let Some(key) = plan.fingerprint_key.site_secret() {
        out.values.push(("credential redaction.fingerprint_key".into(), key));
    }
    out.warnings.extend(plan.fingerprint_key_warning.clone());
    let site = env.config_file.clone().unwrap_or_else(|| "<environment>".into());
    let mut needed = std::collections::BTreeSet::new();
    // (file, its text, setting, reference, needed)
    let mut refs: Vec<(PathBuf, Option<String>, String, CredentialRef, bool)> = Vec::new();
    for c in &plan.collectors {
        for (k, r) in c.source.credentials(env) {
            needed.insert(k.clone());
            if env.redact_refs.iter().any(|(setting, _)| *setting == k) {
                continue; // a site setting: located in the site config below
            }
            let file =
                c.origin.as_ref().map_or_else(|| PathBuf::from(format!("<collector {}>", c.name)), |o| o.file.clone());
            let text = std::fs::read_to_string(&file).ok();
            refs.push((file, text, format!("collector `{}`: {k}", c.name), r, true));
        }
    }
    for (k, r) in &env.redact_refs {
        let must = needed.contains(k) || k.starts_with("redact_secrets");
        refs.push((site.clone(), env.config_text.clone(), k.clone(), r.clone(), must));
    }
    for (file, text, setting, r, must) in refs {
        match (&r, r.resolve()) {
            (_, Ok(s)) => push_secret(&mut out.values, format!("credential {r}"), s),
            (CredentialRef::Env(_), Err(e)) if must => {
                // Point at the reference in the file that names it.
                let needle = format!("\"{r}\"");
                let span = text.as_deref().and_then(|t| t.find(&needle).map(|i| i..i + needle.len()));
                return Err(ConfigError::at(&file, text.as_deref().unwrap_or(""), span, format!("{setting}: {e}")));
            }
            (CredentialRef::Env(_), Err(e)) => out.warnings.push(format!("{setting}: {e} (not used by this snapshot)")),
            (CredentialRef::File(_), Err(_)) => {}
        }
    }
    // Caracal's Compose install keeps every generated secret as a file here: none may leak into evidence.
    if let Ok(entries) = std::fs::read_dir(env.caracal_home.join("secrets")) {
        for e in entries.filter_map(Result::ok) {
            let path = e.path();
            if e.metadata().is_ok_and(|m| m.is_file() && m.len() <= 64 * 1024)
                && let Ok(value) = CredentialRef::File(path.clone()).resolve()
            {
                let name = e.file_name().to_string_lossy().into_owned();
                push_secret(&mut out.values, format!("caracal secret {name}"), value);
            }
        }
    }
    Ok(out)
}

/// Adds a secret, and the password inside it when it is a URL (Caracal's `databaseUrl` files). A short URL password
/// (a development `caracal:caracal`) is left to the URL rule, which finds it where it is a password: as a known
/// value it would be replaced inside every table, stream and service name that contains it.
fn push_secret(secrets: &mut Vec<(String, Secret)>, label: String, value: Secret) {
    for pw in crate::config::url_passwords(value.expose_secret()).into_iter().filter(|pw| pw.len() >= 8) {
        secrets.push((format!("{label} (URL password)"), Secret::new(pw)));
    }
    secrets.push((label, value));
}

/// Runs the plan and writes the bundle. `Err` only when no bundle could be written at all.
pub async fn execute(
    plan: Plan,
    env: Arc<Environment>,
    secrets: Secrets,
    stop: &Stop,
    progress: &Progress,
) -> Result<Outcome, SnapshotError> {
    let created_at = Timestamp::now();
    let bundle_id = plan.bundle_id.clone().unwrap_or_else(|| bundle::bundle_id(&plan.profile_label, created_at));
    let out = OutDir::open(&env.out_dir)
        .map(Arc::new)
        .map_err(|source| SnapshotError::Staging { path: env.out_dir.clone(), source })?;
    if let Some(why) = out.exposure() {
        progress.note(&format!("warning: {why}"));
    }
    // The bundle id is public (`/snapshots` shows it): the staging directory's name has a secret part too, so
    // nobody can take that name first and stop the snapshot.
    let (staging_name, private) = out.private_unique(&format!(".{bundle_id}"), ".staging").map_err(|source| {
        SnapshotError::Staging { path: env.out_dir.join(format!(".{bundle_id}.*.staging")), source }
    })?;
    let private = Arc::new(private);
    let staging_dir = private.path().to_path_buf();
    // The key is read (or the agent asked) while the collectors run; a key that cannot sign is said, and the
    // evidence is collected all the same.
    let sealer = env.seal.any().then(|| {
        let settings = env.seal.clone();
        tokio::task::spawn_blocking(move || Arc::new(Sealer::prepare(&settings)))
    });
    let staging = Staging::create(private.clone(), env.zstd_level);
    let opts = ArchiveOptions {
        out: out.clone(),
        staging: private.clone(),
        zstd_level: env.zstd_level,
        organization: env.organization.clone(),
        recipients: env.seal.recipients.clone(),
    };
    // The upload starts with the archive: every byte goes to the store as it is written.
    let (upload, mirror) = match env.store.clone().filter(|_| plan.upload) {
        Some(settings) => {
            let stopped = stop.clone();
            let (u, m) = store::upload::begin(
                Arc::new(settings),
                &bundle_id,
                env.seal.encrypted(),
                Box::new(move || stopped.is_stopped()),
            );
            (Some(u), Some(m))
        }
        None => (None, None),
    };
    // Compression starts with the first finished artifact, not after the last one.
    let archive = writer::ArchiveStream::start(&opts, &bundle_id, created_at.as_second().max(0) as u64, mirror)
        .map_err(|source| SnapshotError::Write { source, staging: staging_dir.clone() })?;
    staging.on_seal(archive.sender());
    // The report reads the artifacts it summarizes as they are staged (report::tap).
    let taps = env.report.then(|| {
        let alert = timeline::first_start(&plan.trigger.alerts);
        let taps = report::tap::Taps::new(
            report::empty_digest(plan.window.since, plan.window.until, created_at, alert),
            plan.collectors.iter().map(|c| (c.name.clone(), c.kind.clone())).collect(),
        );
        let tapped = taps.clone();
        staging.tap(move |collector, path| tapped.open(collector, path));
        taps
    });
    let redactor = Arc::new(Redactor::new(secrets.values, plan.fingerprint_key.clone()));
    if let Some(known) = redactor.known() {
        staging.guard(known);
    }
    for w in &secrets.warnings {
        progress.note(w);
    }
    let rc = RunContext {
        env: env.clone(),
        window: plan.window,
        labels: plan.labels.clone(),
        plan_summary: Arc::new(plan.summary(&env)),
        staging: staging.clone(),
        redactor,
        run_timeout: env.run_timeout.unsigned_abs().max(Duration::from_millis(1)),
    };
    progress.note(&format!("snapshot {bundle_id}: {} collectors", plan.collectors.len()));
    let ran = runner::run(plan.collectors.clone(), &rc, stop, progress).await;
    let mut findings: Vec<Finding> = secrets
        .warnings
        .iter()
        .map(|w| Finding {
            collector: CONTEXT_COLLECTOR.into(),
            code: "config.credential_unavailable".into(),
            severity: Severity::Warning,
            summary: w.clone(),
            details: Default::default(),
        })
        .collect();
    let mut records = Vec::with_capacity(ran.len());
    for r in ran {
        findings.extend(r.findings);
        records.push(r.record);
    }

    let staged = staging.finish();
    for r in &mut records {
        r.artifacts = staged.iter().filter(|a| a.collector == r.name).map(|a| a.record.clone()).collect();
    }
    // Alerts come from outside: their annotations and URLs may carry credentials too.
    let trigger_tally = crate::redact::Tally::default();
    let mut trigger = plan.trigger.clone();
    trigger.alerts.extend(plan.late_alerts.close());
    let mut alerts = serde_json::to_value(&trigger.alerts).unwrap_or_default();
    crate::redact::redact_json(&mut alerts, &rc.redactor, &trigger_tally);
    trigger.alerts = serde_json::from_value(alerts).unwrap_or_default();
    trigger.redactions = trigger_tally.records();
    let complete = records.iter().all(|r| matches!(r.status, CollectorStatus::Ok | CollectorStatus::Skipped))
        && !stop.is_stopped();
    let manifest = Manifest {
        format: bundle::manifest::FORMAT.to_string(),
        bundle_id,
        profile: plan.profile_label.clone(),
        profiles: plan.profiles.clone(),
        created_at,
        finished_at: Timestamp::now(),
        tool: Tool { name: crate::TOOL_NAME.into(), version: crate::TOOL_VERSION.into() },
        host: gethostname::gethostname().to_string_lossy().into_owned(),
        trigger,
        window: WindowRecord { since: plan.window.since, until: plan.window.until },
        redaction: bundle::manifest::RedactionScheme::of(rc.redactor.key()),
        collectors: records,
        findings,
        status: if complete { BundleStatus::Complete } else { BundleStatus::Partial },
    };
    progress.note(&format!("writing {}", bundle::archive_name(&manifest.bundle_id, env.seal.encrypted())));
    let m = manifest.clone();
    let known = rc.redactor.known();
    let written = tokio::task::spawn_blocking(move || {
        let page = taps.map(|taps| {
            let kept: std::collections::BTreeSet<String> = staged.iter().map(|a| a.record.path.clone()).collect();
            report::render_guarded(&m, taps.finish(&kept, &m), known)
        });
        archive.finish(&m, &staged, page.as_deref().map(str::as_bytes))
    })
    .await
    .map_err(|e| writer::WriteError::Io { path: staging_dir.clone(), source: std::io::Error::other(e) })
    .and_then(|r| r)
    .map_err(|source| SnapshotError::Write { source, staging: staging_dir.clone() })?;
    // A part that could not be made (the key unreadable, the TSA down) is said once, below, with why.
    let (seal, sealer) = match sealer {
        None => (SealRecord::default(), None),
        Some(prepared) => match prepared.await {
            Err(e) => (SealRecord::missing_as_asked(&env.seal, &format!("the key could not be loaded: {e}")), None),
            Ok(sealer) => (
                sealer
                    .clone()
                    .seal(private, out.clone(), &manifest.bundle_id, &written.sha256, stop.is_stopped())
                    .await,
                Some(sealer),
            ),
        },
    };
    for (_, why) in seal.missing() {
        progress.note(&format!("warning: {why}"));
    }
    let upload = match upload {
        None => None,
        Some(u) => {
            let bundle = store::upload::Bundle {
                out: &out,
                id: &manifest.bundle_id,
                encrypted: env.seal.encrypted(),
                archive: &written.archive,
                sha256: &written.sha256,
                bytes: written.bytes,
            };
            // The upload's custody entry goes where the seal began a record.
            let custody = sealer
                .as_deref()
                .filter(|_| matches!(seal.custody, crate::seal::Part::Written { .. }))
                .map(|s| s as &dyn store::upload::Custody);
            let record = u.finish(&bundle, custody, stop.is_stopped()).await;
            let line = crate::bundle::bounds::printable(&record.summary());
            progress.note(&if record.confirmed() { format!("upload: {line}") } else { format!("warning: {line}") });
            Some(record)
        }
    };
    if let Err(e) = out.remove_private(&staging_name) {
        progress.note(&format!("could not remove staging directory {}: {e}", staging_dir.display()));
    }
    Ok(Outcome { bundle: written, manifest, seal, upload })
}
