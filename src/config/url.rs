//! Passwords in connection URLs: found (to redact them) and removed (to show the URL). Lenient where the clients
//! are, since a password a client would read must never be missed.

/// Splits `scheme://userinfo@rest` at the userinfo. Lenient on purpose: an unencoded `/` or `@` in a password
/// must still be found (and hidden), so the last `@` before any `?` or `#` ends the userinfo.
fn split_userinfo(url: &str) -> Option<(&str, Option<&str>, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let end = rest.find(['?', '#']).unwrap_or(rest.len());
    match rest[..end].rfind('@') {
        Some(at) => Some((scheme, Some(&rest[..at]), &rest[at + 1..])),
        None => Some((scheme, None, rest)),
    }
}

/// The query parameters a scheme's client reads as a password: Redis's Unix-socket URLs `pass`
/// (`unix:///run/redis.sock?pass=...`), libpq-style URLs `password` (and `sslpassword`, a client key's).
fn password_params(scheme: &str) -> &'static [&'static str] {
    if is_libpq(scheme) {
        &["password", "sslpassword"]
    } else if scheme.eq_ignore_ascii_case("unix") || scheme.eq_ignore_ascii_case("redis+unix") {
        &["pass"]
    } else {
        &[]
    }
}

fn is_libpq(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("postgres") || scheme.eq_ignore_ascii_case("postgresql")
}

/// Every parameter name that may hold a password, whatever the scheme: removed from any URL shown.
const ANY_PASSWORD_PARAM: [&str; 3] = ["pass", "password", "sslpassword"];

/// Whether `#` ends the query: not in libpq-style URLs, whose parser reads a `#` as part of a value.
fn has_fragment(scheme: &str) -> bool {
    !is_libpq(scheme)
}

fn decoded(s: &str) -> String {
    percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned()
}

/// A URL's query (after `?`, up to a fragment where the scheme has them), and what follows it.
fn split_query<'a>(scheme: &str, rest: &'a str) -> Option<(&'a str, &'a str, Option<&'a str>)> {
    let (path, query) = rest.split_once('?')?;
    Some(match query.split_once('#').filter(|_| has_fragment(scheme)) {
        Some((q, f)) => (path, q, Some(f)),
        None => (path, query, None),
    })
}

/// The passwords in a URL, each as written and as its client decodes it (percent-encoding; `+` for a space in a
/// query): its userinfo's, and every query parameter the scheme's client reads as one (a repeated one included: the
/// clients take the last).
pub fn url_passwords(url: &str) -> Vec<String> {
    let Some((scheme, userinfo, rest)) = split_userinfo(url) else { return Vec::new() };
    let mut found: Vec<String> = Vec::new();
    let mut add = |written: &str, plus_is_space: bool| {
        let mut forms = vec![written.to_string(), decoded(written)];
        if plus_is_space {
            forms.push(decoded(&written.replace('+', " ")));
        }
        for f in forms {
            if !f.is_empty() && !found.contains(&f) {
                found.push(f);
            }
        }
    };
    if let Some((_, pw)) = userinfo.and_then(|u| u.split_once(':')) {
        add(pw, false);
    }
    let params = password_params(scheme);
    if let Some((_, query, _)) = split_query(scheme, rest) {
        for (name, value) in query.split('&').filter_map(|pair| pair.split_once('=')) {
            if params.contains(&decoded(name).as_str()) {
                add(value, true);
            }
        }
    }
    found
}

/// The URL with its passwords removed, the userinfo's and any password query parameter (the user name is kept), or
/// `None` when it is not a URL.
pub fn strip_password(url: &str) -> Option<String> {
    let (scheme, userinfo, rest) = split_userinfo(url)?;
    let rest = match split_query(scheme, rest) {
        Some((path, query, fragment)) => {
            let is_password = |pair: &&str| {
                let name = decoded(pair.split_once('=').map_or(*pair, |(k, _)| k));
                ANY_PASSWORD_PARAM.iter().any(|p| name.eq_ignore_ascii_case(p))
            };
            let kept: Vec<&str> = query.split('&').filter(|pair| !is_password(pair)).collect();
            let mut out = path.to_string();
            if !kept.is_empty() {
                out = format!("{out}?{}", kept.join("&"));
            }
            if let Some(f) = fragment {
                out = format!("{out}#{f}");
            }
            out
        }
        None => rest.to_string(),
    };
    Some(match userinfo {
        Some(u) => match u.split_once(':').map_or(u, |(user, _)| user) {
            "" => format!("{scheme}://{rest}"),
            user => format!("{scheme}://{user}@{rest}"),
        },
        None => format!("{scheme}://{rest}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_slashes_and_ats_are_still_found() {
        assert_eq!(url_passwords("redis://u:pa/ss@w0rd@h:6379/0"), ["pa/ss@w0rd"]);
        assert_eq!(strip_password("redis://u:pa/ss@w0rd@h:6379/0").unwrap(), "redis://u@h:6379/0");
        assert!(url_passwords("redis://h:6379/0?x=a@b").is_empty());
        assert_eq!(strip_password("http://h:8080/x").unwrap(), "http://h:8080/x");
        assert_eq!(strip_password("redis://:pw@h:6379/0").unwrap(), "redis://h:6379/0");
        assert_eq!(url_passwords("redis://:p%40ss@h/0"), ["p%40ss", "p@ss"], "as written and as the client decodes it");
    }

    #[test]
    fn passwords_in_query_parameters_are_found_and_removed() {
        let unix = "unix:///run/redis.sock?db=3&pass=s3cret-pw";
        assert_eq!(url_passwords(unix), ["s3cret-pw"]);
        assert_eq!(strip_password(unix).unwrap(), "unix:///run/redis.sock?db=3");
        assert_eq!(url_passwords("redis+unix:///s.sock?pass=a+b%21&pass=second"), ["a+b%21", "a+b!", "a b!", "second"]);
        assert_eq!(strip_password("redis+unix:///s.sock?pass=x").unwrap(), "redis+unix:///s.sock");
        // libpq-style: `password` (a `#` is part of the value there, not a fragment), an encoded name too.
        let pg = "postgres://caracal:first@db:5432/caracal?sslmode=require&password=pg-pw#77";
        assert_eq!(url_passwords(pg), ["first", "pg-pw#77"]);
        assert_eq!(strip_password(pg).unwrap(), "postgres://caracal@db:5432/caracal?sslmode=require");
        assert_eq!(url_passwords("postgresql://db/x?pass%77ord=enc"), ["enc"]);
        assert_eq!(strip_password("postgresql://db/x?pass%77ord=enc&a=1").unwrap(), "postgresql://db/x?a=1");
        // Only what the scheme's client reads as a password counts (a Redis TCP URL has no such parameter), but
        // any of them is removed from what is shown.
        assert!(url_passwords("redis://cache:6379/0?pass=x").is_empty());
        assert!(url_passwords("unix:///s.sock?password=x").is_empty());
        assert_eq!(strip_password("redis://cache:6379/0?pass=x#f").unwrap(), "redis://cache:6379/0#f");
        assert!(url_passwords("unix:///s.sock?passive=1&pass=").is_empty(), "only a named, non-empty password");
        assert_eq!(strip_password("redis://h/0?passive=1").unwrap(), "redis://h/0?passive=1");
    }
}
