//! `preserve check`: a pre-flight of a site before an incident needs it. Resolves the config and `CARACAL_HOME`,
//! looks at the output and Docker directories, and asks each collector of the plan whether it can run here
//! ([`crate::sources::Source::preflight`]: its inputs are there, what it talks to answers and lets it read, its
//! credentials resolve), all at once and read-only. Never prints a credential's value: references are shown as
//! written (`file:PATH`, `env:NAME`). `serve` runs the same check at start and shows it on `/readyz`;
//! `snapshot --dry-run` prints the site part, which needs no network.

use std::{path::Path, time::Duration};

use serde::Serialize;

use crate::{config::Environment, runner::PlannedCollector, sources::Readiness};

/// The longest one collector's check may take; one that takes longer cannot be relied on in an incident either.
const COLLECTOR_DEADLINE: Duration = Duration::from_secs(15);

/// What the check found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Facts about the site, each with whether it is as a snapshot needs it.
    pub site: Vec<SiteItem>,
    /// Each collector of the plan, in the plan's order.
    pub collectors: Vec<CollectorCheck>,
}

/// One fact about the site.
#[derive(Debug, Clone, Serialize)]
pub struct SiteItem {
    pub name: &'static str,
    /// `false`: a snapshot will miss something because of it (said in `detail`, with what to do).
    pub ok: bool,
    pub detail: String,
}

/// One collector's readiness.
#[derive(Debug, Clone, Serialize)]
pub struct CollectorCheck {
    pub name: String,
    pub kind: String,
    #[serde(flatten)]
    pub readiness: Readiness,
}

impl Report {
    /// Whether every collector can run (`skip`s included: they record the absence they find).
    pub fn all_can_run(&self) -> bool {
        self.collectors.iter().all(|c| c.readiness.can_run())
    }

    /// The collectors that cannot run.
    pub fn cannot(&self) -> impl Iterator<Item = &CollectorCheck> {
        self.collectors.iter().filter(|c| !c.readiness.can_run())
    }

    /// The report as lines for a terminal or `/readyz`: one per site fact and per collector, then one line of
    /// totals. A reason can hold what a server said (a Redis error, a Postgres notice), so every line is made
    /// printable and cut to [`crate::progress::LINE`] characters; `--json` has the reasons whole.
    pub fn lines(&self) -> Vec<String> {
        self.full_lines().iter().map(|l| crate::progress::fit(l, crate::progress::LINE)).collect()
    }

    fn full_lines(&self) -> Vec<String> {
        let mut lines = Vec::new();
        let width = self.site.iter().map(|s| s.name.len()).max().unwrap_or(0);
        for s in &self.site {
            lines.push(format!("{}  {:<width$}  {}", if s.ok { "ok  " } else { "WARN" }, s.name, s.detail));
        }
        let width = self.collectors.iter().map(|c| c.name.len()).max().unwrap_or(0);
        for c in &self.collectors {
            let (mark, text) = match &c.readiness {
                Readiness::Ready(notes) if notes.is_empty() => ("ok  ", String::new()),
                Readiness::Ready(notes) => ("ok  ", format!("(note: {})", notes.join("; "))),
                Readiness::Skip(why) => ("skip", why.clone()),
                Readiness::Cannot(why) => ("NO  ", why.clone()),
            };
            lines.push(format!("{mark}  {:<width$}  {text}", c.name).trim_end().to_string());
        }
        let (cannot, skip) = (
            self.cannot().count(),
            self.collectors.iter().filter(|c| matches!(c.readiness, Readiness::Skip(_))).count(),
        );
        lines.push(match cannot {
            0 => format!("all {} collectors can run ({skip} will find nothing to read here)", self.collectors.len()),
            n => format!(
                "{n} of {} collectors cannot run: {}",
                self.collectors.len(),
                self.cannot().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
            ),
        });
        lines
    }
}

/// The site facts, from the filesystem only: which config, `CARACAL_HOME`, the output and Docker directories; on
/// Kubernetes, the release and how the API is reached instead of the home and Docker directories.
/// `[seal]`: whether the key can sign (the file is read, or the agent asked whether it holds the key) and which
/// TSA stamps. The TSA is not asked here: a request to it is a real request to a third party.
fn seal(env: &Environment) -> Option<SiteItem> {
    if !env.seal.any() {
        return None;
    }
    let (mut ok, mut parts) = (true, Vec::new());
    match &env.seal.signer {
        Some(source) => match crate::seal::signer::Signer::load(source) {
            Ok(signer) => parts.push(format!("signs with {}", signer.fingerprint())),
            Err(e) => {
                ok = false;
                parts.push(format!("bundles will NOT be signed: {e}"));
            }
        },
        None => parts.push("not signed (no signing_key or agent_key)".to_string()),
    }
    if let Some(t) = &env.seal.tsa {
        parts.push(format!("timestamped by {} (not asked here)", t.url));
    }
    Some(SiteItem { name: "seal", ok, detail: parts.join("; ") })
}

pub fn site(env: &Environment) -> Vec<SiteItem> {
    let mut items = Vec::new();
    items.push(SiteItem {
        name: "config",
        ok: true,
        detail: match &env.config_file {
            Some(f) => format!("site config {}", f.display()),
            None => "built-in defaults for a Caracal Compose host (no --config, $PRESERVE_CONFIG unset)".into(),
        },
    });
    items.extend(seal(env));
    if let Some(k) = &env.kubernetes {
        // A Helm install: Caracal is read through the Kubernetes API; no home, no Docker directory on this host.
        let via = match &k.kubeconfig {
            Some(p) => format!("kubeconfig {}", p.display()),
            None => "KUBECONFIG, ~/.kube/config or the pod's service account".into(),
        };
        let namespace = k.namespace.as_deref().unwrap_or("the context's");
        items.push(SiteItem {
            name: "kubernetes",
            ok: true,
            detail: format!("release `{}` in namespace {namespace}, through {via}", k.release),
        });
        if env.caracal_home_set_by.is_none() {
            items.push(out_dir(&env.out_dir));
            return items;
        }
    }
    let home = &env.caracal_home;
    items.push(if home.is_dir() {
        SiteItem { name: "caracal_home", ok: true, detail: home.display().to_string() }
    } else {
        SiteItem {
            name: "caracal_home",
            ok: false,
            detail: format!(
                "{} not found: set CARACAL_HOME (or caracal_home in the site config, or pass --config); its \
                 compose.yml, caracal.env and secrets/ are read from there",
                home.display()
            ),
        }
    });
    items.push(out_dir(&env.out_dir));
    let docker = &env.docker_dir;
    items.push(if docker.is_dir() {
        SiteItem { name: "docker_dir", ok: true, detail: docker.display().to_string() }
    } else {
        SiteItem {
            name: "docker_dir",
            ok: false,
            detail: format!("{} not found: no Docker container logs here (not a Docker host?)", docker.display()),
        }
    });
    items
}

/// Whether bundles can be written where they go: the directory, or the nearest existing folder above it, is
/// writable (checked from its mode and owner, creating nothing).
fn out_dir(out: &Path) -> SiteItem {
    use nix::unistd::{AccessFlags, access};
    let mut at = out;
    while !at.exists() {
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => {
                at = Path::new(".");
                break;
            }
        }
    }
    let name = "out_dir";
    match access(at, AccessFlags::W_OK | AccessFlags::X_OK) {
        Ok(()) if at == out => SiteItem { name, ok: true, detail: format!("bundles go to {}", out.display()) },
        Ok(()) => SiteItem { name, ok: true, detail: format!("bundles go to {} (created when needed)", out.display()) },
        Err(e) => SiteItem {
            name,
            ok: false,
            detail: format!("bundles cannot be written to {}: {} is not writable ({e})", out.display(), at.display()),
        },
    }
}

/// Checks the site and every collector of `collectors`, the collectors all at once.
pub async fn run(env: &Environment, collectors: &[PlannedCollector]) -> Report {
    let checks = collectors.iter().map(|c| async move {
        let readiness = match tokio::time::timeout(COLLECTOR_DEADLINE, c.source.preflight(env)).await {
            Ok(r) => r,
            Err(_) => Readiness::Cannot(format!("its check did not finish within {}s", COLLECTOR_DEADLINE.as_secs())),
        };
        CollectorCheck { name: c.name.clone(), kind: c.kind.clone(), readiness }
    });
    let collectors = futures::future::join_all(checks).await;
    Report { site: site(env), collectors }
}
