//! SQL helpers of the `postgres` source: connection settings, identifier quoting, named parameters (bound through
//! `set_config`, never spliced), and DDL from the catalog.

use std::str::FromStr;

use tokio_postgres::{Client, Config};

use crate::config::{CredentialRef, Environment};

/// Connection settings from the site: a URL (or Caracal's rendered `databaseUrl` file) and a password reference,
/// and the TLS the URL (or `PGSSLMODE`) asks for.
pub fn connect_config(env: &Environment) -> Result<(Config, super::tls::Tls), super::Error> {
    use super::{Error, UrlError};
    let ep = &env.postgres;
    let (url, password) = match (ep.url().expose_secret().is_empty(), &ep.password) {
        (true, Some(CredentialRef::File(path))) => {
            let url = CredentialRef::File(path.clone()).resolve().map_err(Error::NoUrlNorDatabaseUrl)?;
            (url.expose_secret().to_string(), None)
        }
        (true, _) => return Err(Error::NoUrl),
        (false, Some(r)) => match r.resolve() {
            Ok(p) => (ep.url().expose_secret().to_string(), Some(p)),
            Err(_) if ep.password_is_default => (ep.url().expose_secret().to_string(), None),
            Err(e) => return Err(Error::Password(e)),
        },
        (false, None) => (ep.url().expose_secret().to_string(), None),
    };
    let bad_url = |source| Error::Url { display: ep.display.clone(), source };
    let (url, tls) = super::tls::split(&url, |k| std::env::var(k).ok()).map_err(|e| bad_url(UrlError::Tls(e)))?;
    let mut config = Config::from_str(&url).map_err(|e| bad_url(UrlError::Parse(e)))?;
    config.ssl_mode(tls.ssl_mode());
    if let Some(user) = &ep.username {
        config.user(user);
    }
    if let Some(p) = password
        && config.get_password().is_none()
    {
        config.password(p.expose_secret());
    }
    config.application_name("preserve").connect_timeout(std::time::Duration::from_secs(10));
    Ok((config, tls))
}

/// A quoted identifier: `"a""b"`.
pub fn ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// A quoted literal, for the one place a value must be SQL text (`SET TRANSACTION SNAPSHOT` takes no parameter;
/// the value is the server's own snapshot id).
pub fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `schema.table` or `table` (schema `public`).
pub fn split_name(name: &str) -> (String, String) {
    match name.split_once('.') {
        Some((s, t)) => (s.to_string(), t.to_string()),
        None => ("public".to_string(), name.to_string()),
    }
}

/// A name as a file name: unusual characters become `_`.
pub fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

/// Whether a column matches one of the exclusion patterns (`client_secret_hash`, `*_ct`).
pub fn excluded(column: &str, patterns: &[String]) -> bool {
    patterns.iter().any(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches(column)))
}

/// The setting that carries parameter `name`'s value for the duration of the transaction.
pub fn param_setting(name: &str) -> String {
    format!("preserve.p_{name}")
}

/// What is wrong with a table's `where` filter.
#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("unterminated string literal")]
    UnterminatedLiteral,
}

/// Walks a filter, calling `on_param` for each `:name` outside string literals and `::` casts.
fn scan(filter: &str, mut on_param: impl FnMut(&str), mut on_text: impl FnMut(&str)) -> Result<(), FilterError> {
    let b = filter.as_bytes();
    let (mut i, mut last) = (0, 0);
    while i < b.len() {
        match b[i] {
            b'\'' => {
                i += 1;
                while i < b.len() && b[i] != b'\'' {
                    i += 1;
                }
                if i >= b.len() {
                    return Err(FilterError::UnterminatedLiteral);
                }
                i += 1;
            }
            b':' if b.get(i + 1) == Some(&b':') => i += 2,
            b':' if b.get(i + 1).is_some_and(|c| c.is_ascii_alphabetic() || *c == b'_') => {
                let start = i + 1;
                let mut end = start;
                while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
                    end += 1;
                }
                on_text(&filter[last..i]);
                on_param(&filter[start..end]);
                last = end;
                i = end;
            }
            _ => i += 1,
        }
    }
    on_text(&filter[last..]);
    Ok(())
}

/// The parameter names a filter uses.
pub fn bind_names(filter: &str) -> Result<Vec<String>, FilterError> {
    let mut names = Vec::new();
    scan(filter, |n| names.push(n.to_string()), |_| {})?;
    names.sort();
    names.dedup();
    Ok(names)
}

/// The filter with each `:name` replaced by a read of its setting (`:since`/`:until` as `timestamptz`).
pub fn substitute(filter: &str) -> Result<String, FilterError> {
    let out = std::cell::RefCell::new(String::new());
    scan(
        filter,
        |n| {
            let read = format!("current_setting({})", literal(&param_setting(n)));
            out.borrow_mut().push_str(&if n == "since" || n == "until" {
                format!("({read})::timestamptz")
            } else {
                read
            });
        },
        |t| out.borrow_mut().push_str(t),
    )?;
    Ok(out.into_inner())
}

/// The server's message for an error, with its SQLSTATE (tokio-postgres' own Display says only "db error").
pub fn describe_error(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => {
            let mut s = e.to_string();
            if let Some(src) = std::error::Error::source(e) {
                s.push_str(&format!(": {src}"));
            }
            s
        }
    }
}

/// The table's definition reconstructed from the catalog: columns, defaults, constraints, partition key, indexes,
/// row-level security and its policies, triggers.
pub async fn table_ddl(client: &Client, schema: &str, table: &str) -> Result<String, tokio_postgres::Error> {
    let rel = client
        .query_one(
            "SELECT c.oid::int8, c.relrowsecurity, c.relforcerowsecurity, \
             CASE WHEN c.relkind = 'p' THEN pg_get_partkeydef(c.oid) END \
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2",
            &[&schema, &table],
        )
        .await?;
    let oid: i64 = rel.get(0);
    let name = format!("{}.{}", ident(schema), ident(table));
    let mut lines = Vec::new();
    for r in client
        .query(
            "SELECT a.attname::text, format_type(a.atttypid, a.atttypmod), a.attnotnull, pg_get_expr(d.adbin, d.adrelid) \
             FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum \
             WHERE a.attrelid = $1::int8::oid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum",
            &[&oid],
        )
        .await?
    {
        let mut l = format!("    {} {}", ident(r.get::<_, &str>(0)), r.get::<_, String>(1));
        if let Some(d) = r.get::<_, Option<String>>(3) {
            l.push_str(&format!(" DEFAULT {d}"));
        }
        if r.get::<_, bool>(2) {
            l.push_str(" NOT NULL");
        }
        lines.push(l);
    }
    for r in client
        .query("SELECT conname::text, pg_get_constraintdef(oid) FROM pg_constraint WHERE conrelid = $1::int8::oid ORDER BY conname", &[&oid])
        .await?
    {
        lines.push(format!("    CONSTRAINT {} {}", ident(r.get::<_, &str>(0)), r.get::<_, String>(1)));
    }
    let mut ddl =
        format!("-- reconstructed by preserve from the catalog\nCREATE TABLE {name} (\n{}\n)", lines.join(",\n"));
    if let Some(key) = rel.get::<_, Option<String>>(3) {
        ddl.push_str(&format!(" PARTITION BY {key}"));
    }
    ddl.push_str(";\n");
    for r in client
        .query(
            "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = $1::int8::oid ORDER BY indexrelid",
            &[&oid],
        )
        .await?
    {
        ddl.push_str(&format!("{};\n", r.get::<_, String>(0)));
    }
    if rel.get::<_, bool>(1) {
        ddl.push_str(&format!("ALTER TABLE {name} ENABLE ROW LEVEL SECURITY;\n"));
    }
    if rel.get::<_, bool>(2) {
        ddl.push_str(&format!("ALTER TABLE {name} FORCE ROW LEVEL SECURITY;\n"));
    }
    for r in client
        .query(
            "SELECT policyname::text, permissive, roles::text[], cmd, qual, with_check FROM pg_policies \
             WHERE schemaname = $1 AND tablename = $2 ORDER BY policyname",
            &[&schema, &table],
        )
        .await?
    {
        let mut p = format!(
            "CREATE POLICY {} ON {name} AS {} FOR {} TO {}",
            ident(r.get::<_, &str>(0)),
            r.get::<_, String>(1),
            r.get::<_, String>(3),
            r.get::<_, Vec<String>>(2).join(", ")
        );
        if let Some(q) = r.get::<_, Option<String>>(4) {
            p.push_str(&format!(" USING ({q})"));
        }
        if let Some(w) = r.get::<_, Option<String>>(5) {
            p.push_str(&format!(" WITH CHECK ({w})"));
        }
        ddl.push_str(&format!("{p};\n"));
    }
    for r in client
        .query("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = $1::int8::oid AND NOT tgisinternal ORDER BY tgname", &[&oid])
        .await?
    {
        ddl.push_str(&format!("{};\n", r.get::<_, String>(0)));
    }
    Ok(ddl)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_replaced_by_setting_reads_not_values() {
        let f = "occurred_at >= :since AND zone_id = :zone_id AND note <> ':not_a_param' AND x::text = 'a'";
        assert_eq!(bind_names(f).unwrap(), ["since", "zone_id"]);
        let s = substitute(f).unwrap();
        assert_eq!(
            s,
            "occurred_at >= (current_setting('preserve.p_since'))::timestamptz AND zone_id = current_setting('preserve.p_zone_id') AND note <> ':not_a_param' AND x::text = 'a'"
        );
        assert!(bind_names("a = 'unterminated").is_err());
    }

    #[test]
    fn identifiers_are_always_quoted() {
        assert_eq!(ident("we\"ird name"), "\"we\"\"ird name\"");
        assert!(excluded("access_token_ct", &["*_ct".into()]));
        assert!(!excluded("request_id", &["*_ct".into(), "token_hash".into()]));
    }
}
