//! The `preserve` command line: argument handling and exit codes, nothing else.
//! Exit codes: 0 complete / intact, 3 partial bundle, 1 no bundle / not intact, 2 usage or config error.

use std::{
    io::Write,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU8, Ordering},
    },
};

use clap::{Args, Parser, Subcommand};
use preserve::{
    alert,
    bundle::{
        bounds::{Limits, printable},
        verify,
    },
    catalog::Catalog,
    config::{CredentialRef, Environment, KeySource, ProcessEnv},
    progress::{self, Progress},
    redact::FingerprintKey,
    runner::Stop,
    serve,
    snapshot::{self, Request},
    sources,
};

/// What became of stdout: 0 open, 1 closed by its reader (`preserve list | head -1`), 2 failed otherwise.
static STDOUT: AtomicU8 = AtomicU8::new(0);

/// `println!` for everything the commands print on stdout. A reader that closed the pipe ends the output quietly,
/// as ripgrep does (the command still finishes and exits with its own code); any other write error is said once
/// and makes the exit code 1.
macro_rules! out {
    ($($arg:tt)*) => { emit(format_args!($($arg)*)) };
}

fn emit(args: std::fmt::Arguments) {
    if STDOUT.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = stdout.write_fmt(args).and_then(|()| stdout.write_all(b"\n")) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT.store(1, Ordering::Relaxed);
        } else {
            STDOUT.store(2, Ordering::Relaxed);
            eprintln!("preserve: error: cannot write to stdout: {e}");
        }
    }
}

#[derive(Parser)]
#[command(
    name = "preserve",
    version,
    about = "Preserve the evidence of a Caracal incident before anyone remediates.",
    long_about = "preserve snapshots service logs, Redis streams and DLQs, Postgres tables, policy-set versions and \
                  config into one hashed, compressed evidence bundle (tar + zstd, BagIt inside) that `preserve verify` \
                  and standard tools can prove intact.",
    after_help = "Examples:\n  preserve snapshot --profile audit-tamper\n  preserve verify evidence/preserve-audit-tamper-20261129T024500Z-1a2b3c4d.tar.zst\n  preserve list"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Take a snapshot into a new bundle.
    #[command(after_help = "Examples:\n  \
        preserve snapshot --profile full --since 2h\n  \
        preserve snapshot --profile host --out /srv/evidence --json\n  \
        preserve snapshot --collector sts-logs --collector gateway-logs --since 2026-11-29T01:00:00Z --until 2026-11-29T02:00:00Z\n  \
        preserve snapshot --profile audit-tamper --alert alert.json\n  \
        preserve snapshot --profile full --dry-run\n  \
        preserve snapshot --profile full --verbose   # each collector's error whole, not cut to one line\n\n\
        Exit codes: 0 complete, 3 partial (some collector failed; the bundle is still written and verifiable),\n\
        1 no bundle could be written, 2 usage or configuration error (nothing written).")]
    Snapshot(SnapshotArgs),
    /// Prove a bundle intact: archive hash, every file's hash, no missing or extra file, manifest agreement.
    #[command(
        after_help = "Examples:\n  preserve verify evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst\n  preserve verify --json bundle.tar.zst\n  \
        preserve verify --max-bytes 200GiB --max-entries 1000000 huge.tar.zst\n\n\
        A bundle is read within bounds (docs/bundle-format.md): names, tag files, entries,\n\
        side files and the decompressed size (by default what its manifest says it holds,\n\
        plus room for tar framing). A bundle over a bound is refused unread, with one line\n\
        naming the bound and the flag that raises it where there is one.\n\n\
        Exit codes: 0 intact, 1 not intact (every problem is listed with the file at fault)\n\
        or refused, 2 usage error."
    )]
    Verify {
        /// The bundle (`.tar.zst`); the `.sha256` and `.manifest.json` beside it are checked too.
        bundle: PathBuf,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Summarize a bundle: collectors, status, sizes, records, findings.
    #[command(
        after_help = "Examples:\n  preserve inspect evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst\n  \
        preserve inspect --max-bytes 50GiB copied-without-side-files.tar.zst\n\n\
        The copy of the manifest beside the bundle is read when present; else the archive\n\
        is read, within the same bounds as `preserve verify`.\n\n\
        Exit codes: 0 shown, 1 unreadable or refused, 2 usage error."
    )]
    Inspect {
        bundle: PathBuf,
        /// Print the manifest as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run the sidecar: take snapshots by itself when Alertmanager posts critical alerts.
    #[command(after_help = "Examples:\n  \
        PRESERVE_SERVE_TOKEN=file:/etc/preserve/serve-token preserve serve --config preserve.toml\n  \
        preserve serve --listen 127.0.0.1:9731 --out /srv/evidence\n\n\
        Endpoints: POST /alertmanager (webhook v4, Authorization: Bearer <token>),\n\
        GET /healthz, /readyz, /metrics (Prometheus), /snapshots (recent snapshots).\n\
        Rules, cooldown, queue, concurrency, retention and the shutdown grace period are\n\
        in the site config's [serve] (docs/sidecar.md). One-shot Kubernetes Job instead:\n\
        preserve snapshot --profile P --alert alert.json\n\n\
        Exit codes: 0 stopped by SIGTERM/SIGINT with every snapshot written, 1 cannot listen\n\
        or the grace period ended first, 2 configuration error (no token, bad rule).")]
    Serve {
        #[command(flatten)]
        config: ConfigArgs,
        /// Address to listen on (overrides the config and $PRESERVE_LISTEN; default 0.0.0.0:9731).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Output directory for bundles (overrides the config and $PRESERVE_OUT).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
    /// Check candidate secret values against a bundle's markers, with the site's fingerprint key.
    #[command(after_help = "Reads candidate values from stdin, one per line (never from the command line, where `ps` \
        would show them), and prints each one's line number, fingerprint and marker; with --bundle, also where the \
        bundle's manifest records that fingerprint (each collector's `redactions[].fingerprints`). Only the holder of \
        the site key ([redaction] fingerprint_key) can do this: a bundle never holds its key, and a bundle made \
        without a site key (a per-bundle key, written nowhere) cannot be checked by anyone.\n\n\
        Examples:\n  \
        # Was the leaked Postgres password the one the bundle redacted?\n  \
        preserve fingerprint --key file:/etc/preserve/fingerprint.key \\\n      \
        --bundle evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst < candidates.txt\n  \
        # The marker a value would get (key from the site config):\n  \
        printf '%s\\n' \"$CANDIDATE\" | preserve fingerprint --config /etc/preserve/preserve.toml\n\n\
        Exit codes: 0 done (with --bundle: some candidate matched), 1 no candidate matched, 2 no usable key, \
        a bundle keyed otherwise, or unreadable input.")]
    Fingerprint {
        /// The site's fingerprint key, by reference (`file:PATH` or `env:NAME`); default: the site config's
        /// [redaction] fingerprint_key (or $PRESERVE_FINGERPRINT_KEY).
        #[arg(long, value_name = "REF")]
        key: Option<CredentialRef>,
        /// A bundle (`.tar.zst`, or its `.manifest.json`) whose recorded fingerprints the candidates are matched with.
        #[arg(long, value_name = "BUNDLE")]
        bundle: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the results as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Check that this site is ready: config, CARACAL_HOME, and whether each collector of a profile can run here.
    #[command(after_help = "Examples:\n  \
        preserve check                          # the collectors of the `full` profile\n  \
        preserve check --profile audit-tamper --config /etc/preserve/preserve.toml\n  \
        preserve check -c redis-streams -c postgres-audit --json\n\n\
        One line per site fact and per collector: `ok`, `skip` (it will find nothing to read here,\n\
        and record that: a Compose file on a Kubernetes site), or `NO` with why it cannot run\n\
        (an input absent, a server not answering or refusing the read-only role, a credential\n\
        reference that does not resolve). Read-only; never prints a credential's value.\n\n\
        Exit codes: 0 every collector can run, 3 some cannot, 2 usage or configuration error.")]
    Check {
        /// Profile whose collectors are checked; may be repeated (default: `full`, unless --collector is given).
        #[arg(long = "profile", short = 'p', value_name = "PROFILE")]
        profiles: Vec<String>,
        /// A single collector to check; may be repeated.
        #[arg(long = "collector", short = 'c', value_name = "NAME")]
        collectors: Vec<String>,
        #[command(flatten)]
        config: ConfigArgs,
        /// Where bundles would go (overrides the config and $PRESERVE_OUT).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the collectors and profiles available.
    #[command(after_help = "Examples:\n  preserve list\n  preserve list --collectors /etc/preserve/collectors --json")]
    List {
        #[command(flatten)]
        config: ConfigArgs,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ConfigArgs {
    /// Site config file (default: $PRESERVE_CONFIG, else built-in defaults for a Caracal Compose host).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Extra directory of collector and profile TOML files; may be repeated.
    #[arg(long = "collectors", value_name = "DIR")]
    collectors_dirs: Vec<PathBuf>,
}

#[derive(Args)]
struct LimitArgs {
    /// Most bytes the archive may expand to, decompressed (`500MiB`, `200GiB`). Default: what the manifest beside
    /// it says the bundle holds plus 8 KiB per artifact and 128 MiB; without that manifest, 256 times the
    /// compressed size and at least 1 GiB.
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    max_bytes: Option<u64>,
    /// Most entries (files, directories, anything else) the archive may hold; also makes room for their names
    /// and tag files (640 bytes each, at least 64 MiB).
    #[arg(long, value_name = "N", default_value_t = preserve::bundle::bounds::DEFAULT_MAX_ENTRIES)]
    max_entries: u64,
}

impl LimitArgs {
    fn limits(&self) -> Limits {
        Limits { max_bytes: self.max_bytes, max_entries: self.max_entries }
    }
}

fn parse_size(s: &str) -> Result<u64, String> {
    s.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|e| format!("not a size like `500MiB` or `2GB`: {e}"))
}

#[derive(Args)]
struct SnapshotArgs {
    /// Incident profile to run; may be repeated (see `preserve list`).
    #[arg(long = "profile", short = 'p', value_name = "PROFILE")]
    profiles: Vec<String>,
    /// A single collector to run; may be repeated, and combined with profiles.
    #[arg(long = "collector", short = 'c', value_name = "NAME")]
    collectors: Vec<String>,
    #[command(flatten)]
    config: ConfigArgs,
    /// Output directory for the bundle (overrides the config and $PRESERVE_OUT).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Start of the window: RFC 3339 time or a duration ago (`2h`, `90m`, `1d`). Default: the profile's window.
    #[arg(long, value_name = "TIME")]
    since: Option<String>,
    /// End of the window: RFC 3339 time or a duration ago. Default: open.
    #[arg(long, value_name = "TIME")]
    until: Option<String>,
    /// Alertmanager webhook payload or a single alert (JSON) that triggered this snapshot.
    #[arg(long, value_name = "FILE")]
    alert: Option<PathBuf>,
    /// Print the plan (collectors, sources, window) and touch nothing.
    #[arg(long)]
    dry_run: bool,
    /// Print a JSON summary on stdout instead of the bundle path.
    #[arg(long)]
    json: bool,
    /// No progress output.
    #[arg(long, short = 'q')]
    quiet: bool,
    /// Each collector's error whole (by default cut to fit one line; the manifest has it whole, see
    /// `preserve inspect`).
    #[arg(long, short = 'v')]
    verbose: bool,
}

fn main() -> ExitCode {
    // A panic's message may quote the data being processed; say where, never what.
    std::panic::set_hook(Box::new(|info| {
        let at = info.location().map(|l| format!("{}:{}", l.file(), l.line())).unwrap_or_default();
        eprintln!("preserve: internal error at {at} (recorded in the manifest when inside a collector)");
    }));
    // TLS (rediss://, Postgres sslmode) with ring, whichever library asks for rustls' process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let code = match cli.command {
        Command::Snapshot(args) => snapshot_cmd(args),
        Command::Verify { bundle, json, limits } => verify_cmd(&bundle, json, &limits.limits()),
        Command::Inspect { bundle, json, limits } => inspect_cmd(&bundle, json, &limits.limits()),
        Command::List { config, json } => list_cmd(&config, json),
        Command::Check { profiles, collectors, config, out, json } => {
            check_cmd(profiles, collectors, &config, out, json)
        }
        Command::Serve { config, listen, out } => serve_cmd(&config, listen, out),
        Command::Fingerprint { key, bundle, config, json } => fingerprint_cmd(key, bundle.as_deref(), &config, json),
    };
    // Output a reader stopped taking is no error; output that could not be written is.
    let code = if STDOUT.load(Ordering::Relaxed) == 2 && code == 0 { 1 } else { code };
    ExitCode::from(code)
}

fn load(config: &ConfigArgs) -> Result<(Environment, Catalog), String> {
    let env = Environment::load(config.config.as_deref(), &ProcessEnv).map_err(|e| e.to_string())?;
    let catalog = Catalog::load(&env, &config.collectors_dirs).map_err(|e| e.to_string())?;
    Ok((env, catalog))
}

fn snapshot_cmd(args: SnapshotArgs) -> u8 {
    let (mut env, catalog) = match load(&args.config) {
        Ok(x) => x,
        Err(e) => return fail(2, &e),
    };
    if let Some(out) = &args.out {
        env.out_dir = out.clone();
    }
    let alerts = match args.alert.as_deref().map(alert::read_alerts).transpose() {
        Ok(a) => a.unwrap_or_default(),
        Err(e) => return fail(2, &e.to_string()),
    };
    let request = Request {
        profiles: args.profiles.clone(),
        collectors: args.collectors.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        alerts,
        trigger: None,
    };
    let plan = match snapshot::plan(&env, &catalog, &request, jiff::Timestamp::now()) {
        Ok(p) => p,
        Err(e) => return fail(2, &e.to_string()),
    };
    if args.dry_run {
        let summary = plan.summary(&env);
        if args.json {
            out!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
        } else {
            print_plan(&plan, &env);
        }
        return 0;
    }
    let secrets = match snapshot::resolve_secrets(&env, &plan) {
        Ok(s) => s,
        Err(e) => return fail(2, &e.to_string()),
    };

    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    let progress = Progress::new(args.quiet || args.json).verbose(args.verbose);
    let hint = env.caracal_home_hint();
    let stop = Stop::default();
    let result = runtime.block_on(async {
        let watcher = tokio::spawn(watch_signals(stop.clone()));
        let r = snapshot::execute(plan, Arc::new(env), secrets, &stop, &progress).await;
        watcher.abort();
        r
    });
    // Abandoned blocking readers (a collector cut off mid-read) must not hold the process open.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(outcome) => {
            if args.json {
                let collectors: Vec<_> = outcome
                    .manifest
                    .collectors
                    .iter()
                    .map(|c| {
                        serde_json::json!({
                            "name": c.name, "status": c.status, "error": c.error,
                            "bytes": c.artifacts.iter().map(|a| a.bytes).sum::<u64>(),
                            "records": c.artifacts.iter().filter_map(|a| a.records).sum::<u64>(),
                        })
                    })
                    .collect();
                let summary = serde_json::json!({
                    "bundle": outcome.bundle.archive,
                    "sha256": outcome.bundle.sha256,
                    "bytes": outcome.bundle.bytes,
                    "bundle_id": outcome.manifest.bundle_id,
                    "status": outcome.manifest.status,
                    "collectors": collectors,
                });
                out!("{}", serde_json::to_string_pretty(&summary).unwrap_or_default());
            } else {
                out!("{}", outcome.bundle.archive.display());
                // Each error was said as its collector ended, unless progress was not shown.
                let errors = args.quiet.then_some(if args.verbose { usize::MAX } else { progress::LINE });
                for line in progress::closing_lines(&outcome.manifest, &outcome.bundle.archive, hint.as_deref(), errors)
                {
                    eprintln!("{line}");
                }
            }
            outcome.exit_code() as u8
        }
        Err(e) => fail(1, &e.to_string()),
    }
}

async fn watch_signals(stop: Stop) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    eprintln!("preserve: {name} received: stopping collection and writing what was collected");
    stop.stop(format!("{name} received"));
}

fn serve_cmd(config: &ConfigArgs, listen: Option<String>, out: Option<PathBuf>) -> u8 {
    let (mut env, catalog) = match load(config) {
        Ok(x) => x,
        Err(e) => return fail(2, &e),
    };
    if let Some(l) = listen {
        env.listen = l;
    }
    if let Some(o) = out {
        env.out_dir = o;
    }
    let sidecar = match serve::Sidecar::new(env, catalog) {
        Ok(s) => s,
        Err(e) => return fail(e.exit_code(), &e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    let result = runtime.block_on(sidecar.run());
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(true) => 0,
        Ok(false) => 1,
        Err(e) => fail(e.exit_code(), &e.to_string()),
    }
}

fn print_plan(plan: &snapshot::Plan, env: &Environment) {
    let w = |t: Option<jiff::Timestamp>| t.map_or("open".to_string(), |t| t.to_string());
    out!("profile: {}", plan.profile_label);
    out!("window:  {} .. {}", w(plan.window.since), w(plan.window.until));
    let alerts: Vec<&str> = plan.trigger.alerts.iter().map(|a| a.name().unwrap_or("?")).collect();
    if alerts.is_empty() {
        out!("trigger: the command line (no alert)");
    } else {
        out!("trigger: {} alert(s): {}", alerts.len(), printable(&alerts.join(", ")));
    }
    out!("output:  {}", env.out_dir.display());
    out!("collectors:");
    let nw = plan.collectors.iter().map(|c| c.name.chars().count()).max().unwrap_or(0);
    let kw = plan.collectors.iter().map(|c| c.kind.chars().count()).max().unwrap_or(0);
    for c in &plan.collectors {
        out!("  {:<nw$}  {:<kw$}  timeout {:>5}s  {}", c.name, c.kind, c.timeout.as_secs(), c.describe);
    }
    let warnings: Vec<_> = preserve::check::site(env).into_iter().filter(|s| !s.ok).collect();
    if !warnings.is_empty() {
        out!("warnings (`preserve check` also asks each collector's servers):");
        for s in warnings {
            out!("  {}: {}", s.name, s.detail);
        }
    }
}

fn check_cmd(
    profiles: Vec<String>,
    collectors: Vec<String>,
    config: &ConfigArgs,
    out: Option<PathBuf>,
    json: bool,
) -> u8 {
    let (mut env, catalog) = match load(config) {
        Ok(x) => x,
        Err(e) => return fail(2, &e),
    };
    if let Some(out) = out {
        env.out_dir = out;
    }
    let profiles = if profiles.is_empty() && collectors.is_empty() { vec!["full".to_string()] } else { profiles };
    let request = Request { profiles, collectors, ..Default::default() };
    let plan = match snapshot::plan(&env, &catalog, &request, jiff::Timestamp::now()) {
        Ok(p) => p,
        Err(e) => return fail(2, &e.to_string()),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => return fail(1, &format!("cannot start the runtime: {e}")),
    };
    let report = runtime.block_on(preserve::check::run(&env, &plan.collectors));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if json {
        out!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        for line in report.lines() {
            out!("{}", printable(&line));
        }
    }
    if report.all_can_run() { 0 } else { 3 }
}

fn verify_cmd(bundle: &std::path::Path, json: bool, limits: &Limits) -> u8 {
    let report = match verify::verify_with(bundle, limits) {
        Ok(r) => r,
        Err(e) => return fail(1, &e.to_string()),
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else if report.intact() {
        out!(
            "intact: {} ({} payload files, {} bytes; archive sha256 {}{})",
            report.bundle_id.as_deref().unwrap_or("?"),
            report.payload_files,
            report.payload_bytes,
            report.archive_sha256,
            if report.archive_hash_checked { ", matches .sha256" } else { ", no .sha256 beside it" }
        );
    } else {
        out!("NOT INTACT: {}", bundle.display());
        for p in &report.problems {
            out!("  {p}");
        }
    }
    if report.intact() { 0 } else { 1 }
}

fn inspect_cmd(bundle: &std::path::Path, json: bool, limits: &Limits) -> u8 {
    let m = match verify::read_manifest(bundle, limits) {
        Ok(m) => m,
        Err(e) => return fail(1, &e.to_string()),
    };
    if json {
        out!("{}", serde_json::to_string_pretty(&m).unwrap_or_default());
        return 0;
    }
    let w = |t: Option<jiff::Timestamp>| t.map_or("open".to_string(), |t| t.to_string());
    // The manifest is the bundle author's text: shown with its control characters escaped, so it cannot steer the
    // terminal or forge lines.
    let p = |s: &str| printable(s);
    out!("bundle:   {}", p(&m.bundle_id));
    out!("status:   {}", m.status.as_str());
    out!("profile:  {}", p(&m.profile));
    out!("host:     {}   tool: {} {}", p(&m.host), p(&m.tool.name), p(&m.tool.version));
    out!("taken:    {} .. {}", m.created_at, m.finished_at);
    out!("window:   {} .. {}", w(m.window.since), w(m.window.until));
    out!(
        "trigger:  {}",
        serde_json::to_value(m.trigger.kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
    );
    for a in &m.trigger.alerts {
        out!("  alert {} {:?}", p(a.name().unwrap_or("?")), a.labels);
    }
    out!("collectors:");
    for c in &m.collectors {
        let bytes: u64 = c.artifacts.iter().map(|a| a.bytes).sum();
        let records: u64 = c.artifacts.iter().filter_map(|a| a.records).sum();
        let redacted: u64 = c.redactions.iter().map(|r| r.count).sum();
        out!(
            "  {:<24} {:<8} {:>10} {:>9} records {:>4} files {:>6} ms{}{}",
            p(&c.name),
            c.status.as_str(),
            bytesize::ByteSize::b(bytes).display().iec().to_string(),
            records,
            c.artifacts.len(),
            c.duration_ms,
            if redacted > 0 { format!(", {redacted} redacted") } else { String::new() },
            c.error.as_ref().map(|e| format!("\n      {}", p(e))).unwrap_or_default()
        );
    }
    if !m.findings.is_empty() {
        out!("findings:");
        for f in &m.findings {
            out!("  [{:?}] {} {}: {}", f.severity, p(&f.collector), p(&f.code), p(&f.summary));
        }
    }
    0
}

fn fingerprint_cmd(
    key: Option<CredentialRef>,
    bundle: Option<&std::path::Path>,
    config: &ConfigArgs,
    json: bool,
) -> u8 {
    let source = match key {
        Some(r) => KeySource::Reference(r),
        None => match Environment::load(config.config.as_deref(), &ProcessEnv) {
            Ok(env) => match env.fingerprint_key {
                Some(k) => k,
                None => return fail(2, "no fingerprint key: give --key file:PATH, or set [redaction] fingerprint_key"),
            },
            Err(e) => return fail(2, &e.to_string()),
        },
    };
    let key = match FingerprintKey::site_from(&source) {
        Ok(k) => k,
        Err(e) => return fail(2, &e.to_string()),
    };
    let manifest = match bundle.map(preserve::bundle::fingerprints::bundle_manifest).transpose() {
        Ok(m) => m,
        Err(e) => return fail(2, &e.to_string()),
    };
    let checked =
        match preserve::bundle::fingerprints::check_candidates(&key, manifest.as_ref(), std::io::stdin().lock()) {
            Ok(c) => c,
            Err(e) => return fail(2, &e.to_string()),
        };
    if json {
        out!("{}", serde_json::to_string_pretty(&checked).unwrap_or_default());
    } else {
        for c in &checked {
            match &c.matches {
                None => out!("line {}: {}", c.line, c.marker),
                Some(m) if m.is_empty() => out!("line {}: {}  no match", c.line, c.marker),
                Some(m) => {
                    let places: Vec<_> = m.iter().map(ToString::to_string).collect();
                    out!("line {}: {}  MATCH: {}", c.line, c.marker, places.join("; "));
                }
            }
        }
    }
    let matched = checked.iter().any(|c| c.matches.as_ref().is_none_or(|m| !m.is_empty()));
    if manifest.is_some() && !matched { 1 } else { 0 }
}

fn list_cmd(config: &ConfigArgs, json: bool) -> u8 {
    let (_env, catalog) = match load(config) {
        Ok(x) => x,
        Err(e) => return fail(2, &e),
    };
    if json {
        let v = serde_json::json!({
            "profiles": catalog.profiles.values().map(|p| serde_json::json!({"name": p.name, "description": p.description, "alerts": p.alerts, "window": p.window.map(|w| w.to_string()), "collectors": catalog.profile_collectors(p).iter().map(|c| &c.name).collect::<Vec<_>>()})).collect::<Vec<_>>(),
            "collectors": catalog.collectors.values().map(|c| serde_json::json!({"name": c.name, "kind": c.kind, "description": c.description, "defined_at": c.origin.to_string()})).collect::<Vec<_>>(),
            "kinds": sources::KINDS.iter().map(|k| serde_json::json!({"name": k.name, "summary": k.summary})).collect::<Vec<_>>(),
        });
        out!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
        return 0;
    }
    // Columns as wide as their longest entry: a site's own collector names may be longer than the built-in ones.
    let width = |names: &mut dyn Iterator<Item = usize>| names.max().unwrap_or(0);
    let pw = width(&mut catalog.profiles.values().map(|p| p.name.chars().count()));
    out!("Profiles:");
    for p in catalog.profiles.values() {
        out!("  {:<pw$}  {}", p.name, p.description);
        if !p.alerts.is_empty() {
            out!("  {:<pw$}  alerts: {}", "", p.alerts.join(", "));
        }
        if let Some(w) = p.window {
            out!("  {:<pw$}  window: {w:#}", "");
        }
        let names: Vec<_> = catalog.profile_collectors(p).iter().map(|c| c.name.clone()).collect();
        out!("  {:<pw$}  collectors: {}", "", names.join(", "));
    }
    let cw = width(&mut catalog.collectors.values().map(|c| c.name.chars().count()));
    let kw = width(&mut catalog.collectors.values().map(|c| c.kind.chars().count()));
    out!("\nCollectors:");
    for c in catalog.collectors.values() {
        out!("  {:<cw$}  {:<kw$}  {}", c.name, c.kind, c.description);
    }
    0
}

fn fail(code: u8, message: &str) -> u8 {
    eprintln!("preserve: error: {message}");
    code
}
