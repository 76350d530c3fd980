//! The `preserve` command line: argument handling and exit codes, nothing else.
//! Exit codes: 0 complete / intact, 3 partial bundle, 4 / 5 complete / partial with a seal part missing, 6 / 7
//! complete / partial with the upload asked for and not confirmed, 1 no bundle / not intact, 2 usage or config
//! error.

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
    bundle::{bounds::Limits, verify},
    catalog::Catalog,
    config::{ConfigError, CredentialRef, Environment, KeySource, ProcessEnv, SealSettings, SignerSource},
    progress::{self, Progress},
    redact::FingerprintKey,
    render,
    runner::Stop,
    seal, serve,
    snapshot::{self, Request},
};

/// What became of stdout: 0 open, 1 closed by its reader (`preserve list | head -1`), 2 failed otherwise.
static STDOUT: AtomicU8 = AtomicU8::new(0);

/// Writes what a command prints on stdout (rendered by `preserve::render`, each line ending in a newline). A
/// reader that closed the pipe ends the output quietly, as ripgrep does (the command still finishes and exits with
/// its own code); any other write error is said once and makes the exit code 1.
fn show(what: impl std::fmt::Display) {
    if STDOUT.load(Ordering::Relaxed) != 0 {
        return;
    }
    let mut stdout = std::io::stdout().lock();
    if let Err(e) = write!(stdout, "{what}").and_then(|()| stdout.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            STDOUT.store(1, Ordering::Relaxed);
        } else {
            STDOUT.store(2, Ordering::Relaxed);
            eprintln!("preserve: error: cannot write to stdout: {e}");
        }
    }
}

/// Says `preserve: <message>` on stderr; in the sidecar's log once there is one, which may be JSON lines that a line
/// of text would break (`serve::log` writes the same text line).
fn say(message: &str) {
    if tracing::dispatcher::has_been_set() {
        tracing::error!("{message}");
    } else {
        eprintln!("preserve: {message}");
    }
}

/// `--json` output: pretty, ending in a newline.
fn show_json(value: &impl serde::Serialize) {
    show(format_args!("{}\n", serde_json::to_string_pretty(value).unwrap_or_default()));
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
        preserve snapshot --profile full --verbose   # each collector's error whole, not cut to one line\n  \
        preserve snapshot --profile audit-tamper --upload   # to [store] while it is written (docs/storage.md)\n\n\
        Exit codes: 0 complete, 3 partial (some collector failed; the bundle is still written and verifiable),\n\
        4 complete and 5 partial with a part of the seal [seal] asks for missing (no signature or no timestamp;\n\
        docs/sealing.md), 6 complete and 7 partial with --upload and no confirmed copy in the store (the\n\
        bundle is kept on this host; `preserve upload` resumes it), 1 no bundle could be written, 2 usage or\n\
        configuration error (nothing written).")]
    Snapshot(SnapshotArgs),
    /// Prove a bundle intact: archive hash, every file's hash, no missing or extra file, manifest agreement.
    #[command(
        after_help = "Examples:\n  preserve verify evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst\n  preserve verify --json bundle.tar.zst\n  \
        preserve verify --max-bytes 200GiB --max-entries 1000000 huge.tar.zst\n\n\
        A bundle is read within bounds (docs/bundle-format.md): names, tag files, entries,\n\
        side files and the decompressed size (by default what its manifest says it holds,\n\
        plus room for tar framing). A bundle over a bound is refused unread, with one line\n\
        naming the bound and the flag that raises it where there is one.\n\n\
        Seal layers (docs/sealing.md), each named with what it found: the signature\n\
        (<id>.tar.zst.sig, its key's fingerprint, and its principal from --allowed-signers),\n\
        the timestamp (<id>.tar.zst.tsr: time, TSA, digest, chain to --tsa-ca) and the custody\n\
        record (<id>.custody.jsonl: entries, signers, the first broken link).\n  \
        preserve verify --allowed-signers /etc/preserve/allowed_signers --tsa-ca tsa-ca.pem \\\n      \
        --require-signature --require-timestamp bundle.tar.zst\n\n\
        An encrypted bundle (<id>.tar.zst.age, docs/storage.md): its ciphertext is checked;\n\
        with --identity FILE it is decrypted as it is read and everything inside is checked.\n  \
        preserve verify --identity ~/.config/preserve/identity.txt bundle.tar.zst.age\n\n\
        A bundle in S3 (s3://bucket/key): streamed from the store, its side files fetched\n\
        beside it, and checked as a file is; the endpoint and region come from --config's [store].\n  \
        preserve verify --config preserve.toml s3://evidence/caracal/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst\n\n\
        Exit codes: 0 intact, 1 not intact (every problem is listed with the file at fault),\n\
        refused, or a required seal layer absent, 2 usage error."
    )]
    Verify {
        /// The bundle (`.tar.zst`, `.tar.zst.age`, or `s3://bucket/key` of one); the `.sha256`, `.manifest.json`,
        /// `.sig`, `.tsr` and `.custody.jsonl` beside it are checked too.
        bundle: PathBuf,
        /// Site config whose `[store]` says how to reach an `s3://` bundle (default: $PRESERVE_CONFIG).
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        limits: LimitArgs,
        #[command(flatten)]
        seal: SealArgs,
    },
    /// The custody record of a bundle: append a signed entry, or show it.
    #[command(subcommand)]
    Custody(CustodyCommand),
    /// Upload a finished bundle to the site config's `[store]`, resuming an upload that was interrupted.
    #[command(after_help = "Examples:\n  \
        preserve upload evidence/preserve-audit-tamper-20261129T024500Z-1a2b3c4d.tar.zst\n  \
        preserve upload --json --config /etc/preserve/preserve.toml bundle.tar.zst\n\n\
        The parts of an interrupted upload that its <id>.upload.json names are kept when the file still holds\n\
        them; the object is created only if none is at its key (If-None-Match), under the configured Object\n\
        Lock, then the side files; the archive's checksum is read back before the copy is called confirmed.\n\
        A bundle already confirmed is left as it is.\n\n\
        Exit codes: 0 stored and confirmed, 6 not stored or not confirmed (the record says why), 1 the bundle\n\
        cannot be read, 2 usage or configuration error (no [store]).")]
    Upload {
        /// The bundle (`.tar.zst`); its side files go with it.
        bundle: PathBuf,
        #[command(flatten)]
        config: ConfigArgs,
        /// Print the upload record as JSON.
        #[arg(long)]
        json: bool,
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
    /// Every timestamped record of a bundle as one time-ordered stream of events (docs/timeline.md).
    #[command(after_help = "Examples:\n  \
        preserve timeline evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst | less\n  \
        preserve timeline bundle.tar.zst --around alert            # 15 minutes either side of the alert\n  \
        preserve timeline bundle.tar.zst --around '2026-11-29T02:41:00Z±10m' --source audit-logs --source redis-dlq\n  \
        preserve timeline bundle.tar.zst --id req-incident-7f3a   # every event carrying that id\n  \
        preserve timeline bundle.tar.zst --format csv -o timeline.csv\n  \
        preserve timeline bundle.tar.zst --format timesketch -o timeline.jsonl   # for Timesketch's importer\n\n\
        Events: service and Docker log lines (their own time, else Docker's), audit_events and\n\
        admin_audit_events rows, outbox rows, policy-set activations and other table rows with a time,\n\
        Redis stream entries (their id's time) and dead letters, pending entries (last delivery),\n\
        the triggering alerts and each collector's run. Each names its collector, artifact path and\n\
        line or record, service and instance, kind, a short message and the evidence ids in it.\n\
        Lines that give no event (no time, not the artifact's format, too long) are counted on stderr.\n\n\
        Exit codes: 0 written, 1 the bundle cannot be read (or was cut short: the events before the\n\
        cut are written), 2 usage error.")]
    Timeline {
        /// The bundle (`.tar.zst`, or `.tar.zst.age` with --identity).
        bundle: PathBuf,
        #[arg(long, value_enum, default_value_t)]
        format: preserve::timeline::Format,
        /// Only events within DURATION of TIME (`TIME±DURATION` or `TIME+-DURATION`, default 15m; TIME as RFC 3339,
        /// `now`, a duration ago, or `alert`: when the triggering alert started).
        #[arg(long, value_name = "TIME[±DURATION]")]
        around: Option<String>,
        /// Only events carrying this value in any id field (request_id, zone_id, session_id, jti, ...); may be
        /// repeated (any of them).
        #[arg(long = "id", value_name = "VALUE")]
        ids: Vec<String>,
        /// Only events of this collector (`audit-logs`; `trigger` for the alerts) or artifact path (or folder of
        /// them) in the bag; may be repeated.
        #[arg(long = "source", value_name = "NAME")]
        sources: Vec<String>,
        /// Write to FILE instead of stdout.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: Option<PathBuf>,
        /// An age identity file to decrypt an encrypted bundle with.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        /// Memory for events before they are sorted in a temporary directory (default 48MiB).
        #[arg(long, value_name = "SIZE", value_parser = parse_size)]
        memory: Option<u64>,
        /// Where that temporary directory is made (default: $TMPDIR).
        #[arg(long, value_name = "DIR")]
        spill_dir: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Write a bundle's report: one self-contained HTML page to open in a browser (with `[run] report = true`
    /// every new bundle holds one as `report.html`; this makes it for any bundle).
    #[command(after_help = "Examples:\n  \
        preserve report evidence/preserve-full-20261129T024500Z-1a2b3c4d.tar.zst -o report.html\n  \
        preserve report --identity ~/.config/preserve/identity.txt bundle.tar.zst.age -o report.html\n\n\
        The page shows the bundle's id, profile, trigger and window; the collectors; the findings with\n\
        the audit-chain rows at fault; events per minute per service with the alert's start marked; the\n\
        ids seen most around the alert and the errors near it; dead letters by reason and their oldest\n\
        entry's age; consumer-group lag and pending ages; policy-set and config changes. It loads and\n\
        runs nothing (a Content-Security-Policy forbids it): every value in it is the evidence's, escaped.\n\n\
        Exit codes: 0 written, 1 the bundle cannot be read (or was cut short: the report of what was\n\
        read is written), 2 usage error (FILE exists: it is never overwritten).")]
    Report {
        /// The bundle (`.tar.zst`, or `.tar.zst.age` with --identity).
        bundle: PathBuf,
        /// Where to write the page; must not exist yet.
        #[arg(long, short = 'o', value_name = "FILE")]
        output: PathBuf,
        /// An age identity file to decrypt an encrypted bundle with.
        #[arg(long, value_name = "FILE")]
        identity: Option<PathBuf>,
        #[command(flatten)]
        limits: LimitArgs,
    },
    /// Run the sidecar: take snapshots by itself when Alertmanager posts critical alerts.
    #[command(after_help = "Examples:\n  \
        PRESERVE_SERVE_TOKEN=file:/etc/preserve/serve-token preserve serve --config preserve.toml\n  \
        preserve serve --listen 127.0.0.1:9731 --out /srv/evidence\n  \
        preserve serve --log-format json   # JSON lines on stderr, for a log shipper\n\n\
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
        /// The log on stderr: `text` lines, or `json` lines (one object per event, its fields as keys) for a log
        /// shipper.
        #[arg(long, value_enum, value_name = "FORMAT", env = "PRESERVE_LOG_FORMAT", default_value_t)]
        log_format: serve::log::LogFormat,
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
    /// List the collectors and profiles available, or the bundles stored in S3 under s3://bucket/prefix.
    #[command(
        after_help = "Examples:\n  preserve list\n  preserve list --collectors /etc/preserve/collectors --json\n  \
        preserve list --config preserve.toml s3://evidence/caracal\n\n\
        For a store: each bundle with its profile, time, status, size, Object Lock (mode and retain-until,\n\
        legal hold) and seal (signature, timestamp, custody record), read from the store's listing, each\n\
        archive's HEAD and its .manifest.json (the public one for an encrypted bundle)."
    )]
    List {
        /// `s3://bucket/prefix`: list the bundles stored there (the endpoint and region come from [store]).
        location: Option<String>,
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
struct SealArgs {
    /// OpenSSH allowed_signers file: a signature (of the bundle or of a custody entry) counts only when its key is
    /// listed there, and is shown with its principal.
    #[arg(long, value_name = "FILE")]
    allowed_signers: Option<PathBuf>,
    /// PEM file of the CA certificates the timestamp's TSA must chain to.
    #[arg(long, value_name = "FILE")]
    tsa_ca: Option<PathBuf>,
    /// A bundle without a signature is not intact.
    #[arg(long)]
    require_signature: bool,
    /// A bundle without a timestamp is not intact.
    #[arg(long)]
    require_timestamp: bool,
    /// An age identity file (`AGE-SECRET-KEY-...`, as age-keygen writes) or an unencrypted OpenSSH private key, to
    /// decrypt an encrypted bundle (`.tar.zst.age`) and check what is inside; without it only the ciphertext's hash
    /// and the seal are checked.
    #[arg(long, value_name = "FILE")]
    identity: Option<PathBuf>,
}

impl SealArgs {
    fn options(&self) -> Result<seal::verify::Options, Failure> {
        let allowed_signers =
            self.allowed_signers.as_deref().map(seal::allowed::AllowedSigners::read).transpose().or_exit(2)?;
        let tsa_ca = self
            .tsa_ca
            .as_deref()
            .map(|p| seal::timestamp::read_ca_file(p).map_err(|e| format!("--tsa-ca {}: {e}", p.display())))
            .transpose()
            .or_exit(2)?;
        Ok(seal::verify::Options {
            allowed_signers,
            tsa_ca,
            require_signature: self.require_signature,
            require_timestamp: self.require_timestamp,
        })
    }
}

#[derive(Subcommand)]
enum CustodyCommand {
    /// Append a signed entry to a bundle's custody record (`<id>.custody.jsonl` beside it).
    #[command(after_help = "Examples:\n  \
        preserve custody add evidence/preserve-audit-tamper-20261129T024500Z-1a2b3c4d.tar.zst \\\n      \
        --action transferred --actor 'j.doe@example.org' --note 'handed to outside counsel, ticket IR-1234'\n  \
        preserve custody add bundle.tar.zst --action verified --key file:$HOME/.ssh/id_ed25519\n\n\
        The entry is signed with --key, or --agent-key through the SSH agent, or else the key of\n\
        [seal] in the site config. The archive is hashed and must be the one the record is about;\n\
        a record whose chain is broken is never extended.\n\n\
        Exit codes: 0 appended, 1 the record is broken or about another archive, or the key\n\
        cannot sign, 2 usage error.")]
    Add {
        bundle: PathBuf,
        #[arg(long, value_enum)]
        action: seal::custody::Action,
        /// Free text: who received it, the ticket, where it went.
        #[arg(long, default_value = "")]
        note: String,
        /// Who acts (default: $USER@<hostname>).
        #[arg(long)]
        actor: Option<String>,
        /// The actor's OpenSSH private key, by reference (`file:PATH` or `env:NAME`).
        #[arg(long, value_name = "REF", conflicts_with = "agent_key")]
        key: Option<CredentialRef>,
        /// Sign through the SSH agent ($SSH_AUTH_SOCK) with the key of this public key (a `.pub` file or the line).
        #[arg(long, value_name = "PUBKEY")]
        agent_key: Option<String>,
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show a bundle's custody record, each entry checked.
    #[command(after_help = "Examples:\n  preserve custody show bundle.tar.zst\n  \
        preserve custody show --json --allowed-signers allowed_signers bundle.tar.zst\n\n\
        Exit codes: 0 shown and whole, 1 no record, or a broken link (named), 2 usage error.")]
    Show {
        bundle: PathBuf,
        /// Print the entries as JSON.
        #[arg(long)]
        json: bool,
        /// Show each signer's principal from this OpenSSH allowed_signers file; a signer not in it breaks the chain.
        #[arg(long, value_name = "FILE")]
        allowed_signers: Option<PathBuf>,
    },
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

/// A `--max-bytes` that is not a size; bytesize says why.
#[derive(Debug, thiserror::Error)]
#[error("not a size like `500MiB` or `2GB`: {0}")]
struct NotASize(String);

fn parse_size(s: &str) -> Result<u64, NotASize> {
    s.parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(NotASize)
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
    /// Upload the bundle to the site config's `[store]` while it is written (S3, write-once, checked part by part).
    #[arg(long)]
    upload: bool,
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
        say(&format!("internal error at {at} (recorded in the manifest when inside a collector)"));
    }));
    // TLS (rediss://, Postgres sslmode) with ring, whichever library asks for rustls' process-wide default.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Snapshot(args) => snapshot_cmd(args),
        Command::Verify { bundle, json, limits, seal, config } => {
            verify_cmd(&bundle, json, &limits.limits(), &seal, config.as_deref())
        }
        Command::Custody(c) => custody_cmd(c),
        Command::Upload { bundle, config, json } => upload_cmd(&bundle, &config, json),
        Command::Inspect { bundle, json, limits } => inspect_cmd(&bundle, json, &limits.limits()),
        Command::List { location: Some(location), config, json } => list_store_cmd(&location, &config, json),
        Command::List { location: None, config, json } => list_cmd(&config, json),
        Command::Check { profiles, collectors, config, out, json } => {
            check_cmd(profiles, collectors, &config, out, json)
        }
        Command::Serve { config, listen, out, log_format } => serve_cmd(&config, listen, out, log_format),
        Command::Fingerprint { key, bundle, config, json } => fingerprint_cmd(key, bundle.as_deref(), &config, json),
        Command::Report { bundle, output, identity, limits } => {
            report_cmd(&bundle, &output, identity.as_deref(), limits.limits())
        }
        Command::Timeline { bundle, format, around, ids, sources, output, identity, memory, spill_dir, limits } => {
            let filter = TimelineFilter { around, ids, sources };
            let read = TimelineRead { identity, memory, spill_dir, limits: limits.limits() };
            timeline_cmd(&bundle, format, filter, output.as_deref(), read)
        }
    };
    let code = result.unwrap_or_else(|f| {
        say(&format!("error: {}", f.message));
        f.code
    });
    // Output a reader stopped taking is no error; output that could not be written is.
    let code = if STDOUT.load(Ordering::Relaxed) == 2 && code == 0 { 1 } else { code };
    ExitCode::from(code)
}

fn load(config: &ConfigArgs) -> Result<(Environment, Catalog), ConfigError> {
    let env = Environment::load(config.config.as_deref(), &ProcessEnv)?;
    let catalog = Catalog::load(&env, &config.collectors_dirs)?;
    Ok((env, catalog))
}

/// A command that could not do its work: what it says, and its exit code (`2` for what the operator must fix before
/// anything is tried, `1` otherwise).
struct Failure {
    code: u8,
    message: String,
}

/// Turns a library error into the command's [`Failure`], its text unchanged.
trait OrExit<T> {
    fn or_exit(self, code: u8) -> Result<T, Failure>;
}

impl<T, E: std::fmt::Display> OrExit<T> for Result<T, E> {
    fn or_exit(self, code: u8) -> Result<T, Failure> {
        self.map_err(|e| Failure { code, message: e.to_string() })
    }
}

fn runtime() -> Result<tokio::runtime::Runtime, Failure> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure { code: 1, message: format!("cannot start the runtime: {e}") })
}

fn snapshot_cmd(args: SnapshotArgs) -> Result<u8, Failure> {
    let (mut env, catalog) = load(&args.config).or_exit(2)?;
    if let Some(out) = &args.out {
        env.out_dir = out.clone();
    }
    let alerts = args.alert.as_deref().map(alert::read_alerts).transpose().or_exit(2)?.unwrap_or_default();
    let request = Request {
        profiles: args.profiles.clone(),
        collectors: args.collectors.clone(),
        since: args.since.clone(),
        until: args.until.clone(),
        alerts,
        trigger: None,
        upload: args.upload,
    };
    let plan = snapshot::plan(&env, &catalog, &request, jiff::Timestamp::now()).or_exit(2)?;
    if args.dry_run {
        if args.json {
            show_json(&plan.summary(&env));
        } else {
            show(render::Plan { plan: &plan, env: &env, site: &preserve::check::site(&env) });
        }
        return Ok(0);
    }
    let secrets = snapshot::resolve_secrets(&env, &plan).or_exit(2)?;

    let runtime = runtime()?;
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
    let outcome = result.or_exit(1)?;
    if args.json {
        show_json(&render::snapshot_json(&outcome));
    } else {
        show(format_args!("{}\n", outcome.bundle.archive.display()));
        // Each error was said as its collector ended, unless progress was not shown.
        let errors = args.quiet.then_some(if args.verbose { usize::MAX } else { progress::LINE });
        for line in progress::closing_lines(&outcome.manifest, &outcome.bundle.archive, hint.as_deref(), errors) {
            eprintln!("{line}");
        }
        if outcome.seal.configured() {
            eprintln!("preserve: seal: {}", outcome.seal.summary());
        }
        if let Some(u) = &outcome.upload {
            eprintln!("preserve: upload: {}", preserve::bundle::bounds::printable(&u.summary()));
        }
    }
    Ok(outcome.exit_code() as u8)
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

fn serve_cmd(
    config: &ConfigArgs,
    listen: Option<String>,
    out: Option<PathBuf>,
    log: serve::log::LogFormat,
) -> Result<u8, Failure> {
    serve::log::init(log);
    let (mut env, catalog) = load(config).or_exit(2)?;
    if let Some(l) = listen {
        env.listen = l;
    }
    if let Some(o) = out {
        env.out_dir = o;
    }
    let sidecar =
        serve::Sidecar::new(env, catalog).map_err(|e| Failure { code: e.exit_code(), message: e.to_string() })?;
    let runtime = runtime()?;
    let result = runtime.block_on(sidecar.run());
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    match result {
        Ok(in_time) => Ok(if in_time { 0 } else { 1 }),
        Err(e) => Err(Failure { code: e.exit_code(), message: e.to_string() }),
    }
}

fn check_cmd(
    profiles: Vec<String>,
    collectors: Vec<String>,
    config: &ConfigArgs,
    out: Option<PathBuf>,
    json: bool,
) -> Result<u8, Failure> {
    let (mut env, catalog) = load(config).or_exit(2)?;
    if let Some(out) = out {
        env.out_dir = out;
    }
    let profiles = if profiles.is_empty() && collectors.is_empty() { vec!["full".to_string()] } else { profiles };
    let request = Request { profiles, collectors, ..Default::default() };
    let plan = snapshot::plan(&env, &catalog, &request, jiff::Timestamp::now()).or_exit(2)?;
    let runtime = runtime()?;
    let report = runtime.block_on(preserve::check::run(&env, &plan.collectors));
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if json {
        show_json(&report);
    } else {
        show(render::Readiness(&report));
    }
    Ok(if report.all_can_run() { 0 } else { 3 })
}

fn verify_cmd(
    bundle: &std::path::Path,
    json: bool,
    limits: &Limits,
    seal_args: &SealArgs,
    config: Option<&std::path::Path>,
) -> Result<u8, Failure> {
    let options = seal_args.options()?;
    let identities = seal_args.identity.as_deref().map(seal::identities).transpose().or_exit(2)?.unwrap_or_default();
    let url = bundle.to_str().filter(|s| s.starts_with("s3://"));
    let verified = match url {
        None => seal::verify::check(verify::verify_decrypting(bundle, limits, &identities).or_exit(1)?, &options),
        Some(url) => {
            let object = preserve::store::remote::ObjectUrl::parse(url).or_exit(2)?;
            let site = Environment::load(config, &ProcessEnv).or_exit(2)?.store;
            let runtime = runtime()?;
            let scratch = std::env::temp_dir();
            let (report, guard) = runtime
                .block_on(preserve::store::remote::verify(site, &object, &scratch, *limits, identities))
                .or_exit(1)?;
            runtime.shutdown_timeout(std::time::Duration::from_secs(1));
            // The seal's side files are beside the fetched copy until the guard goes.
            let mut verified = seal::verify::check(report, &options);
            drop(guard);
            verified.bundle.archive = PathBuf::from(url);
            verified
        }
    };
    if json {
        show_json(&verified);
    } else {
        show(render::Verified { bundle, verified: &verified });
    }
    Ok(if verified.intact() { 0 } else { 1 })
}

fn upload_cmd(bundle: &std::path::Path, config: &ConfigArgs, json: bool) -> Result<u8, Failure> {
    let env = Environment::load(config.config.as_deref(), &ProcessEnv).or_exit(2)?;
    let settings = env.store.clone().ok_or(Failure {
        code: 2,
        message: "no [store] in the site config (give `[store] url = \"s3://bucket/prefix\"`)".into(),
    })?;
    let runtime = runtime()?;
    let sealer = seal::custody_signer(&env.seal, bundle);
    let custody = sealer.as_ref().map(|s| s as &dyn preserve::store::upload::Custody);
    let record = runtime.block_on(preserve::store::upload::upload_bundle(settings, bundle, custody)).or_exit(1)?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if json {
        show_json(&record);
    } else {
        show(format_args!("{}\n", preserve::bundle::bounds::printable(&record.summary())));
    }
    Ok(if record.confirmed() { 0 } else { 6 })
}

fn custody_cmd(command: CustodyCommand) -> Result<u8, Failure> {
    match command {
        CustodyCommand::Add { bundle, action, note, actor, key, agent_key, config } => {
            let source = match (key, agent_key) {
                (Some(key), _) => SignerSource::Key { key },
                (None, Some(given)) => {
                    let settings = SealSettings::resolve(preserve::config::SealConfig {
                        agent_key: Some(given),
                        ..Default::default()
                    })
                    .or_exit(2)?;
                    settings.signer.ok_or(Failure { code: 2, message: "--agent-key: no key".into() })?
                }
                (None, None) => {
                    Environment::load(config.config.as_deref(), &ProcessEnv).or_exit(2)?.seal.signer.ok_or(Failure {
                        code: 2,
                        message: "no key to sign with: give --key file:PATH or --agent-key, or set [seal] signing_key"
                            .into(),
                    })?
                }
            };
            let signer = seal::signer::Signer::load(&source).or_exit(1)?;
            let host = gethostname::gethostname().to_string_lossy().into_owned();
            let actor = actor
                .unwrap_or_else(|| format!("{}@{host}", std::env::var("USER").unwrap_or_else(|_| "unknown".into())));
            let path = seal::custody::path_of(&bundle)
                .ok_or(Failure { code: 2, message: format!("{}: not a bundle (`<id>.tar.zst`)", bundle.display()) })?;
            let sha256 = seal::custody::archive_sha256(&bundle).or_exit(1)?;
            let new = seal::custody::NewEntry { action, actor: &actor, note: &note, bundle_sha256: &sha256 };
            let entry = seal::custody::append(&path, &signer, &new, &host).or_exit(1)?;
            say(&format!(
                "custody: entry {} ({}) appended to {} and signed by {}",
                entry.seq,
                entry.action.as_str(),
                path.display(),
                entry.key
            ));
            Ok(0)
        }
        CustodyCommand::Show { bundle, json, allowed_signers } => {
            let allowed = allowed_signers.as_deref().map(seal::allowed::AllowedSigners::read).transpose().or_exit(2)?;
            let path = seal::custody::path_of(&bundle)
                .ok_or(Failure { code: 2, message: format!("{}: not a bundle (`<id>.tar.zst`)", bundle.display()) })?;
            let text = seal::custody::read(&path).or_exit(1)?.ok_or(Failure {
                code: 1,
                message: format!("{}: no custody record beside this bundle", path.display()),
            })?;
            let sha256 = seal::custody::archive_sha256(&bundle).ok();
            let chain = seal::custody::check(&text, sha256.as_deref(), allowed.as_ref());
            if json {
                show_json(&chain);
            } else {
                show(render::Custody { path: &path, chain: &chain });
            }
            Ok(if chain.broken.is_some() { 1 } else { 0 })
        }
    }
}

fn report_cmd(
    bundle: &std::path::Path,
    output: &std::path::Path,
    identity: Option<&std::path::Path>,
    limits: Limits,
) -> Result<u8, Failure> {
    use preserve::{report, timeline};
    let identities = identity.map(seal::identities).transpose().or_exit(2)?.unwrap_or_default();
    let opts = timeline::Options { limits, identities, ..Default::default() };
    let manifest = timeline::manifest(bundle, &opts).or_exit(1)?;
    let (inputs, walked) = report::gather(bundle, &manifest, &opts).or_exit(1)?;
    let page = report::render(&manifest, &inputs);
    let mut file = new_output(output)?;
    file.write_all(page.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", output.display()))
        .or_exit(1)?;
    show(format_args!("{}\n", output.display()));
    Ok(said_walk(&walked, "the report shows what was read before that point"))
}

/// `-o FILE`, created new: a link or a file already at FILE is never written through.
fn new_output(path: &std::path::Path) -> Result<std::fs::File, Failure> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| format!("-o {}: {e}", path.display()))
        .or_exit(2)
}

/// Says what reading a bundle refused or where it was cut (`kept` says what of it was written anyway); the exit
/// code: 1 when cut, else 0.
fn said_walk(walked: &preserve::timeline::Walked, kept: &str) -> u8 {
    for entry in &walked.unsafe_entries {
        say(&format!("warning: entry `{entry}` refused for its path (not read)"));
    }
    match &walked.cut {
        Some(cut) => {
            say(&format!("error: the archive ends early ({cut}); {kept}"));
            1
        }
        None => 0,
    }
}

struct TimelineFilter {
    around: Option<String>,
    ids: Vec<String>,
    sources: Vec<String>,
}

struct TimelineRead {
    identity: Option<PathBuf>,
    memory: Option<u64>,
    spill_dir: Option<PathBuf>,
    limits: Limits,
}

fn timeline_cmd(
    bundle: &std::path::Path,
    format: preserve::timeline::Format,
    f: TimelineFilter,
    output: Option<&std::path::Path>,
    read: TimelineRead,
) -> Result<u8, Failure> {
    use preserve::timeline::{self, Filter, Options};
    let identities = read.identity.as_deref().map(seal::identities).transpose().or_exit(2)?.unwrap_or_default();
    let opts = Options {
        limits: read.limits,
        identities,
        budget: read.memory.map_or(timeline::merge::DEFAULT_BUDGET, |m| m.min(usize::MAX as u64) as usize),
        spill_dir: read.spill_dir,
    };
    let manifest = timeline::manifest(bundle, &opts).or_exit(1)?;
    let between = f
        .around
        .as_deref()
        .map(|a| Filter::around(a, jiff::Timestamp::now(), timeline::alert_start(&manifest)))
        .transpose()
        .or_exit(2)?;
    let filter = Filter { between, ids: f.ids, sources: f.sources };
    let sink: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(std::io::BufWriter::with_capacity(1 << 20, new_output(path)?)),
        None => Box::new(std::io::BufWriter::with_capacity(1 << 20, std::io::stdout().lock())),
    };
    let mut writer = timeline::Writer::new(format, sink).or_exit(1)?;
    let result = timeline::read(bundle, &manifest, &opts, &filter, &mut writer);
    let summary = match result {
        Ok(s) => s,
        Err(timeline::Error::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
        Err(e) => return Err(e).or_exit(1),
    };
    match writer.finish() {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(0),
        r => r.or_exit(1)?,
    }
    let s = &summary.skipped;
    say(&format!(
        "{} events from {} artifacts and the manifest{}",
        summary.events,
        summary.artifacts,
        if s.untimed + s.malformed + s.oversize > 0 {
            format!(
                "; left out: {} lines or rows without a time, {} not in their artifact's format, {} over 1 MiB",
                s.untimed, s.malformed, s.oversize
            )
        } else {
            String::new()
        }
    ));
    Ok(said_walk(&summary.walked, "the events before that point are written"))
}

fn inspect_cmd(bundle: &std::path::Path, json: bool, limits: &Limits) -> Result<u8, Failure> {
    if preserve::bundle::archive_id(bundle).is_some_and(|(_, encrypted)| encrypted) {
        // Encrypted: only the public manifest beside it can be shown.
        let m = verify::read_public_manifest(bundle, limits).or_exit(1)?;
        if json {
            show_json(&m);
        } else {
            show(render::InspectPublic(&m));
            show(format_args!("seal:     {}\n", seal::verify::glance(bundle)));
        }
        return Ok(0);
    }
    let m = verify::read_manifest(bundle, limits).or_exit(1)?;
    if json {
        show_json(&m);
    } else {
        show(render::Inspect(&m));
        show(format_args!("seal:     {}\n", seal::verify::glance(bundle)));
    }
    Ok(0)
}

fn fingerprint_cmd(
    key: Option<CredentialRef>,
    bundle: Option<&std::path::Path>,
    config: &ConfigArgs,
    json: bool,
) -> Result<u8, Failure> {
    let source = match key {
        Some(r) => KeySource::Reference(r),
        None => {
            Environment::load(config.config.as_deref(), &ProcessEnv).or_exit(2)?.fingerprint_key.ok_or(Failure {
                code: 2,
                message: "no fingerprint key: give --key file:PATH, or set [redaction] fingerprint_key".into(),
            })?
        }
    };
    let key = FingerprintKey::site_from(&source).or_exit(2)?;
    let manifest = bundle.map(preserve::bundle::fingerprints::bundle_manifest).transpose().or_exit(2)?;
    let checked = preserve::bundle::fingerprints::check_candidates(&key, manifest.as_ref(), std::io::stdin().lock())
        .or_exit(2)?;
    if json {
        show_json(&checked);
    } else {
        show(render::Fingerprints(&checked));
    }
    let matched = checked.iter().any(|c| c.matches.as_ref().is_none_or(|m| !m.is_empty()));
    Ok(if manifest.is_some() && !matched { 1 } else { 0 })
}

fn list_store_cmd(location: &str, config: &ConfigArgs, json: bool) -> Result<u8, Failure> {
    let location = preserve::config::S3Location::parse(location).or_exit(2)?;
    let site = Environment::load(config.config.as_deref(), &ProcessEnv).or_exit(2)?.store;
    let runtime = runtime()?;
    let listed = runtime.block_on(preserve::store::remote::list(site, &location)).or_exit(1)?;
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if json {
        show_json(&listed);
    } else {
        show(render::StoredBundles(&listed));
    }
    Ok(0)
}

fn list_cmd(config: &ConfigArgs, json: bool) -> Result<u8, Failure> {
    let (_env, catalog) = load(config).or_exit(2)?;
    if json {
        show_json(&render::list_json(&catalog));
    } else {
        show(render::List(&catalog));
    }
    Ok(0)
}
