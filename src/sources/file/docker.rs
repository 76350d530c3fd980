//! Docker json-file logs: each container's directory under Docker's containers directory holds `config.v2.json`
//! (name and labels) and `<id>-json.log` with its rotations (`.1`, `.2`, ... and `.gz` when compressed). Containers
//! are named by their Compose service (`com.docker.compose.service`), as Caracal's Compose install labels them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Which containers' logs to read.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DockerSelect {
    /// Compose project label to match (default `caracal`); `*` takes containers of any or no project.
    #[serde(default = "default_project")]
    pub project: String,
    /// Compose services to take (e.g. `["audit"]`); empty takes every service of the project.
    #[serde(default)]
    pub services: Vec<String>,
    /// Containers directory; default the site's `docker_dir` (env `PRESERVE_DOCKER_DIR`).
    pub dir: Option<String>,
}

fn default_project() -> String {
    "caracal".into()
}

/// One container's log file, with where it goes in the bag.
#[derive(Debug)]
pub struct ContainerLog {
    pub path: PathBuf,
    /// `<service>/<container name>/<file name>`.
    pub relative: String,
}

#[derive(Deserialize)]
struct ContainerConfig {
    #[serde(rename = "Name", default)]
    name: String,
    #[serde(rename = "Config", default)]
    config: Option<ContainerInner>,
}

#[derive(Deserialize)]
struct ContainerInner {
    #[serde(rename = "Labels", default)]
    labels: Option<std::collections::BTreeMap<String, String>>,
}

/// A container's `config.v2.json` is a few KiB; anything far larger is not one.
const MAX_CONTAINER_CONFIG: u64 = 4 << 20;

/// A container's config, read as the logs are (once, non-blocking, a regular file on a real file system) and
/// bounded; `None` when the directory has none (not a container).
fn read_config(path: &Path) -> Result<Option<Vec<u8>>, String> {
    use std::io::Read;
    let opened = match super::open::open(path, false) {
        Ok(o) => o,
        Err(super::open::OpenError::Io { source, .. })
            if matches!(source.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(e.to_string()),
    };
    if opened.size_at_open > MAX_CONTAINER_CONFIG {
        return Err(format!("{}: not read: {} bytes is no container config", path.display(), opened.size_at_open));
    }
    let mut bytes = Vec::new();
    opened
        .reader(false, opened.size_at_open)
        .and_then(|mut r| r.read_to_end(&mut bytes))
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok(Some(bytes))
}

/// Finds the log files of the selected containers. Unreadable container directories are reported, not fatal.
pub fn discover(dir: &Path, select: &DockerSelect) -> std::io::Result<(Vec<ContainerLog>, Vec<String>)> {
    let mut logs = Vec::new();
    let mut problems = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)?.filter_map(Result::ok).collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let cdir = entry.path();
        let id = entry.file_name().to_string_lossy().into_owned();
        let cfg_path = cdir.join("config.v2.json");
        let cfg: ContainerConfig = match read_config(&cfg_path) {
            Ok(Some(bytes)) => match serde_json::from_slice(&bytes) {
                Ok(c) => c,
                Err(e) => {
                    problems.push(format!("{}: unreadable container config: {e}", cfg_path.display()));
                    continue;
                }
            },
            Ok(None) => continue,
            Err(why) => {
                problems.push(why);
                continue;
            }
        };
        let labels = cfg.config.and_then(|c| c.labels).unwrap_or_default();
        let project = labels.get("com.docker.compose.project").map(String::as_str);
        if select.project != "*" && project != Some(select.project.as_str()) {
            continue;
        }
        let name = cfg.name.trim_start_matches('/').to_string();
        let short: String = id.chars().take(12).collect();
        let service = labels.get("com.docker.compose.service").cloned().unwrap_or_else(|| name.clone());
        if !select.services.is_empty() && !select.services.contains(&service) {
            continue;
        }
        let container = if name.is_empty() { short } else { name };
        let prefix = format!("{id}-json.log");
        let Ok(files) = std::fs::read_dir(&cdir) else {
            problems.push(format!("{}: cannot list container directory", cdir.display()));
            continue;
        };
        for f in files.filter_map(Result::ok) {
            let fname = f.file_name().to_string_lossy().into_owned();
            if fname.starts_with(&prefix) {
                logs.push(ContainerLog { path: f.path(), relative: format!("{service}/{container}/{fname}") });
            }
        }
    }
    Ok((logs, problems))
}
