//! Collector and profile definitions. Built-in ones are the files in `collectors/`, compiled into the binary;
//! directories from the site config and `--collectors` extend them, and a definition there replaces a built-in
//! one of the same name. Every error names the file, line and key. Not part of `config`: a collector's settings are
//! read by its source kind, and `sources` itself reads the site config.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    sync::Arc,
};

use include_dir::{Dir, include_dir};
use jiff::SignedDuration;
use serde::Deserialize;
use toml::{
    Spanned,
    de::{DeTable, DeValue, ValueDeserializer},
};

use crate::{
    config::{ConfigError, Environment, Platform},
    sources::{self, Source},
};

static BUILTIN: Dir<'_> = include_dir!("$CARGO_MANIFEST_DIR/collectors");

/// Keys every collector has, whatever its kind; all other keys belong to the kind.
const COMMON_KEYS: [&str; 5] = ["name", "kind", "description", "timeout", "on"];

/// Where a definition was read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Origin {
    pub file: PathBuf,
    pub line: usize,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone)]
pub struct CollectorDef {
    pub name: String,
    pub kind: String,
    pub description: String,
    pub timeout: Option<SignedDuration>,
    /// The one platform this definition applies on (`on`); `None`: both.
    pub on: Option<Platform>,
    pub source: Arc<dyn Source>,
    pub origin: Origin,
}

#[derive(Debug, Clone)]
pub struct ProfileDef {
    pub name: String,
    pub description: String,
    /// Collector names; `*` means every collector.
    pub collectors: Vec<String>,
    /// Default look-back window when `--since` is not given.
    pub window: Option<SignedDuration>,
    /// The alert names (Alertmanager `alertname`) this profile answers; `*` ends a prefix (`CaracalAuditDLQ*`).
    pub alerts: Vec<String>,
    pub origin: Origin,
}

impl ProfileDef {
    /// Whether this profile answers the alert named `alertname`.
    pub fn answers(&self, alertname: &str) -> bool {
        self.alerts.iter().any(|a| match a.strip_suffix('*') {
            Some(prefix) => alertname.starts_with(prefix),
            None => a == alertname,
        })
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Head {
    name: Spanned<String>,
    kind: Spanned<String>,
    #[serde(default)]
    description: String,
    timeout: Option<SignedDuration>,
    on: Option<Platform>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProfile {
    name: Spanned<String>,
    #[serde(default)]
    description: String,
    collectors: Vec<Spanned<String>>,
    window: Option<SignedDuration>,
    #[serde(default)]
    alerts: Vec<String>,
}

/// All collectors and profiles known to this run.
#[derive(Debug, Default)]
pub struct Catalog {
    /// The collectors that apply on this site's platform.
    pub collectors: BTreeMap<String, CollectorDef>,
    pub profiles: BTreeMap<String, ProfileDef>,
    /// Collectors defined only for the other platform (`on`): a profile may name them, and leaves them out here.
    pub elsewhere: std::collections::BTreeSet<String>,
}

/// Definitions of one layer (built-in, or one directory), before merging.
#[derive(Default)]
struct Layer {
    /// The platform the catalog is loaded for.
    platform: Option<Platform>,
    collectors: BTreeMap<String, CollectorDef>,
    /// Every definition read in this layer, whatever its platform, for duplicate checks.
    defined: Vec<(String, Option<Platform>, Origin)>,
    /// Names defined in this layer for the other platform only.
    elsewhere: std::collections::BTreeSet<String>,
    profiles: BTreeMap<String, (ProfileDef, Vec<(String, ConfigError)>)>,
}

impl Catalog {
    /// Loads the built-in definitions, then each directory in order.
    pub fn load(env: &Environment, extra_dirs: &[PathBuf]) -> Result<Self, ConfigError> {
        let mut catalog = Catalog::default();
        let mut pending_refs = Vec::new();
        let mut layer = Layer { platform: Some(env.platform()), ..Default::default() };
        let mut files: Vec<_> = BUILTIN.files().filter(|f| f.path().extension().is_some_and(|e| e == "toml")).collect();
        files.sort_by_key(|f| f.path());
        for f in files {
            let path = Path::new("collectors").join(f.path());
            let text = f.contents_utf8().ok_or_else(|| ConfigError::new(&path, "not UTF-8"))?;
            load_file(&mut layer, &path, text)?;
        }
        catalog.merge(layer, &mut pending_refs);
        for dir in env.collectors_dirs.iter().chain(extra_dirs) {
            let mut layer = Layer { platform: Some(env.platform()), ..Default::default() };
            let entries = std::fs::read_dir(dir)
                .map_err(|e| ConfigError::new(dir, format!("cannot read collectors directory: {e}")))?;
            let mut paths: Vec<PathBuf> = entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            paths.sort();
            for path in paths {
                let text =
                    std::fs::read_to_string(&path).map_err(|e| ConfigError::new(&path, format!("cannot read: {e}")))?;
                load_file(&mut layer, &path, &text)?;
            }
            catalog.merge(layer, &mut pending_refs);
        }
        // Profiles may name collectors of any layer, so references are checked once all are loaded.
        for (profile, refs) in pending_refs {
            if !catalog.profiles.get(&profile).is_some_and(|p| p.origin == refs.0) {
                continue; // replaced by a later layer
            }
            for (name, err) in refs.1 {
                if name != "*" && !catalog.collectors.contains_key(&name) && !catalog.elsewhere.contains(&name) {
                    return Err(err);
                }
            }
        }
        for c in catalog.collectors.values() {
            c.source.check(env).map_err(|m| ConfigError {
                file: c.origin.file.clone(),
                line: Some(c.origin.line),
                column: None,
                message: format!("collector `{}`: {m}", c.name),
            })?;
        }
        Ok(catalog)
    }

    #[allow(clippy::type_complexity)]
    fn merge(&mut self, layer: Layer, pending: &mut Vec<(String, (Origin, Vec<(String, ConfigError)>))>) {
        // A later layer's definition of a name replaces every earlier one, whichever platform each was for.
        for name in layer.collectors.keys().chain(&layer.elsewhere) {
            self.collectors.remove(name);
            self.elsewhere.remove(name);
        }
        self.collectors.extend(layer.collectors);
        self.elsewhere.extend(layer.elsewhere);
        for (name, (profile, refs)) in layer.profiles {
            pending.push((name.clone(), (profile.origin.clone(), refs)));
            self.profiles.insert(name, profile);
        }
    }

    /// The collectors of a profile, in the profile's order (`*`: every collector, by name).
    pub fn profile_collectors(&self, profile: &ProfileDef) -> Vec<&CollectorDef> {
        let mut out: Vec<&CollectorDef> = Vec::new();
        for name in &profile.collectors {
            let add: Vec<&CollectorDef> = if name == "*" {
                self.collectors.values().collect()
            } else {
                self.collectors.get(name).into_iter().collect()
            };
            for c in add {
                if !out.iter().any(|o| o.name == c.name) {
                    out.push(c);
                }
            }
        }
        out
    }
}

fn load_file(layer: &mut Layer, path: &Path, text: &str) -> Result<(), ConfigError> {
    let located = |span: std::ops::Range<usize>, msg: String| ConfigError::at(path, text, Some(span), msg);
    let root = DeTable::parse(text).map_err(|e| ConfigError::from_toml(path, text, &e))?;
    for (key, value) in root.get_ref().iter() {
        let items: Vec<Spanned<DeValue<'_>>> = match value.get_ref() {
            DeValue::Array(a) => a.iter().cloned().collect(),
            _ => {
                return Err(located(
                    key.span(),
                    format!("`{}` must be an array of tables: [[{}]]", key.get_ref(), key.get_ref()),
                ));
            }
        };
        match key.get_ref().as_ref() {
            "collector" => {
                for item in items {
                    let def = parse_collector(path, text, item)?;
                    // The same name may be defined once per platform: `on = "compose"` beside `on = "kubernetes"`.
                    let overlaps = |on: &Option<Platform>| on.is_none() || def.on.is_none() || *on == def.on;
                    if let Some((_, _, prev)) = layer.defined.iter().find(|(n, on, _)| *n == def.name && overlaps(on)) {
                        return Err(ConfigError {
                            file: path.to_path_buf(),
                            line: Some(def.origin.line),
                            column: None,
                            message: format!(
                                "name: duplicate collector `{}` (first defined at {}); one name may be defined \
                                 twice only with `on = \"compose\"` and `on = \"kubernetes\"`",
                                def.name, prev
                            ),
                        });
                    }
                    layer.defined.push((def.name.clone(), def.on, def.origin.clone()));
                    if def.on.is_none() || def.on == layer.platform {
                        layer.elsewhere.remove(&def.name);
                        layer.collectors.insert(def.name.clone(), def);
                    } else if !layer.collectors.contains_key(&def.name) {
                        layer.elsewhere.insert(def.name.clone());
                    }
                }
            }
            "profile" => {
                for item in items {
                    let span = item.span();
                    let raw = RawProfile::deserialize(ValueDeserializer::from(item))
                        .map_err(|e| ConfigError::from_toml(path, text, &e))?;
                    let origin = Origin { file: path.to_path_buf(), line: line_of(text, span.start) };
                    let name = raw.name.get_ref().clone();
                    if let Some((prev, _)) = layer.profiles.get(&name) {
                        return Err(located(
                            raw.name.span(),
                            format!("name: duplicate profile `{name}` (first defined at {})", prev.origin),
                        ));
                    }
                    let refs = raw
                        .collectors
                        .iter()
                        .map(|c| {
                            let n = c.get_ref().clone();
                            let err = located(
                                c.span(),
                                format!("collectors: profile `{name}` names collector `{n}`, which does not exist"),
                            );
                            (n, err)
                        })
                        .collect();
                    let def = ProfileDef {
                        name: name.clone(),
                        description: raw.description,
                        collectors: raw.collectors.into_iter().map(Spanned::into_inner).collect(),
                        window: raw.window,
                        alerts: raw.alerts,
                        origin,
                    };
                    layer.profiles.insert(name, (def, refs));
                }
            }
            other => {
                return Err(located(
                    key.span(),
                    format!("unknown key `{other}`: a collectors file holds [[collector]] and [[profile]] tables"),
                ));
            }
        }
    }
    Ok(())
}

fn parse_collector(path: &Path, text: &str, item: Spanned<DeValue<'_>>) -> Result<CollectorDef, ConfigError> {
    let span = item.span();
    let origin = Origin { file: path.to_path_buf(), line: line_of(text, span.start) };
    let DeValue::Table(table) = item.into_inner() else {
        return Err(ConfigError::at(path, text, Some(span), "a [[collector]] must be a table"));
    };
    let (mut head, mut rest) = (DeTable::new(), DeTable::new());
    for (k, v) in table {
        if COMMON_KEYS.contains(&k.get_ref().as_ref()) {
            head.insert(k, v);
        } else {
            rest.insert(k, v);
        }
    }
    let head = Head::deserialize(ValueDeserializer::from(Spanned::new(span.clone(), DeValue::Table(head))))
        .map_err(|e| ConfigError::from_toml(path, text, &e))?;
    let name = head.name.get_ref().clone();
    if name.is_empty()
        || !name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        || name.starts_with('.')
    {
        return Err(ConfigError::at(
            path,
            text,
            Some(head.name.span()),
            format!("name: `{name}` must be letters, digits, `-`, `_` or `.`"),
        ));
    }
    let kind_name = head.kind.get_ref();
    let kind = sources::kind(kind_name).ok_or_else(|| {
        let known: Vec<_> = sources::KINDS.iter().map(|k| k.name).collect();
        ConfigError::at(
            path,
            text,
            Some(head.kind.span()),
            format!("kind: unknown source kind `{kind_name}` (known: {})", known.join(", ")),
        )
    })?;
    let source = (kind.parse)(ValueDeserializer::from(Spanned::new(span, DeValue::Table(rest))))
        .map_err(|e| ConfigError::from_toml(path, text, &e))?;
    Ok(CollectorDef {
        name,
        kind: kind.name.to_string(),
        description: head.description,
        timeout: head.timeout,
        on: head.on,
        source,
        origin,
    })
}

fn line_of(text: &str, offset: usize) -> usize {
    text.as_bytes()[..offset.min(text.len())].iter().filter(|&&b| b == b'\n').count() + 1
}
