//! Which profile answers an alert: the site's `[[serve.rules]]` (Alertmanager matchers over the alert's labels),
//! then the profiles' own `alerts` lists. The first rule that matches decides.

use std::{collections::BTreeMap, str::FromStr};

use regex::Regex;

use crate::{
    alert::Alert,
    catalog::{Catalog, ProfileDef},
    config::{ConfigError, Environment},
};

/// One Alertmanager matcher: `name="value"`, `name!="value"`, `name=~"regex"`, `name!~"regex"`. A label the
/// alert does not have counts as the empty string, as in Alertmanager.
#[derive(Debug, Clone)]
pub struct Matcher {
    label: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Equal,
    NotEqual,
    Regex,
    NotRegex,
}

/// Why a matcher cannot be parsed; each names the matcher as written.
#[derive(Debug, thiserror::Error)]
pub enum MatcherError {
    #[error("matcher `{0}`: expected a label name first, as in `severity=\"critical\"`")]
    NoLabel(String),
    #[error("matcher `{matcher}`: expected one of =, !=, =~, !~ after `{label}`")]
    NoOperator { matcher: String, label: String },
    #[error("matcher `{0}`: unclosed quote")]
    UnclosedQuote(String),
    #[error("matcher `{matcher}`: invalid regex: {source}")]
    Regex { matcher: String, source: regex::Error },
}

impl FromStr for Matcher {
    type Err = MatcherError;

    fn from_str(s: &str) -> Result<Self, MatcherError> {
        let s = s.trim();
        let end = s.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(s.len());
        let (label, rest) = s.split_at(end);
        if label.is_empty() || label.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(MatcherError::NoLabel(s.into()));
        }
        let rest = rest.trim_start();
        let (op, value) = [("=~", Op::Regex), ("!~", Op::NotRegex), ("!=", Op::NotEqual), ("=", Op::Equal)]
            .into_iter()
            .find_map(|(tok, op)| rest.strip_prefix(tok).map(|v| (op, v.trim())))
            .ok_or_else(|| MatcherError::NoOperator { matcher: s.into(), label: label.into() })?;
        let value = match value.strip_prefix('"') {
            Some(v) => v
                .strip_suffix('"')
                .ok_or_else(|| MatcherError::UnclosedQuote(s.into()))?
                .replace("\\\"", "\"")
                .replace("\\\\", "\\"),
            None => value.to_string(),
        };
        let regex = match op {
            Op::Regex | Op::NotRegex => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|source| MatcherError::Regex { matcher: s.into(), source })?,
            ),
            _ => None,
        };
        Ok(Self { label: label.to_string(), op, value, regex })
    }
}

impl Matcher {
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        let v = labels.get(&self.label).map_or("", String::as_str);
        match (self.op, &self.regex) {
            (Op::Equal, _) => v == self.value,
            (Op::NotEqual, _) => v != self.value,
            (Op::Regex, Some(r)) => r.is_match(v),
            (Op::NotRegex, Some(r)) => !r.is_match(v),
            (_, None) => false,
        }
    }
}

#[derive(Debug, Clone)]
enum When {
    /// A `[[serve.rules]]` entry: every matcher holds.
    Matchers(Vec<Matcher>),
    /// A profile's own `alerts` list (`answers`).
    ProfileAlerts(ProfileDef),
}

/// One rule: when it matches, the profile to run.
#[derive(Debug, Clone)]
pub struct Rule {
    pub profile: String,
    /// Where the rule comes from, for logs: `serve.rules[0]` or `profile audit-tamper`.
    pub origin: String,
    when: When,
}

impl Rule {
    fn matches(&self, alert: &Alert) -> bool {
        match &self.when {
            When::Matchers(ms) => ms.iter().all(|m| m.matches(&alert.labels)),
            When::ProfileAlerts(p) => alert.name().is_some_and(|n| p.answers(n)),
        }
    }
}

/// The rules in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct Rules(Vec<Rule>);

impl Rules {
    /// The site's rules, then (unless `default_rules = false`) one per profile that lists alerts. A rule naming
    /// an unknown profile or holding a bad matcher is a config error pointing at it.
    pub fn load(env: &Environment, catalog: &Catalog) -> Result<Self, ConfigError> {
        let file = env.config_file.clone().unwrap_or_else(|| "<defaults>".into());
        let text = env.config_text.as_deref().unwrap_or("");
        // Points at the value in the file, whichever TOML quotes it is written in.
        let at = |needle: &str, msg: String| {
            let span = [format!("\"{needle}\""), format!("'{needle}'")]
                .iter()
                .find_map(|q| text.find(q.as_str()).map(|i| i..i + q.len()));
            ConfigError::at(&file, text, span, msg)
        };
        let mut rules = Vec::new();
        for (i, r) in env.serve.rules.iter().enumerate() {
            if !catalog.profiles.contains_key(&r.profile) {
                return Err(at(
                    &r.profile,
                    format!("serve.rules[{i}]: unknown profile `{}` (see `preserve list`)", r.profile),
                ));
            }
            if r.matchers.is_empty() {
                return Err(at(&r.profile, format!("serve.rules[{i}]: a rule needs at least one matcher")));
            }
            let matchers = r
                .matchers
                .iter()
                .map(|m| m.parse::<Matcher>().map_err(|e| at(m, format!("serve.rules[{i}].matchers: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            rules.push(Rule {
                profile: r.profile.clone(),
                origin: format!("serve.rules[{i}]"),
                when: When::Matchers(matchers),
            });
        }
        if env.serve.default_rules {
            for p in catalog.profiles.values().filter(|p| !p.alerts.is_empty()) {
                rules.push(Rule {
                    profile: p.name.clone(),
                    origin: format!("profile {}", p.name),
                    when: When::ProfileAlerts(p.clone()),
                });
            }
        }
        Ok(Self(rules))
    }

    /// The first rule that matches `alert`.
    pub fn route(&self, alert: &Alert) -> Option<&Rule> {
        self.0.iter().find(|r| r.matches(alert))
    }

    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.0.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn matchers_follow_alertmanager() {
        let l = labels(&[("alertname", "CaracalAuditDLQGrowth"), ("severity", "critical"), ("component", "audit")]);
        let m = |s: &str| s.parse::<Matcher>().unwrap().matches(&l);
        assert!(m(r#"severity="critical""#));
        assert!(m("severity = critical"));
        assert!(!m(r#"severity!="critical""#));
        assert!(m(r#"alertname=~"CaracalAudit.*""#));
        assert!(!m(r#"alertname=~"AuditDLQ""#), "regexes are anchored");
        assert!(m(r#"component!~"gateway|sts""#));
        assert!(m(r#"zone_id="""#), "a missing label is the empty string");
        assert!(!m(r#"zone_id=~".+""#));
        assert!("=x".parse::<Matcher>().is_err());
        assert!("severity~critical".parse::<Matcher>().is_err());
        assert!(r#"a=~"(""#.parse::<Matcher>().unwrap_err().to_string().contains("invalid regex"));
        assert!(r#"a="x"#.parse::<Matcher>().unwrap_err().to_string().contains("unclosed"));
    }
}
