//! The `postgres` source kind: many tables and queries exported from **one point in time**. A leader connection
//! opens a `REPEATABLE READ READ ONLY` transaction and exports its snapshot; worker connections import it and
//! stream `COPY (SELECT ...) TO STDOUT` as CSV straight into artifacts, in parallel. Filters take named
//! parameters whose values are bound through `set_config`, never spliced into SQL.

mod chain;
mod copy_row;
mod dump;
mod policy;
mod policy_manifest;
mod sql;
mod tls;

use crate::sources::DefinitionError;
use std::{
    collections::{BTreeMap, VecDeque},
    sync::{Arc, Mutex},
};

use async_trait::async_trait;
use futures::StreamExt;
use jiff::SignedDuration;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio_postgres::{Client, Config};

use super::{CollectError, Collection, Outcome, Redaction, Source};
use crate::bundle::manifest::Severity;
use crate::config::{CredentialRef, Environment};

/// Why a postgres collector stopped (a table that fails is recorded in its report, not this).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no Postgres URL configured (postgres.url or PRESERVE_POSTGRES_URL)")]
    NoUrl,
    /// No URL configured, and Caracal's rendered `databaseUrl` file cannot be read.
    #[error("no Postgres URL configured, and Caracal's {0}")]
    NoUrlNorDatabaseUrl(#[source] crate::config::CredentialError),
    #[error("postgres.password: {0}")]
    Password(#[source] crate::config::CredentialError),
    #[error("Postgres URL {display}: {source}")]
    Url { display: String, source: UrlError },
    #[error(transparent)]
    Tls(tls::ConnectorError),
    #[error("cannot connect to {display}: {}", sql::describe_error(.source))]
    Connect { display: String, source: tokio_postgres::Error },
    /// A statement failed; `what` says which.
    #[error("{what}: {}", sql::describe_error(.source))]
    Query { what: String, source: tokio_postgres::Error },
    #[error("audit_events has no column {0}: the chain cannot be verified")]
    NoChainColumn(&'static str),
    #[error("the audit_events export ended before its header")]
    NoExportHeader,
}

/// What is wrong with the site's Postgres URL.
#[derive(Debug, thiserror::Error)]
pub enum UrlError {
    /// Its TLS settings (`sslmode`, `sslrootcert`).
    #[error(transparent)]
    Tls(tls::SettingError),
    #[error(transparent)]
    Parse(tokio_postgres::Error),
}

/// Settings of a `postgres` collector. The server is the site's (`[postgres]`, `PRESERVE_POSTGRES_URL`).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// Tables to export (`schema.table`, default schema `public`).
    #[serde(default)]
    pub tables: Vec<TableSpec>,
    /// Named read-only queries, exported the same way.
    #[serde(default)]
    pub queries: Vec<QuerySpec>,
    /// Settings applied to every connection first, e.g. `{ "caracal.zone_id" = "*" }` for Caracal's RLS.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// Worker connections exporting in parallel (default 2).
    #[serde(default = "two")]
    pub workers: usize,
    /// `statement_timeout` of every statement (default 10m).
    pub statement_timeout: Option<SignedDuration>,
    /// `lock_timeout`, so the export never queues behind DDL forever (default 10s).
    pub lock_timeout: Option<SignedDuration>,
    /// Re-verify Caracal's audit hash chain over the same snapshot: every zone of `public.audit_events` end to end
    /// (content hash, links, `chain_seq` continuity, and `chain_hmac` when `AUDIT_HMAC_KEY` / `audit.hmac_key` is
    /// given). Results go to `findings` and `analysis/`.
    #[serde(default)]
    pub verify_audit_chain: bool,
    /// Collect Caracal's policy sets as evidence over the same snapshot: for every binding in
    /// `public.policy_set_bindings`, the active `policy_set_versions` row and the one before it, their manifests
    /// with `manifest_sha256` checked, every referenced `policy_versions` content with `content_sha256` recomputed,
    /// and a unified diff between the two, under `policy-sets/`. A mismatch or a missing reference is a finding.
    #[serde(default)]
    pub policy_sets: bool,
    /// Also run `pg_dump --format=custom` in the same snapshot, as `pg_dump/<database>.dump`. Off by default: a
    /// dump holds every column the role can read, secret hashes included (masked only where they equal a known
    /// secret or match a pattern), so `exclude_table_data` should name the tables that hold them.
    pub pg_dump: Option<dump::DumpSpec>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TableSpec {
    /// `schema.table` or `table` (schema `public`); `*` and `?` match several (`public.audit_*`, `operator_*`),
    /// tables, partitioned tables, views and materialized views, partitions themselves excluded.
    pub table: String,
    /// A partitioned table is exported through its parent, every partition in one CSV (`parent`, the default), or
    /// as one CSV per leaf partition (`each`), exported in parallel by the workers. The partition list is recorded
    /// either way. Reading a partition directly needs SELECT on it, and the parent's row-level security does not
    /// apply to it.
    #[serde(default)]
    pub partitions: Partitions,
    /// A filter with named parameters: `occurred_at >= :since AND zone_id = :zone_id`. `:since` and `:until` come
    /// from the window, others from the alert's labels; a table whose filter names a missing value is skipped.
    #[serde(rename = "where")]
    pub filter: Option<String>,
    /// Columns never exported (secrets, ciphertext); recorded as redactions.
    #[serde(default)]
    pub exclude_columns: Vec<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Partitions {
    #[default]
    Parent,
    Each,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct QuerySpec {
    pub name: String,
    pub sql: String,
}

fn two() -> usize {
    2
}

/// One unit of work for a worker: a table or a query, and where its CSV goes.
#[derive(Debug, Clone)]
enum Job {
    Table(TableSpec),
    Query(QuerySpec),
}

#[async_trait]
impl Source for PostgresSource {
    fn check(&self, _env: &Environment) -> Result<(), DefinitionError> {
        if self.tables.is_empty() && self.queries.is_empty() && !self.verify_audit_chain && !self.policy_sets {
            return Err(DefinitionError::Shape(
                "a postgres collector needs `tables`, `queries`, `verify_audit_chain` or `policy_sets`",
            ));
        }
        if self.workers == 0 {
            return Err(DefinitionError::Zero("workers"));
        }
        for t in &self.tables {
            if let Some(f) = &t.filter {
                sql::bind_names(f).map_err(DefinitionError::invalid(format!("tables `{}`: where", t.table)))?;
            }
        }
        Ok(())
    }

    fn credentials(&self, env: &Environment) -> Vec<(String, CredentialRef)> {
        let mut c: Vec<_> =
            env.postgres.password.clone().map(|r| ("postgres.password".to_string(), r)).into_iter().collect();
        if self.verify_audit_chain
            && let Some(crate::config::KeySource::Reference(r)) = &env.audit_hmac_key
        {
            c.push(("audit.hmac_key".to_string(), r.clone()));
        }
        c
    }

    fn describe(&self, env: &Environment) -> String {
        let names: Vec<&str> =
            self.tables.iter().map(|t| t.table.as_str()).chain(self.queries.iter().map(|q| q.name.as_str())).collect();
        let names: Vec<&str> = names.into_iter().chain(self.policy_sets.then_some("policy-sets")).collect();
        format!("{} {}", env.postgres.display, names.join(","))
    }

    /// Connects as the collector would and asks, read-only, whether the role may read each table named exactly
    /// (patterns are resolved only when collecting).
    async fn preflight(&self, env: &Environment) -> crate::sources::Readiness {
        use crate::sources::Readiness;
        let display = &env.postgres.display;
        let (config, tls) = match sql::connect_config(env) {
            Ok(c) => c,
            Err(e) => return Readiness::Cannot(e.to_string()),
        };
        let connector = match tls.connector() {
            Ok(c) => c,
            Err(e) => return Readiness::Cannot(e.to_string()),
        };
        let connect = async {
            let (client, conn) = config.connect(connector).await?;
            tokio::spawn(conn);
            Ok::<_, tokio_postgres::Error>(client)
        };
        let client = match tokio::time::timeout(std::time::Duration::from_secs(5), connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => {
                return Readiness::Cannot(format!("cannot connect to {display}: {}", sql::describe_error(&e)));
            }
            Err(_) => {
                return Readiness::Cannot(format!("{display} did not answer within 5 s (is PostgreSQL running?)"));
            }
        };
        let exact: Vec<&str> =
            self.tables.iter().map(|t| t.table.as_str()).filter(|t| !t.contains(['*', '?'])).collect();
        let mut notes = Vec::new();
        let mut refused = Vec::new();
        for table in exact {
            let qualified = if table.contains('.') { table.to_string() } else { format!("public.{table}") };
            let row = client
                .query_one(
                    "SELECT to_regclass($1) IS NOT NULL, \
                     to_regclass($1) IS NOT NULL AND has_table_privilege(to_regclass($1), 'SELECT'), current_user::text",
                    &[&qualified],
                )
                .await;
            match row {
                Ok(r) if !r.get::<_, bool>(0) => notes.push(format!("table {qualified} does not exist")),
                Ok(r) if !r.get::<_, bool>(1) => {
                    refused.push(format!("role {} has no SELECT on {qualified}", r.get::<_, String>(2)))
                }
                Ok(_) => {}
                Err(e) => return Readiness::Cannot(format!("{display}: {}", sql::describe_error(&e))),
            }
        }
        if !refused.is_empty() {
            return Readiness::Cannot(refused.join("; "));
        }
        Readiness::Ready(notes)
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let (config, tls) = sql::connect_config(&cx.env)?;
        let connector = tls.connector().map_err(Error::Tls)?;
        let session =
            |snapshot: Option<String>| self.session(&config, connector.clone(), &cx.env.postgres.display, snapshot);
        let mut out = Outcome::default();

        // The leader fixes the point in time and keeps its transaction open until every worker is done.
        let leader = session(None).await?;
        let asked = jiff::Timestamp::now();
        let row = leader
            .query_one(
                "SELECT pg_export_snapshot(), txid_current_snapshot()::text, \
                 CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END::text, \
                 now()::text, version(), current_database()::text, current_user::text, pg_is_in_recovery(), \
                 (extract(epoch FROM clock_timestamp()) * 1000)::float8, \
                 coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false), \
                 current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(failed("exporting the snapshot"))?;
        let answered = jiff::Timestamp::now();
        // The server's clock against ours, taken at the middle of the round trip (± half of it).
        let ours = (asked.as_millisecond() + answered.as_millisecond()) as f64 / 2.0;
        let offset = (row.get::<_, f64>(8) - ours).round() as i64;
        let uncertainty = (answered.as_millisecond() - asked.as_millisecond()).div_euclid(2) + 1;
        let snapshot: String = row.get(0);
        let point = json!({
            "snapshot": snapshot, "txid_snapshot": row.get::<_, String>(1), "wal_lsn": row.get::<_, Option<String>>(2),
            "server_now": row.get::<_, String>(3), "version": row.get::<_, String>(4), "database": row.get::<_, String>(5),
            "user": row.get::<_, String>(6), "standby": row.get::<_, bool>(7),
            "clock_offset_ms": offset, "clock_offset_uncertainty_ms": uncertainty, "ssl": row.get::<_, bool>(9),
            "sslmode": tls.mode.as_str(),
        });
        out.detail("point_in_time", &point);

        let params = self.params(&cx);
        // The audit chain is verified from the audit_events export itself when that table is exported whole.
        let tapped = self.verify_audit_chain && self.tables.iter().any(is_whole_audit_ledger);
        let hmac_key = if self.verify_audit_chain { chain::hmac_key(&cx, &mut out) } else { None };
        let chain_tap = Arc::new(ChainTap { key: hmac_key.clone(), found: Mutex::default() });
        let (tables, missing) = expand_tables(&leader, &self.tables).await.map_err(failed("listing tables"))?;
        for m in missing {
            out.warn(m);
        }
        let jobs: VecDeque<(usize, Job)> = tables
            .into_iter()
            .map(Job::Table)
            .chain(self.queries.iter().cloned().map(Job::Query))
            .enumerate()
            .collect();
        let queue = Arc::new(Mutex::new(jobs));
        let results = Arc::new(Mutex::new(Vec::new()));
        let workers = (0..self.workers.min(queue.lock().map(|q| q.len()).unwrap_or(1)).max(1)).map(|_| {
            let (queue, results, snapshot, params, cx, chain_tap) =
                (queue.clone(), results.clone(), snapshot.clone(), params.clone(), cx.clone(), chain_tap.clone());
            let session = &session;
            async move {
                let client = session(Some(snapshot)).await?;
                loop {
                    let job = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((index, job)) = job else { break };
                    if cx.is_cancelled() {
                        return Err(CollectError::Cancelled);
                    }
                    let tap = match &job {
                        Job::Table(t) if tapped && is_whole_audit_ledger(t) => Some(&*chain_tap),
                        _ => None,
                    };
                    let report = export_job(&cx, &client, &job, &params, tap).await;
                    if let Ok(mut r) = results.lock() {
                        r.push((index, report));
                    }
                }
                let _ = client.batch_execute("COMMIT").await;
                Ok::<(), CollectError>(())
            }
        });
        // The chain is verified on a connection of its own, in the same snapshot, while the tables are exported.
        // The optional pg_dump, in the same snapshot, beside the workers.
        let database: String = row.get(5);
        let dumped = async {
            let spec = self.pg_dump.as_ref()?;
            let target = dump::Target {
                config: &config,
                tls: &tls,
                settings: &self.settings,
                snapshot: &snapshot,
                server_major: (row.get::<_, i32>(10) / 10000) as u32,
                database: &database,
            };
            Some(dump::run(&cx, spec, target).await)
        };
        let verification = async {
            let mut found = Outcome::default();
            if self.verify_audit_chain {
                let checked = async {
                    let client = session(Some(snapshot.clone())).await?;
                    chain::verify(&cx, &client, hmac_key.as_deref(), tapped, &mut found).await?;
                    let _ = client.batch_execute("COMMIT").await;
                    Ok::<(), CollectError>(())
                };
                if let Err(e) = checked.await {
                    found.warn(e.to_string());
                }
            }
            found
        };
        // Policy sets, on a connection of their own, in the same snapshot.
        let policy_sets = async {
            let mut found = Outcome::default();
            if self.policy_sets {
                let read = async {
                    let client = session(Some(snapshot.clone())).await?;
                    policy::collect(&cx, &client, &mut found).await?;
                    let _ = client.batch_execute("COMMIT").await;
                    Ok::<(), CollectError>(())
                };
                if let Err(e) = read.await {
                    found.warn(e.to_string());
                }
            }
            found
        };
        let (ended, found, dumped, policies) =
            tokio::join!(futures::future::join_all(workers), verification, dumped, policy_sets);
        let tapped_found = std::mem::take(&mut *chain_tap.found.lock().unwrap_or_else(|p| p.into_inner()));
        out.absorb(tapped_found);
        out.absorb(found);
        out.absorb(policies);
        let _ = leader.batch_execute("COMMIT").await;
        if let Some(e) = ended.into_iter().find_map(Result::err) {
            return Err(e);
        }
        // In the collector's order, whichever worker did each.
        let mut reports = results.lock().map(|r| r.clone()).unwrap_or_default();
        reports.sort_by_key(|(i, _)| *i);
        let reports: Vec<JobReport> = reports.into_iter().map(|(_, r)| r).collect();
        for r in &reports {
            if let Some(e) = &r.error {
                out.warn(format!("{}: {e}", r.name));
            }
        }
        if let Some(e) = dumped.as_ref().and_then(|d| d.error.as_ref()) {
            out.warn(format!("pg_dump: {e}"));
        }
        if let Some(why) = dumped.as_ref().and_then(|d| d.skipped.as_ref()) {
            out.findings.push(cx.finding(
                "postgres.pg_dump_skipped",
                Severity::Warning,
                format!("pg_dump was asked for and skipped: {why}; the CSV tables are complete"),
            ));
        }
        for r in reports.iter().filter(|r| r.rls_zero_rows) {
            out.findings.push(cx.finding(
                "postgres.rls_zero_rows",
                Severity::Warning,
                format!(
                    "{}: row-level security applies to this role and 0 rows were read; the table may not be empty \
                     (for Caracal set `settings = {{ \"caracal.zone_id\" = \"*\" }}`)",
                    r.name
                ),
            ));
        }
        let exports: Vec<Export> = reports.iter().map(Export::Job).chain(dumped.as_ref().map(Export::Dump)).collect();
        out.detail("exports", exports);
        Ok(out)
    }
}

impl PostgresSource {
    /// A connection with timeouts and settings applied, inside a `REPEATABLE READ READ ONLY` transaction; with
    /// `snapshot`, one that sees exactly the leader's instant.
    async fn session(
        &self,
        config: &Config,
        tls: tokio_postgres_rustls::MakeRustlsConnect,
        display: &str,
        snapshot: Option<String>,
    ) -> Result<Client, CollectError> {
        let (client, conn) =
            config.connect(tls).await.map_err(|source| Error::Connect { display: display.to_string(), source })?;
        tokio::spawn(conn);
        self.prepare(&client).await?;
        let begin = match &snapshot {
            None => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY".to_string(),
            Some(id) => format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}",
                sql::literal(id)
            ),
        };
        client.batch_execute(&begin).await.map_err(failed(if snapshot.is_some() {
            "importing the snapshot"
        } else {
            "BEGIN on the leader"
        }))?;
        Ok(client)
    }

    /// Timeouts and the collector's settings, on one connection.
    async fn prepare(&self, client: &Client) -> Result<(), CollectError> {
        let st = self.statement_timeout.unwrap_or(SignedDuration::from_mins(10)).as_millis().max(1);
        let lt = self.lock_timeout.unwrap_or(SignedDuration::from_secs(10)).as_millis().max(1);
        client
            .execute(
                "SELECT set_config('statement_timeout', $1, false), set_config('lock_timeout', $2, false), \
                 set_config('TimeZone', 'UTC', false), set_config('DateStyle', 'ISO, YMD', false)",
                &[&st.to_string(), &lt.to_string()],
            )
            .await
            .map_err(failed("setting timeouts"))?;
        for (k, v) in &self.settings {
            client.execute("SELECT set_config($1, $2, false)", &[k, v]).await.map_err(failed("applying settings"))?;
        }
        Ok(())
    }

    /// Values for named parameters: the window and the alert's labels.
    fn params(&self, cx: &Collection) -> BTreeMap<String, String> {
        let mut p: BTreeMap<String, String> = cx.labels.clone();
        if let Some(s) = cx.window.since {
            p.insert("since".into(), s.to_string());
        }
        if let Some(u) = cx.window.until {
            p.insert("until".into(), u.to_string());
        }
        p
    }
}

/// The tables to export: patterns matched against the catalog (in sorted order), partitioned tables split into
/// their leaf partitions where asked. Also returns, as warnings, the patterns that matched nothing.
async fn expand_tables(
    client: &Client,
    specs: &[TableSpec],
) -> Result<(Vec<TableSpec>, Vec<String>), tokio_postgres::Error> {
    let (mut out, mut missing) = (Vec::new(), Vec::new());
    for spec in specs {
        let (schema, table) = sql::split_name(&spec.table);
        let pattern = spec.table.contains(['*', '?']);
        let names: Vec<(String, String)> = if pattern {
            let (sp, tp) = (glob::Pattern::new(&schema), glob::Pattern::new(&table));
            client
                .query(
                    "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                     JOIN pg_namespace n ON n.oid = c.relnamespace \
                     WHERE c.relkind IN ('r', 'p', 'v', 'm', 'f') AND NOT c.relispartition \
                     AND n.nspname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2",
                    &[],
                )
                .await?
                .iter()
                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                .filter(|(s, t)| sp.as_ref().is_ok_and(|p| p.matches(s)) && tp.as_ref().is_ok_and(|p| p.matches(t)))
                .collect()
        } else {
            vec![(schema, table)]
        };
        if names.is_empty() {
            missing.push(format!("tables `{}`: no table matches", spec.table));
        }
        for (schema, table) in names {
            let leaves: Vec<String> = if spec.partitions == Partitions::Each {
                client
                    .query(
                        "SELECT c.relname::text FROM pg_partition_tree(to_regclass($1)) t \
                         JOIN pg_class c ON c.oid = t.relid WHERE t.isleaf AND t.level > 0 ORDER BY 1",
                        &[&format!("{}.{}", sql::ident(&schema), sql::ident(&table))],
                    )
                    .await?
                    .iter()
                    .map(|r| r.get(0))
                    .collect()
            } else {
                Vec::new()
            };
            if leaves.is_empty() {
                // Named as the collector names it, unless a pattern found it.
                let name = if pattern { format!("{schema}.{table}") } else { spec.table.clone() };
                out.push(TableSpec { table: name, partitions: Partitions::Parent, ..spec.clone() });
            }
            for leaf in leaves {
                out.push(TableSpec {
                    table: format!("{schema}.{leaf}"),
                    partitions: Partitions::Parent,
                    ..spec.clone()
                });
            }
        }
    }
    Ok((out, missing))
}

/// What the export of `audit_events` needs to verify the chain as it streams: the HMAC key, and where its findings
/// go (the worker that exports the table is not the one that reports).
struct ChainTap {
    key: Option<Vec<u8>>,
    found: Mutex<Outcome>,
}

/// `public.audit_events` exported whole (no filter, no hashed column excluded): its export can verify the chain.
fn is_whole_audit_ledger(t: &TableSpec) -> bool {
    sql::split_name(&t.table) == ("public".to_string(), "audit_events".to_string())
        && t.filter.is_none()
        && !chain::COLUMNS.iter().any(|c| sql::excluded(c, &t.exclude_columns))
}

fn failed(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> CollectError {
    move |source| Error::Query { what: what.to_string(), source }.into()
}

/// One table's or query's entry in `details.exports`: what was read and how, or why it was not.
#[derive(Debug, Clone, Default, Serialize)]
struct JobReport {
    name: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    excluded_columns: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    partitions: Option<Vec<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    skipped: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    query: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    audit_chain: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rows: Option<u64>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    rls_zero_rows: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// An entry of `details.exports`: the jobs in the collector's order, then the dump.
#[derive(Serialize)]
#[serde(untagged)]
enum Export<'a> {
    Job(&'a JobReport),
    Dump(&'a dump::DumpReport),
}

/// Exports one job; problems are reported in the returned record, not raised, so one table's failure (permission
/// denied, a timeout) costs only that table.
async fn export_job(
    cx: &Collection,
    client: &Client,
    job: &Job,
    params: &BTreeMap<String, String>,
    tap: Option<&ChainTap>,
) -> JobReport {
    let name = match job {
        Job::Table(t) => t.table.clone(),
        Job::Query(q) => q.name.clone(),
    };
    let mut report = JobReport { name, ..JobReport::default() };
    // A savepoint keeps the shared transaction usable after one statement fails.
    let _ = client.batch_execute("SAVEPOINT preserve_job").await;
    let result = match job {
        Job::Table(t) => export_table(cx, client, t, params, tap, &mut report).await,
        Job::Query(q) => {
            copy_csv(cx, client, &format!("queries/{}.csv", sql::file_name(&q.name)), &q.sql, None, &mut report).await
        }
    };
    match result {
        Ok(()) => {
            let _ = client.batch_execute("RELEASE SAVEPOINT preserve_job").await;
        }
        Err(e) => {
            let _ = client.batch_execute("ROLLBACK TO SAVEPOINT preserve_job").await;
            report.error = Some(e);
        }
    }
    report
}

async fn export_table(
    cx: &Collection,
    client: &Client,
    t: &TableSpec,
    params: &BTreeMap<String, String>,
    tap: Option<&ChainTap>,
    report: &mut JobReport,
) -> Result<(), String> {
    let (schema, table) = sql::split_name(&t.table);
    let columns = client
        .query(
            "SELECT a.attname::text FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = $1 AND c.relname = $2 AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&schema, &table],
        )
        .await
        .map_err(|e| sql::describe_error(&e))?;
    if columns.is_empty() {
        return Err(format!("table {schema}.{table} not found"));
    }
    let all: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
    let kept: Vec<&String> = all.iter().filter(|c| !sql::excluded(c, &t.exclude_columns)).collect();
    let excluded: Vec<&String> = all.iter().filter(|c| sql::excluded(c, &t.exclude_columns)).collect();
    if !excluded.is_empty() {
        report.excluded_columns = excluded.iter().map(|c| c.to_string()).collect();
        cx.tally().add_rule("column-excluded", excluded.len() as u64);
    }
    let partitions = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             JOIN pg_class p ON p.oid = i.inhparent JOIN pg_namespace n ON n.oid = p.relnamespace \
             WHERE n.nspname = $1 AND p.relname = $2 ORDER BY 1",
            &[&schema, &table],
        )
        .await
        .map_err(|e| sql::describe_error(&e))?;
    if !partitions.is_empty() {
        report.partitions = Some(partitions.iter().map(|r| r.get(0)).collect());
    }
    let ddl = sql::table_ddl(client, &schema, &table).await.map_err(|e| sql::describe_error(&e))?;
    let base = format!("tables/{}", sql::file_name(&format!("{schema}.{table}")));
    cx.write_small(&format!("{base}.ddl.sql"), "application/sql", ddl.as_bytes()).map_err(|e| e.to_string())?;

    let cols = kept.iter().map(|c| sql::ident(c)).collect::<Vec<_>>().join(", ");
    let mut query = format!("SELECT {cols} FROM {}.{}", sql::ident(&schema), sql::ident(&table));
    if let Some(f) = &t.filter {
        let names = sql::bind_names(f).map_err(|e| e.to_string())?;
        for n in &names {
            let Some(v) = params.get(n) else {
                report.skipped =
                    Some(format!("the filter needs :{n}, which neither the window nor the alert provides"));
                return Ok(());
            };
            client
                .execute("SELECT set_config($1, $2, true)", &[&sql::param_setting(n), v])
                .await
                .map_err(|e| sql::describe_error(&e))?;
        }
        query.push_str(" WHERE ");
        query.push_str(&sql::substitute(f).map_err(|e| e.to_string())?);
    }
    // Verifying the chain from this export, in the table's own order (see chain::Tap), every column the hash needs.
    let mut found = Outcome::default();
    let mut tapping = None;
    if let Some(shared) = tap {
        match chain::COLUMNS.iter().find(|c| !kept.iter().any(|k| k == *c)) {
            Some(missing) => {
                let why = format!("audit_events has no column {missing}: the audit chain cannot be verified");
                shared.found.lock().unwrap_or_else(|p| p.into_inner()).warn(why);
            }
            None => tapping = Some(chain::Tap::new(shared.key.clone()).map_err(|e| e.to_string())?),
        }
    }
    report.query = Some(query.clone());
    let exported = copy_csv(cx, client, &format!("{base}.csv"), &query, tapping.as_mut(), report).await;
    if let (Some(shared), Some(t)) = (tap, tapping) {
        // A chain verified over an interrupted export would look like a truncated chain: not reported as checked.
        let verified = match &exported {
            Ok(()) => match t.finish(cx, &mut found) {
                Ok(true) => {
                    report.audit_chain = Some("verified from the export");
                    Ok(())
                }
                // Rows out of chain order (or a ledger too broken to hold its problems): read it again, ordered.
                Ok(false) => {
                    report.audit_chain = Some("verified from an ordered read (the export was not in chain order)");
                    chain::verify_audit_ordered(cx, client, shared.key.as_deref(), &mut found)
                        .await
                        .map_err(|e| e.to_string())
                }
                Err(e) => Err(e.to_string()),
            },
            Err(e) => Err(format!("the export stopped ({e})")),
        };
        let mut shared = shared.found.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = verified {
            shared.warn(format!("audit chain not verified: {e}"));
        }
        shared.absorb(found);
    }
    exported?;
    // Row-level security that applies to us and let nothing through: most likely a missing `caracal.zone_id`,
    // not an empty table. Say so, or the bundle would look like evidence of absence.
    if report.rows == Some(0) && rls_hides_rows(client, &schema, &table).await.map_err(|e| sql::describe_error(&e))? {
        report.rls_zero_rows = true;
    }
    Ok(())
}

/// Whether row-level security on `schema.table` applies to the session's role (not its owner, or forced; no
/// bypass): then 0 rows read most likely means a missing `caracal.zone_id`, not an empty table.
async fn rls_hides_rows(client: &Client, schema: &str, table: &str) -> Result<bool, tokio_postgres::Error> {
    Ok(client
        .query_one(
            "SELECT c.relrowsecurity AND (c.relforcerowsecurity OR pg_get_userbyid(c.relowner) <> current_user) \
             AND NOT (SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user) \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await?
        .get::<_, Option<bool>>(0)
        == Some(true))
}

/// `COPY (query) TO STDOUT` streamed into an artifact as CSV with a header, with the run's known secret values
/// replaced (rows are evidence: no pattern rules). The server sends text format, turned into the CSV its
/// `FORMAT csv` would have sent by [`copy_row`] (cheaper for the server); the header comes from the statement's
/// columns.
async fn copy_csv(
    cx: &Collection,
    client: &Client,
    path: &str,
    query: &str,
    mut tap: Option<&mut chain::Tap>,
    report: &mut JobReport,
) -> Result<(), String> {
    use std::io::Write;
    let statement = client.prepare(query).await.map_err(|e| sql::describe_error(&e))?;
    let width = statement.columns().len();
    let copy = format!("COPY ({query}) TO STDOUT");
    let stream = client.copy_out(copy.as_str()).await.map_err(|e| sql::describe_error(&e))?;
    let mut artifact = cx.artifact(path, "text/csv", Redaction::Data).map_err(|e| e.to_string())?;
    let mut stream = std::pin::pin!(stream);
    // The backend sends exactly one CopyData message per row (the protocol guarantees it for COPY OUT): rows are
    // counted by message, and gathered into batches of whole rows (so a secret, or a quoted value spanning lines,
    // is never split between two redaction passes) before they are redacted, hashed, compressed.
    const BATCH: usize = 256 << 10;
    let mut pending: Vec<u8> = Vec::with_capacity(BATCH + (64 << 10));
    let names = || statement.columns().iter().map(|c| c.name());
    copy_row::header_csv(names(), &mut pending);
    let mut row = copy_row::Row::default();
    if let Some(t) = tap.as_mut() {
        row.set_names(names());
        t.feed(&row);
    }
    let (mut rows, mut counted) = (0u64, 0u64);
    let mut write = |pending: &mut Vec<u8>, rows: u64, artifact: &mut super::Artifact| {
        let r = artifact.write_all(pending);
        pending.clear();
        artifact.add_records(rows - counted);
        counted = rows;
        r.map(|_| ())
    };
    while let Some(chunk) = stream.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                let why = format!("COPY interrupted after {rows} rows: {}", sql::describe_error(&e));
                // The rows received so far are kept; the artifact says why it ends there.
                let _ = write(&mut pending, rows, &mut artifact);
                artifact.abandon(&why);
                return Err(why);
            }
        };
        rows += 1;
        copy_row::text_to_csv(&chunk, width, &mut pending);
        if let Some(t) = tap.as_mut() {
            row.read_text(&chunk);
            t.feed(&row);
        }
        if pending.len() >= BATCH {
            write(&mut pending, rows, &mut artifact).map_err(|e| e.to_string())?;
            if cx.is_cancelled() {
                return Err("stopped".into());
            }
        }
    }
    write(&mut pending, rows, &mut artifact).map_err(|e| e.to_string())?;
    artifact.flush().map_err(|e| e.to_string())?;
    artifact.finish().map_err(|e| e.to_string())?;
    report.rows = Some(rows);
    Ok(())
}
