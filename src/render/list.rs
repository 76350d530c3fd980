//! `preserve list`: the profiles and collectors a site has, and the source kinds they are built from.

use std::fmt;

use crate::{catalog::Catalog, sources};

/// Profiles (with the alerts they answer, their window and collectors), then collectors, as columns as wide as
/// their longest entry: a site's own collector names may be longer than the built-in ones.
pub struct List<'a>(pub &'a Catalog);

impl fmt::Display for List<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let catalog = self.0;
        let width = |names: &mut dyn Iterator<Item = usize>| names.max().unwrap_or(0);
        let pw = width(&mut catalog.profiles.values().map(|p| p.name.chars().count()));
        writeln!(f, "Profiles:")?;
        for p in catalog.profiles.values() {
            writeln!(f, "  {:<pw$}  {}", p.name, p.description)?;
            if !p.alerts.is_empty() {
                writeln!(f, "  {:<pw$}  alerts: {}", "", p.alerts.join(", "))?;
            }
            if let Some(w) = p.window {
                writeln!(f, "  {:<pw$}  window: {w:#}", "")?;
            }
            let names: Vec<_> = catalog.profile_collectors(p).iter().map(|c| c.name.clone()).collect();
            writeln!(f, "  {:<pw$}  collectors: {}", "", names.join(", "))?;
        }
        let cw = width(&mut catalog.collectors.values().map(|c| c.name.chars().count()));
        let kw = width(&mut catalog.collectors.values().map(|c| c.kind.chars().count()));
        writeln!(f, "\nCollectors:")?;
        for c in catalog.collectors.values() {
            writeln!(f, "  {:<cw$}  {:<kw$}  {}", c.name, c.kind, c.description)?;
        }
        Ok(())
    }
}

/// `preserve list --json`.
pub fn list_json(catalog: &Catalog) -> serde_json::Value {
    serde_json::json!({
        "profiles": catalog.profiles.values().map(|p| serde_json::json!({
            "name": p.name,
            "description": p.description,
            "alerts": p.alerts,
            "window": p.window.map(|w| w.to_string()),
            "collectors": catalog.profile_collectors(p).iter().map(|c| &c.name).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "collectors": catalog.collectors.values().map(|c| serde_json::json!({
            "name": c.name, "kind": c.kind, "description": c.description, "defined_at": c.origin.to_string(),
        })).collect::<Vec<_>>(),
        "kinds": sources::KINDS.iter().map(|k| serde_json::json!({"name": k.name, "summary": k.summary})).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{EnvSource, Environment};

    struct NoVars;
    impl EnvSource for NoVars {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    #[test]
    fn the_built_in_catalog_is_listed_in_aligned_columns_and_as_json() {
        let env = Environment::load(None, &NoVars).unwrap();
        let catalog = Catalog::load(&env, &[]).unwrap();
        let shown = List(&catalog).to_string();
        assert!(shown.starts_with("Profiles:\n  "));
        let collectors = shown.split("\nCollectors:\n").nth(1).expect("collectors after the profiles");
        assert_eq!(collectors.lines().count(), catalog.collectors.len());
        // Kinds start in one column, after the longest name.
        let cw = catalog.collectors.keys().map(|n| n.chars().count()).max().unwrap();
        for (line, c) in collectors.lines().zip(catalog.collectors.values()) {
            assert!(line[2 + cw + 2..].starts_with(&c.kind), "{line}");
            assert!(line.ends_with(&c.description), "{line}");
        }
        let json = list_json(&catalog);
        assert_eq!(json["profiles"].as_array().unwrap().len(), catalog.profiles.len());
        assert!(json["kinds"].as_array().unwrap().iter().any(|k| k["name"] == "redis"));
    }
}
