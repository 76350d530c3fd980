//! `preserve serve`, the sidecar: receives Alertmanager webhooks and takes the snapshot each critical alert asks
//! for by itself, so the evidence exists before anyone is awake. One process, one site config, snapshots run
//! in-process through the same `snapshot::plan` / `execute` as the CLI.

pub mod answered;
mod http;
mod listener;
pub mod log;
pub mod metrics;
pub mod retention;
pub mod rules;
pub mod scheduler;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

use crate::{
    catalog::Catalog,
    config::{ConfigError, CredentialError, Environment, KeySource, Secret},
    redact::{Redactor, fingerprint::FingerprintKey},
    snapshot,
};
pub use rules::Rules;
pub use scheduler::Scheduler;

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(
        "no bearer token: set serve.token = \"env:NAME\" or \"file:PATH\" in the site config, or PRESERVE_SERVE_TOKEN"
    )]
    NoToken,
    #[error("serve.token: {0}")]
    Token(#[from] CredentialError),
    #[error("cannot start the snapshot runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: String, source: std::io::Error },
}

impl ServeError {
    /// `2` for what the operator must fix in the configuration, `1` otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Listen { .. } | Self::Runtime(_) => 1,
            _ => 2,
        }
    }
}

/// A sidecar ready to listen: configuration checked, token resolved.
pub struct Sidecar {
    scheduler: Arc<Scheduler>,
    token: Secret,
    /// Snapshots run here, apart from the runtime that answers HTTP (see [`Scheduler::new`]).
    snapshots: SnapshotRuntime,
}

/// Shuts the snapshot runtime down without waiting when the sidecar ends, however it ends: dropping a runtime
/// inside another one panics, and abandoned blocking reads of a cut-off collector must not hold the process open.
struct SnapshotRuntime(Option<tokio::runtime::Runtime>);

impl Drop for SnapshotRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Sidecar {
    pub fn new(env: Environment, catalog: Catalog) -> Result<Self, ServeError> {
        let token = match &env.serve_token {
            None => return Err(ServeError::NoToken),
            Some(KeySource::Value(s)) => s.clone(),
            Some(KeySource::Reference(r)) => r.resolve()?,
        };
        let rules = Rules::load(&env, &catalog)?;
        let snapshots = tokio::runtime::Builder::new_multi_thread()
            .thread_name("preserve-snapshot")
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        let redactor = labels_redactor(&env, &catalog, &token)?;
        let scheduler = Scheduler::new(Arc::new(env), Arc::new(catalog), rules, snapshots.handle().clone(), redactor);
        Ok(Self { scheduler, token, snapshots: SnapshotRuntime(Some(snapshots)) })
    }

    /// Listens until SIGTERM or SIGINT, then shuts down within the grace period. Returns whether every running
    /// snapshot ended (complete or partial) in time.
    pub async fn run(self) -> Result<bool, ServeError> {
        let s = self.scheduler;
        let env = s.env.clone();
        let listener = tokio::net::TcpListener::bind(&env.listen)
            .await
            .map_err(|source| ServeError::Listen { addr: env.listen.clone(), source })?;
        let addr = listener.local_addr().map_or_else(|_| env.listen.clone(), |a| a.to_string());
        match crate::bundle::outdir::OutDir::open(&env.out_dir) {
            Ok(out) => {
                if let Some(why) = out.exposure() {
                    tracing::warn!("warning: {why}");
                }
            }
            Err(e) => tracing::error!(
                out_dir = %env.out_dir.display(),
                "output directory {}: {e} (not ready until it is writable)",
                env.out_dir.display()
            ),
        }
        for r in s.rules.iter() {
            tracing::info!(rule = %r.origin, profile = %r.profile, "rule {} -> profile {}", r.origin, r.profile);
        }
        s.prune();
        for (path, bytes) in retention::leftovers(&env.out_dir) {
            tracing::warn!(
                path = %path.display(),
                bytes,
                "{} ({bytes} bytes) was left by an interrupted snapshot: it may hold evidence no bundle has; copy or \
                 remove it (retention never deletes it)",
                path.display()
            );
        }
        tracing::info!(
            address = %addr,
            out_dir = %env.out_dir.display(),
            "listening on http://{addr} (POST /alertmanager; bundles into {})",
            env.out_dir.display()
        );

        tokio::spawn(s.clone().dispatch());
        // Bundles whose upload is not confirmed (the store was down) go again, at start and then with a backoff.
        tokio::spawn(s.clone().retry_uploads());
        // The pre-flight runs beside the listener: a server that takes its time to answer delays nothing.
        tokio::spawn({
            let s = s.clone();
            async move { s.preflight().await }
        });
        let closing = CancellationToken::new();
        let app = http::router(s.clone(), &self.token);
        let open = s.metrics.connections_open.clone();
        let server = tokio::spawn({
            let (closing, env) = (closing.clone(), env.clone());
            async move { listener::serve(listener, app, &env.serve, open, closing).await }
        });
        let why = signalled().await;
        let grace = env.serve.grace.unsigned_abs();
        tracing::info!(signal = why, "{why} received: no new snapshots; running ones get {grace:?} to finish");
        closing.cancel();
        let begun = std::time::Instant::now();
        let in_time = s.shutdown(grace, &format!("{why} received")).await;
        // Connections still open (a slow client) do not hold the process past the grace period.
        let _ =
            tokio::time::timeout(grace.saturating_sub(begun.elapsed()).max(Duration::from_millis(100)), server).await;
        if !in_time {
            tracing::error!("the grace period ended with snapshots still being written");
        }
        drop(self.snapshots);
        Ok(in_time)
    }
}

/// The redactor for the alert labels `GET /snapshots` shows: the secrets a snapshot's redaction would know before
/// any collector's own (the site's credentials, Caracal's secret files), and the sidecar's token. When they cannot
/// all be resolved now, the environment's and the token still are, and the text rules always apply.
fn labels_redactor(env: &Environment, catalog: &Catalog, token: &Secret) -> Result<Redactor, ServeError> {
    let request = snapshot::Request { collectors: vec![snapshot::CONTEXT_COLLECTOR.into()], ..Default::default() };
    let planned = snapshot::plan(env, catalog, &request, jiff::Timestamp::now()).map_err(|e| e.to_string());
    // With the site's fingerprint key, a label's marker here is the one its bundle shows.
    let key = match &planned {
        Ok(plan) => plan.fingerprint_key.clone(),
        Err(_) => FingerprintKey::per_bundle().map_err(|e| ServeError::Runtime(std::io::Error::other(e)))?,
    };
    let mut known = match planned.and_then(|plan| snapshot::resolve_secrets(env, &plan).map_err(|e| e.to_string())) {
        Ok(secrets) => secrets.values,
        Err(e) => {
            tracing::warn!("GET /snapshots redacts alert labels without the site's secrets: {e}");
            env.env_secrets.clone()
        }
    };
    known.push(("serve.token".into(), token.clone()));
    Ok(Redactor::new(known, key))
}

async fn signalled() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        },
        _ => {
            let _ = tokio::signal::ctrl_c().await;
            "SIGINT"
        }
    }
}
