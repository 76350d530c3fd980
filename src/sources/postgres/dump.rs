//! The optional full logical backup: `pg_dump --format=custom` run in the collector's exported snapshot, so the
//! dump shows the same instant as the CSV tables. Written uncompressed inside the archive (the bundle's zstd
//! compresses it) so that secrets can be masked in place at the same length, which keeps the archive restorable.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
};

use serde::{Deserialize, Serialize};
use tokio::io::AsyncReadExt;
use tokio_postgres::{Config, config::Host};

use super::tls::Tls;
use crate::sources::Collection;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DumpSpec {
    /// The `pg_dump` to run. Default: the one on `PATH` or under `/usr/lib/postgresql/*/bin` whose major version
    /// can dump this server (the same major preferred, else the newest).
    pub binary: Option<PathBuf>,
    /// Tables whose rows stay out of the dump (`--exclude-table-data`; their definitions stay), e.g. tables with
    /// secret hashes: a dump cannot leave out single columns.
    #[serde(default)]
    pub exclude_table_data: Vec<String>,
}

/// Where a `pg_dump` run needs to connect, as libpq environment variables (never on the command line, where
/// `ps` would show a password).
pub struct Target<'a> {
    pub config: &'a Config,
    pub tls: &'a Tls,
    pub settings: &'a std::collections::BTreeMap<String, String>,
    pub snapshot: &'a str,
    pub server_major: u32,
    pub database: &'a str,
}

/// The major version `pg_dump --version` reports ("pg_dump (PostgreSQL) 15.20 (Debian ...)" gives 15).
async fn major_of(binary: &Path) -> Option<(u32, String)> {
    let out = tokio::process::Command::new(binary).arg("--version").env_clear().output().await.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split(')').nth(1)?.split_whitespace().next()?.to_string();
    let major = version.split(['.', 'b', 'r']).next()?.parse().ok()?;
    Some((major, version))
}

/// Why no `pg_dump` can be used: the dump is skipped.
#[derive(Debug, thiserror::Error)]
enum NoDump {
    #[error("{} is not a pg_dump that runs here", .0.display())]
    NotAPgDump(PathBuf),
    #[error("no pg_dump found on PATH or under /usr/lib/postgresql")]
    NotFound,
    /// Every one found is older than the server; `found` names each (`16.2 at /usr/bin/pg_dump`).
    #[error("no pg_dump of major version {server_major} or newer (the server's); found {}", .found.join(", "))]
    TooOld { server_major: u32, found: Vec<String> },
}

/// Why a dump that started failed.
#[derive(Debug, thiserror::Error)]
enum DumpError {
    #[error("cannot run {}: {source}", binary.display())]
    Spawn { binary: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Artifact(#[from] crate::bundle::artifact::ArtifactError),
    #[error("reading pg_dump's output: {0}")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Write(std::io::Error),
    #[error("waiting for pg_dump: {0}")]
    Wait(#[source] std::io::Error),
    #[error("stopped")]
    Cancelled,
    #[error("pg_dump {status}: {}", .stderr.trim())]
    Exited { status: std::process::ExitStatus, stderr: String },
}

/// The binary to use, or why there is none.
async fn choose(spec: &DumpSpec, server_major: u32) -> Result<(PathBuf, String), NoDump> {
    let candidates: Vec<PathBuf> = match &spec.binary {
        Some(b) => vec![b.clone()],
        None => {
            let mut c: Vec<PathBuf> = std::env::var_os("PATH")
                .map(|p| std::env::split_paths(&p).map(|d| d.join("pg_dump")).collect())
                .unwrap_or_default();
            c.extend(glob::glob("/usr/lib/postgresql/*/bin/pg_dump").into_iter().flatten().flatten());
            c.extend(glob::glob("/usr/pgsql-*/bin/pg_dump").into_iter().flatten().flatten());
            c
        }
    };
    let mut found = Vec::new();
    for c in candidates.iter().filter(|c| c.is_file()) {
        if let Some((major, version)) = major_of(c).await {
            found.push((major, version, c.clone()));
        }
    }
    let usable = found.iter().filter(|(m, _, _)| *m >= server_major);
    let best = usable.clone().find(|(m, _, _)| *m == server_major).or_else(|| usable.max_by_key(|(m, _, _)| *m));
    match best {
        Some((_, version, path)) => Ok((path.clone(), version.clone())),
        None if found.is_empty() => Err(match &spec.binary {
            Some(b) => NoDump::NotAPgDump(b.clone()),
            None => NoDump::NotFound,
        }),
        None => Err(NoDump::TooOld {
            server_major,
            found: found.iter().map(|(_, v, p)| format!("{v} at {}", p.display())).collect(),
        }),
    }
}

/// `-c name=value` for `PGOPTIONS`, with spaces and backslashes escaped as libpq expects.
fn pgoptions(settings: &std::collections::BTreeMap<String, String>) -> String {
    let esc = |s: &str| s.replace('\\', "\\\\").replace(' ', "\\ ");
    settings.iter().map(|(k, v)| format!("-c {}={}", esc(k), esc(v))).collect::<Vec<_>>().join(" ")
}

/// What `details.exports` records of the dump, beside the tables' reports.
#[derive(Debug, Default, Serialize)]
pub struct DumpReport {
    /// Always `pg_dump`, as a table's report has its table's name.
    pub name: &'static str,
    /// Always `custom`.
    pub format: &'static str,
    /// Why no usable `pg_dump` exists: the dump was not run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub binary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exclude_table_data: Option<Vec<String>>,
    /// Bytes of the archive written.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secrets_masked: Option<u64>,
    /// Why the dump that ran failed (redacted).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Runs the dump into `pg_dump/<database>.dump`. Returns the report for `details.exports`: a `skipped` reason
/// when no usable `pg_dump` exists, an `error` when it ran and failed.
pub async fn run(cx: &Collection, spec: &DumpSpec, target: Target<'_>) -> DumpReport {
    let mut report = DumpReport { name: "pg_dump", format: "custom", ..DumpReport::default() };
    let (binary, version) = match choose(spec, target.server_major).await {
        Ok(b) => b,
        Err(why) => {
            report.skipped = Some(why.to_string());
            return report;
        }
    };
    report.binary = Some(binary.display().to_string());
    report.version = Some(version);
    report.exclude_table_data = Some(spec.exclude_table_data.clone());
    if let Err(e) = dump(cx, spec, &target, &binary, &mut report).await {
        report.error = Some(cx.redact_str(&e.to_string()));
    }
    report
}

async fn dump(
    cx: &Collection,
    spec: &DumpSpec,
    t: &Target<'_>,
    binary: &Path,
    report: &mut DumpReport,
) -> Result<(), DumpError> {
    use std::io::Write;
    let mut cmd = tokio::process::Command::new(binary);
    cmd.args(["--format=custom", "--compress=0", "--no-password"])
        .arg(format!("--snapshot={}", t.snapshot))
        .env_clear()
        .env("LC_ALL", "C")
        .env("PGAPPNAME", "preserve pg_dump")
        .env("PGCONNECT_TIMEOUT", "10")
        .env("PGDATABASE", t.database)
        .env("PGSSLMODE", t.tls.mode.as_str())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for table in &spec.exclude_table_data {
        cmd.arg(format!("--exclude-table-data={table}"));
    }
    if !t.settings.is_empty() {
        // The collector's settings (Caracal's `caracal.zone_id`) open row-level security to this session; without
        // this flag pg_dump would refuse any table RLS applies to.
        cmd.arg("--enable-row-security").env("PGOPTIONS", pgoptions(t.settings));
    }
    if let Some(root) = &t.tls.root_cert {
        cmd.env("PGSSLROOTCERT", root);
    }
    match t.config.get_hosts().first() {
        Some(Host::Tcp(h)) => cmd.env("PGHOST", h),
        Some(Host::Unix(p)) => cmd.env("PGHOST", p),
        None => &mut cmd,
    };
    if let Some(port) = t.config.get_ports().first() {
        cmd.env("PGPORT", port.to_string());
    }
    if let Some(user) = t.config.get_user() {
        cmd.env("PGUSER", user);
    }
    if let Some(pw) = t.config.get_password() {
        cmd.env("PGPASSWORD", String::from_utf8_lossy(pw).into_owned());
    }
    let mut child = cmd.spawn().map_err(|source| DumpError::Spawn { binary: binary.to_path_buf(), source })?;
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let errors = tokio::spawn(async move {
        let mut text = Vec::new();
        let _ = (&mut stderr).take(64 << 10).read_to_end(&mut text).await;
        let _ = tokio::io::copy(&mut stderr, &mut tokio::io::sink()).await;
        String::from_utf8_lossy(&text).into_owned()
    });

    let path = format!("pg_dump/{}.dump", super::sql::file_name(t.database));
    let binary = crate::sources::Redaction::Binary {
        reason: "a pg_dump custom-format archive counts its bytes: secrets are masked with `*` of the same length",
    };
    let mut artifact = cx.artifact(&path, "application/vnd.postgresql.custom-dump", binary)?;
    let mut buf = vec![0u8; 1 << 18];
    loop {
        let n = tokio::select! {
            n = stdout.read(&mut buf) => n.map_err(DumpError::Read)?,
            _ = cx.cancelled() => return Err(DumpError::Cancelled),
        };
        if n == 0 {
            break;
        }
        artifact.write_all(&buf[..n]).map_err(DumpError::Write)?;
    }
    artifact.flush_lines().map_err(DumpError::Write)?;
    let masked = artifact.masked();
    let status = child.wait().await.map_err(DumpError::Wait)?;
    let stderr = errors.await.unwrap_or_default();
    report.bytes = Some(artifact.bytes());
    report.secrets_masked = Some(masked);
    if !status.success() {
        let why = DumpError::Exited { status, stderr };
        artifact.abandon(&cx.redact_str(&why.to_string()));
        return Err(why);
    }
    artifact.finish().map_err(DumpError::Write)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_become_escaped_pgoptions() {
        let mut s = std::collections::BTreeMap::new();
        s.insert("caracal.zone_id".to_string(), "*".to_string());
        s.insert("app.note".to_string(), "a b\\c".to_string());
        assert_eq!(pgoptions(&s), "-c app.note=a\\ b\\\\c -c caracal.zone_id=*");
    }
}
