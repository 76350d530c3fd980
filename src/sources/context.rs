//! The `context` source kind, included in every snapshot: who took the evidence, where, when, with which tool and
//! configuration. The configuration is recorded redacted: credential references only, and the site config's own
//! text passed through the redactor.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use std::io::Write;

use super::{CollectError, Collection, Outcome, Source};
use crate::config::Environment;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ContextSource {}

#[async_trait]
impl Source for ContextSource {
    fn describe(&self, env: &Environment) -> String {
        format!(
            "this host; config {}",
            env.config_file.as_ref().map_or("(defaults)".into(), |p| p.display().to_string())
        )
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let env = &cx.env;
        let now = jiff::Timestamp::now();
        let uname = nix::sys::utsname::uname().ok();
        let field = |f: fn(&nix::sys::utsname::UtsName) -> &std::ffi::OsStr| {
            uname.as_ref().map(|u| f(u).to_string_lossy().into_owned())
        };
        let context = serde_json::json!({
            "tool": { "name": crate::TOOL_NAME, "version": crate::TOOL_VERSION },
            "host": gethostname::gethostname().to_string_lossy(),
            "os": { "sysname": field(|u| u.sysname()), "release": field(|u| u.release()), "version": field(|u| u.version()), "machine": field(|u| u.machine()) },
            "os_release": std::fs::read_to_string("/etc/os-release").ok(),
            "time": now,
            "pid": std::process::id(),
            "uid": nix::unistd::Uid::current().as_raw(),
            "cwd": std::env::current_dir().ok(),
            "window": cx.window,
            "labels": cx.labels,
            "clock_offset": { "postgres": null, "note": "measured by the postgres collector when one runs" },
            "environment": environment_summary(env),
            "plan": *cx.plan_summary,
        });
        let text = serde_json::to_string_pretty(&context)?;
        cx.write_small("context.json", "application/json", text.as_bytes())?;
        // The alert(s) that triggered the snapshot, as received (redacted), an artifact of their own.
        let alerts = &cx.plan_summary["trigger"]["alerts"];
        if alerts.as_array().is_some_and(|a| !a.is_empty()) {
            let text = serde_json::to_string_pretty(alerts)?;
            cx.write_small("alerts.json", "application/json", text.as_bytes())?;
        }

        if let (Some(path), Some(text)) = (&env.config_file, &env.config_text) {
            let mut a = cx.text_artifact("preserve.toml", "application/toml")?;
            a.set_source(cx.redact_str(&path.display().to_string()));
            a.write_all(text.as_bytes()).map_err(CollectError::io("writing preserve.toml"))?;
            a.finish().map_err(CollectError::io("writing preserve.toml"))?;
        }
        Ok(Outcome::default())
    }
}

/// The resolved site configuration, as references and credential-free URLs only.
fn environment_summary(env: &Environment) -> serde_json::Value {
    let key = |k: &Option<crate::config::KeySource>| match k {
        None => serde_json::Value::Null,
        Some(crate::config::KeySource::Value(_)) => "(value from the environment)".into(),
        Some(crate::config::KeySource::Reference(r)) => r.to_string().into(),
    };
    serde_json::json!({
        "config_file": env.config_file,
        "out_dir": env.out_dir,
        "caracal_home": env.caracal_home,
        "docker_dir": env.docker_dir,
        "collectors_dirs": env.collectors_dirs,
        "vars": env.vars,
        "run_timeout": env.run_timeout.to_string(),
        "collector_timeout": env.collector_timeout.to_string(),
        "redis": { "url": env.redis.display, "username": env.redis.username, "password": env.redis.password.as_ref().map(ToString::to_string) },
        "postgres": { "url": env.postgres.display, "username": env.postgres.username, "password": env.postgres.password.as_ref().map(ToString::to_string) },
        "services": env.services,
        "platform": env.platform(),
        "kubernetes": env.kubernetes,
        "audit_hmac_key": key(&env.audit_hmac_key),
        "serve": { "listen": env.listen, "token": key(&env.serve_token) },
        "redaction": { "fingerprint_key": key(&env.fingerprint_key) },
        "credentials": env.redact_refs.iter().map(|(k, r)| (k.clone(), r.to_string())).collect::<std::collections::BTreeMap<_, _>>(),
    })
}
