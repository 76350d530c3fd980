//! What counts as a secret: key names (Caracal's own list, matched as its logger does, by case-insensitive
//! substring), the evidence ids that must survive although a substring rule would catch them, and value patterns
//! for credentials whatever key holds them.

use regex::bytes::Regex;

/// Caracal's `SecretKeys` list (packages/core/go/logging/redact.go) plus names of its own secrets it would miss: a key whose
/// name contains one of these, ignoring case, `_` and `-`, holds a secret. `apikey` catches `apiKey`/`api_key`.
const SECRET_KEY_PARTS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "apikey",
    "privatekey",
    "session",
    "assertion",
    "authorization",
    "cookie",
    "hmac",
    "signature",
    "credential",
    // Caracal's `METRICS_BEARER`.
    "bearer",
    "passphrase",
    "encryptionkey",
    "signingkey",
    "clientkey",
    "masterkey",
    "sharedkey",
    "authkey",
    "requirepass",
    "masterauth",
];

/// Short names a secret goes by, matched at the end of the key (normalized): `DB_PASS`, `SMTP_PWD`, `REDIS_PW`,
/// `pwd`, `auth`, `x-auth`. As substrings they would catch `passenger` or `author`.
const SECRET_KEY_ENDINGS: &[&str] = &["pass", "pwd", "pw", "auth"];

/// Keys ending like a secret's short name that are not one.
const NOT_SECRET_ENDINGS: &[&str] = &["oauth", "bypass", "compass", "nopass"];

/// Cookies that carry a login session, as their servers name them. Matched on the key as written, ignoring case
/// only: Caracal's evidence ids are `session_id` and `sessionId`, which these are not.
const SESSION_COOKIES: &[&str] =
    &["sessionid", "jsessionid", "phpsessid", "sessid", "connect.sid", "asp.net_sessionid"];

/// The fragments a secret key shows in raw text, separators included (`api_key` normalizes to `apikey`): a line
/// holding none of them has no secret key.
pub fn raw_key_fragments() -> impl Iterator<Item = &'static str> {
    SECRET_KEY_PARTS
        .iter()
        .flat_map(|p| match *p {
            "apikey" => &["apikey", "api_key", "api-key"][..],
            "privatekey" => &["privatekey", "private_key", "private-key"][..],
            "encryptionkey" => &["encryptionkey", "encryption_key", "encryption-key"][..],
            "signingkey" => &["signingkey", "signing_key", "signing-key"][..],
            "clientkey" => &["clientkey", "client_key", "client-key"][..],
            "masterkey" => &["masterkey", "master_key", "master-key"][..],
            "sharedkey" => &["sharedkey", "shared_key", "shared-key"][..],
            "authkey" => &["authkey", "auth_key", "auth-key"][..],
            _ => std::slice::from_ref(p),
        })
        // `pw` as a key's ending, with what follows a key: a two-byte fragment would make the SIMD prefilter let
        // through so many candidates that it cost a log's redaction several percent (docs/performance.md).
        .chain(SECRET_KEY_ENDINGS.iter().filter(|e| **e != "pw"))
        .chain(&["pw=", "pw:", "pw\"", "pw'", "pw ", "pw\\", "pw\t"])
        .chain(&["sessid", "connect.sid"])
        .copied()
        .chain(SECRET_FILE_KEYS.iter().copied())
}

/// What the names of [`is_secret_file_key`] show in raw text.
const SECRET_FILE_KEYS: &[&str] = &["tls.key", ".dockerconfigjson", ".dockercfg"];

/// Whether a key names a secret *file* rather than holding a secret word: the entries of a Kubernetes Secret
/// (`tls.key`, `.dockerconfigjson`, `.dockercfg`), wherever they appear. `ca.crt` and `tls.crt` are certificates,
/// public; other `*.key` names are too often a cache's or a map's key to be taken for a file.
pub fn is_secret_file_key(key: &[u8]) -> bool {
    SECRET_FILE_KEYS.iter().any(|k| key.eq_ignore_ascii_case(k.as_bytes()))
}

/// Evidence ids: never redacted, though "session" would match them. Compared with the key normalized (lower case,
/// no `_`/`-`): `session_id`, `sessionId`, `agent_session_id`, `source_session_id`, ... all end in `sessionid`.
const EVIDENCE_ID_SUFFIXES: &[&str] = &["sessionid", "sessionids", "delegationedgeid", "requestid", "zoneid"];

/// Keys that name something *about* a secret, not the secret (compared normalized, by suffix): where it is
/// (`POSTGRES_PASSWORD_FILE`, `secret_path`: Caracal's `NAME_FILE` variables are evidence of how a service was
/// wired), what kind or state it is in (`token_type`, `session_status`, `token_count`, `session_ttl_seconds`,
/// `token_expires_at`), and the audit ledger's own digests (`chain_hmac`, `ingest_signature`, as rows and as the
/// Audit API's `ChainHMAC`): a MAC over evidence is evidence.
const DESCRIPTIVE_SUFFIXES: &[&str] = &[
    "file",
    "path",
    "dir",
    "type",
    "status",
    "state",
    "count",
    "total",
    "seconds",
    "at",
    "chainhmac",
    "ingestsignature",
    // Settings about secrets, not secrets: which backend holds them (`CARACAL_SECRET_BACKEND=builtin`, the very
    // question of a secret exposure), limits, counts, durations and switches (`API_OPERATOR_AI_MAX_OUTPUT_TOKENS`,
    // `STS_SECRET_VERIFY_CONCURRENCY`, `SESSION_RETENTION_DAYS`, `CARACAL_PASSWORD_SIGNUP`), and where they are.
    "backend",
    "provider",
    "store",
    "concurrency",
    "days",
    "hours",
    "minutes",
    "signup",
    "limit",
    "size",
    "ttl",
    "timeout",
    "interval",
    "enabled",
    "disabled",
    "version",
    "algorithm",
    "length",
    "name",
    "url",
    "uri",
    "endpoint",
    "mode",
    "policy",
    "rotation",
    "retention",
];

/// Whether a value under `key` must be redacted. Called for every key of every line that could hold one: no
/// allocation, one automaton pass over the key normalized on the stack.
pub fn is_secret_key(key: &[u8]) -> bool {
    static PARTS: std::sync::LazyLock<aho_corasick::AhoCorasick> = std::sync::LazyLock::new(|| {
        aho_corasick::AhoCorasick::builder()
            .kind(Some(aho_corasick::AhoCorasickKind::DFA))
            .build(SECRET_KEY_PARTS)
            .expect("literal patterns always build")
    });
    // The shell's working directories, as environments (`/proc/<pid>/environ`, `env`) always spell them.
    if key.is_empty() || key.len() > 128 || key == b"PWD" || key == b"OLDPWD" {
        return false;
    }
    if is_secret_file_key(key) {
        return true;
    }
    // Lower case, without `_` and `-`.
    let mut buf = [0u8; 128];
    let mut n = 0;
    for b in key.iter().filter(|b| !matches!(b, b'_' | b'-')) {
        buf[n] = b.to_ascii_lowercase();
        n += 1;
    }
    let k = &buf[..n];
    if SESSION_COOKIES.iter().any(|c| key.eq_ignore_ascii_case(c.as_bytes())) && key != b"sessionId" {
        return true;
    }
    let named = PARTS.is_match(k)
        || (SECRET_KEY_ENDINGS.iter().any(|s| k.ends_with(s.as_bytes()))
            && !NOT_SECRET_ENDINGS.iter().any(|s| k.ends_with(s.as_bytes())));
    named
        && !EVIDENCE_ID_SUFFIXES.iter().any(|s| k.ends_with(s.as_bytes()))
        && !DESCRIPTIVE_SUFFIXES.iter().any(|s| k.ends_with(s.as_bytes()))
        && !is_token_budget(k)
}

/// A limit counted in (language-model) tokens, `API_OPERATOR_AI_MAX_OUTPUT_TOKENS`: a number of tokens, not one.
/// `ADMIN_TOKENS` (a list of them) is not.
fn is_token_budget(normalized: &[u8]) -> bool {
    normalized.ends_with(b"tokens")
        && [&b"max"[..], b"limit", b"budget"].iter().any(|w| memchr::memmem::find(normalized, w).is_some())
}

/// Values kept even under a secret key: nothing (`""`), numbers and booleans (`token_count=5`, `session_ttl: 3600`
/// are evidence, and no credential is a short number), where a secret is kept (an absolute file path,
/// `GOOGLE_APPLICATION_CREDENTIALS=/run/secrets/gcp.json`) and references to a secret rather than its value
/// (`password = "env:REDIS_PASSWORD"`). Variable references (`${POSTGRES_PASSWORD}`) count only in configuration
/// (`references`): a service's log shows resolved values, so there `$HUNTER2` is a password.
pub fn is_harmless(v: &[u8], references: bool) -> bool {
    let t = v.trim_ascii();
    if is_file_path(t) {
        return true;
    }
    if !references && t.first() == Some(&b'$') && t.len() > 1 {
        return false;
    }
    is_harmless_value(v)
}

/// An absolute path of plain path characters with a folder in it: `/run/secrets/gcp.json`.
fn is_file_path(v: &[u8]) -> bool {
    v.len() > 3
        && v[0] == b'/'
        && v[1..].contains(&b'/')
        && !v.contains(&b'@')
        && v.iter().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'_' | b'-'))
}

/// [`is_harmless`] for configuration, where variable references are kept.
pub fn is_harmless_value(v: &[u8]) -> bool {
    let v = v.trim_ascii();
    if v.is_empty() || v.len() <= 1 {
        return true;
    }
    let digits = v.strip_prefix(b"-").unwrap_or(v);
    if digits.len() <= 9 && digits.iter().all(|b| b.is_ascii_digit() || *b == b'.') {
        return true;
    }
    let lower = v.to_ascii_lowercase();
    if matches!(&lower[..], b"true" | b"false" | b"null" | b"none" | b"yes" | b"no" | b"on" | b"off" | b"~") {
        return true;
    }
    // An outcome, as logs write one after a secret's short name (`auth: denied`), is not the secret.
    if matches!(
        &lower[..],
        b"ok"
            | b"denied"
            | b"failed"
            | b"failure"
            | b"success"
            | b"succeeded"
            | b"required"
            | b"optional"
            | b"disabled"
            | b"enabled"
            | b"invalid"
            | b"expired"
            | b"missing"
            | b"rejected"
            | b"granted"
            | b"unauthorized"
            | b"forbidden"
    ) {
        return true;
    }
    // preserve's own credential references (`password = "env:REDIS_PASSWORD"`) name a secret, never hold one.
    if (v.starts_with(b"env:") || v.starts_with(b"file:")) && !v.contains(&b' ') {
        return true;
    }
    // `${NAME}`, or `$NAME` only in the shape of an environment variable's name: upper case words, digits only
    // after an `_` (`$POSTGRES_PASSWORD`, `$HOME`, `$DB_PASSWORD_2`). `$Hunter2023` and `$X7K2QZ9` are passwords.
    (v.starts_with(b"${") && v.ends_with(b"}") && !v[2..v.len() - 1].contains(&b'}'))
        || is_variable_name(&v[1..]) && v[0] == b'$'
}

/// An environment variable's name as people write them: upper-case words joined by `_`, a digit only where a word
/// starts after `_` or ends one.
fn is_variable_name(name: &[u8]) -> bool {
    let mut words = name.split(|b| *b == b'_');
    !name.is_empty()
        && name[0].is_ascii_uppercase()
        && words.all(|w| {
            let letters = w.iter().take_while(|b| b.is_ascii_uppercase()).count();
            w[letters..].iter().all(u8::is_ascii_digit)
        })
}

/// A value pattern: a credential recognised by its shape, whatever holds it.
pub struct Pattern {
    pub rule: &'static str,
    pub regex: Regex,
    /// The capture group holding the secret; the rest of the match is kept.
    pub group: usize,
    /// Fragments (lower case) one of which every match holds, ignoring case: a text without any is not searched.
    pub any: &'static [&'static str],
    /// Fragments every match holds besides.
    pub all: &'static [&'static str],
}

/// Literal fragments one of which every pattern match contains: lines with none of them skip the regexes.
/// Matched ignoring ASCII case.
pub const PATTERN_ANCHORS: &[&str] = &[
    "://",
    "eyJ",
    "bearer",
    "basic",
    "password",
    "AKIA",
    "ASIA",
    "AIza",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "PRIVATE KEY",
    // Command lines (`--password X`, `--requirepass X`, `redis-cli -a X`, `mysql -pX`, `curl -u user:X`) and
    // `Authorization: <scheme> X`.
    "pass",
    "pwd",
    "auth",
    "token",
    "secret",
    "api-key",
    "apikey",
    "access-key",
    "redis-cli",
    "mysql",
    "mariadb",
    " -u ",
    "--user",
    " -U ",
];

pub fn patterns() -> Vec<Pattern> {
    let p = |rule, re: &str, group, any: &'static [&'static str]| Pattern {
        rule,
        regex: Regex::new(re).expect("valid regex"),
        group,
        any,
        all: &[],
    };
    let mut url =
        p("url-password", r#"(?i)\b[a-z][a-z0-9+.\-]*://[^\s:/@"'<>\\]*:([^\s"'<>\\]+)@[^\s@/"'<>\\]*"#, 1, &["://"]);
    url.all = &["@"];
    vec![
        // A whole PEM private key on one line: a JSON string or an escaped log field holds its newlines as `\n`.
        p(
            "private-key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----(.+?)-----END [A-Z0-9 ]*PRIVATE KEY-----",
            1,
            &["private key"],
        ),
        // The password may hold `/` and `@` unencoded: it runs to the last `@` before the host.
        url,
        p("bearer-token", r"(?i)\bbearer\s+([A-Za-z0-9\-._~+/]{8,}=*)", 1, &["bearer"]),
        // Basic credentials only where they are an Authorization value: "basic" alone is a common word.
        p(
            "basic-auth",
            r#"(?i)\bauthorization["']?\s*[:=]\s*["']?basic\s+([A-Za-z0-9+/]{8,}={0,2})"#,
            1,
            &["authorization"],
        ),
        // `ALTER ROLE … PASSWORD '…'`, `CREATE USER … WITH PASSWORD '…'`, as `pg_stat_activity` shows statements.
        // Only an `E'…'` string has backslash escapes; in the others a backslash is itself, and `\'` ends them. A
        // statement cut short (`pg_stat_activity` keeps its first 1 KiB) ends the string where it is cut.
        p("sql-password", r"(?i)\bpassword\s+E'((?:[^'\\]|''|\\.)+)(?:'|$)", 1, &["password"]),
        p("sql-password", r"(?i)\bpassword\s+(?:U&)?'((?:[^']|'')+)(?:'|$)", 1, &["password"]),
        // Dollar quoting: `PASSWORD $$x$$`, `PASSWORD $tag$x$tag$`.
        p("sql-password", r"(?i)\bpassword\s+\$[A-Za-z_0-9]*\$(.+?)\$[A-Za-z_0-9]*\$", 1, &["password"]),
        // `Authorization: Token X`, any scheme: the credential after the scheme's name.
        p(
            "auth-header",
            r#"(?i)\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?:token|bearer|basic|digest|apikey|api-key|key|sso-key|negotiate|ntlm|hmac|signature)\s+([^\s"',]+)"#,
            1,
            &["authorization"],
        ),
        // Flags of command lines that take a credential: `--password X`, `--password=X`, `--requirepass X`.
        p(
            "command-line",
            r#"(?i)(?:^|[\s"'])--(?:[a-z0-9]+-)*(?:password|passwd|pass|pwd|passphrase|requirepass|masterauth|auth|token|secret|api-?key|client-secret|access-key|secret-key)(?:\s+|=)("[^"]*"|'[^']*'|[^\s"'-][^\s"']*)"#,
            1,
            &["--", "pass", "pwd", "auth", "token", "secret", "api-key", "apikey", "access-key"],
        ),
        // `redis-cli -a X`, `mysql -pX`, `curl -u user:X` (`--user`, `--proxy-user` too).
        p("command-line", r#"\bredis-cli\b[^\n]*?\s-a\s+("[^"]*"|'[^']*'|[^\s"']+)"#, 1, &["redis-cli"]),
        p(
            "command-line",
            r#"\b(?:mysql|mysqldump|mysqladmin|mariadb)\b[^\n]*?\s-p([^\s"']+)"#,
            1,
            &["mysql", "mariadb"],
        ),
        p(
            "command-line",
            r#"(?:^|\s)(?:-u|--user|--proxy-user|-U)\s+["']?[^\s:"']*:([^\s"']+?)["']?(?:\s|$)"#,
            1,
            &["-u", "--"],
        ),
        p("jwt", r"\b(eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*)", 1, &["eyj"]),
        p("aws-access-key", r"\b((?:AKIA|ASIA)[0-9A-Z]{16})\b", 1, &["akia", "asia"]),
        p("google-api-key", r"\b(AIza[0-9A-Za-z_\-]{35})", 1, &["aiza"]),
        p(
            "github-token",
            r"\b(gh[pousr]_[A-Za-z0-9]{36,255}|github_pat_[A-Za-z0-9_]{22,255})",
            1,
            &["ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"],
        ),
        p("slack-token", r"\b(xox[abposr]-[A-Za-z0-9-]{10,})", 1, &["xox"]),
    ]
}

/// The first line of a PEM private key whose body follows on the next lines, and its last line.
pub fn pem_begin() -> Regex {
    Regex::new(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----").expect("valid regex")
}
pub fn pem_end() -> Regex {
    Regex::new(r"-----END [A-Z0-9 ]*PRIVATE KEY-----").expect("valid regex")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caracal_secret_keys_match_in_every_spelling_but_evidence_ids_do_not() {
        for k in [
            "password",
            "POSTGRES_PASSWORD",
            "postgresPassword",
            "client_secret",
            "clientSecret",
            "access_token",
            "X-Api-Key",
            "apiKey",
            "private_key",
            "Authorization",
            "set-cookie",
            "AUDIT_HMAC_KEY",
            "signature",
            "session",
            "assertion",
            "AWS_SECRET_ACCESS_KEY",
            "tls.key",
            ".dockerconfigjson",
            ".DOCKERCFG",
        ] {
            assert!(is_secret_key(k.as_bytes()), "{k}");
        }
        for k in [
            "session_id",
            "agent_session_id",
            "sessionId",
            "source_session_id",
            "delegation_edge_id",
            "request_id",
            "zone_id",
            "POSTGRES_PASSWORD_FILE",
            "token_type",
            "session_status",
            "token_expires_at",
            "chain_hmac",
            "ChainHMAC",
            "ingest_signature",
            "msg",
            "level",
            "user",
            "tls.crt",
            "ca.crt",
            "redis.key",
        ] {
            assert!(!is_secret_key(k.as_bytes()), "{k}");
        }
    }

    #[test]
    fn numbers_booleans_and_variable_references_are_kept() {
        for v in
            ["", "5", "3600", "true", "off", "${POSTGRES_PASSWORD}", "$TOKEN", "env:X", "file:/run/secrets/x", "denied"]
        {
            assert!(is_harmless_value(v.as_bytes()), "{v}");
        }
        for v in ["hunter2", "0123456789abcdef", "${A}x", "s3cr3t", "$Hunter2023"] {
            assert!(!is_harmless_value(v.as_bytes()), "{v}");
        }
    }
}
