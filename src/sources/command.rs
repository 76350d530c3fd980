//! The `command` source kind: runs a program directly (argv, never a shell) and keeps its stdout and stderr,
//! redacted, with its exit status. On timeout or cancellation the whole process group is killed, so nothing the
//! command started lives on.

use crate::sources::DefinitionError;
use std::{collections::BTreeMap, io::Write, process::Stdio};

use async_trait::async_trait;
use bytesize::ByteSize;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};

use super::{Artifact, CollectError, Collection, Outcome, Redaction, Source};
use crate::{
    config::{CredentialRef, Environment},
    redact::Format,
};

/// Settings of a `command` collector.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CommandSource {
    /// Program and arguments, `${var}` expanded; run without a shell.
    pub argv: Vec<String>,
    /// Extra environment variables (literal values).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of preserve's own environment variables to pass on, beyond the basic set (`PATH`, `HOME`, `LANG`,
    /// `LC_*`, `TZ`, `USER`, `TMPDIR`, `DOCKER_*`, `KUBECONFIG`, `HELM_*`). Nothing else is inherited, so the
    /// credentials preserve itself was given never reach a command.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    /// Environment variables whose values are credentials, by reference (`env:NAME` / `file:PATH`).
    #[serde(default)]
    pub env_credentials: BTreeMap<String, CredentialRef>,
    /// Working directory.
    pub cwd: Option<String>,
    /// Cap per output stream; the first bytes are kept and the artifact marked truncated.
    pub max_output_bytes: Option<ByteSize>,
    /// Exit codes that count as success (default `[0]`).
    #[serde(default = "success")]
    pub success_codes: Vec<i32>,
    /// File name of the stdout artifact (default `stdout.txt`), e.g. `compose.yml`.
    #[serde(default = "stdout_name")]
    pub stdout: String,
}

fn success() -> Vec<i32> {
    vec![0]
}
fn stdout_name() -> String {
    "stdout.txt".into()
}

#[async_trait]
impl Source for CommandSource {
    fn check(&self, env: &Environment) -> Result<(), DefinitionError> {
        if self.argv.is_empty() {
            return Err(DefinitionError::Shape("argv: a command needs at least the program"));
        }
        for a in &self.argv {
            env.expand(a).map_err(DefinitionError::expand("argv"))?;
        }
        if let Some(cwd) = &self.cwd {
            env.expand(cwd).map_err(DefinitionError::expand("cwd"))?;
        }
        crate::bundle::artifact::safe_relative(&self.stdout).map_err(DefinitionError::invalid("stdout"))?;
        Ok(())
    }

    fn credentials(&self, _env: &Environment) -> Vec<(String, CredentialRef)> {
        self.env_credentials.iter().map(|(k, r)| (format!("env_credentials.{k}"), r.clone())).collect()
    }

    fn describe(&self, env: &Environment) -> String {
        self.argv.iter().map(|a| env.expand(a).unwrap_or_else(|_| a.clone())).collect::<Vec<_>>().join(" ")
    }

    async fn preflight(&self, env: &Environment) -> super::Readiness {
        let program = env.expand(&self.argv[0]).unwrap_or_else(|_| self.argv[0].clone());
        match find_program(&program) {
            Some(_) => super::Readiness::Ready(Vec::new()),
            None => super::Readiness::Cannot(format!("`{program}` is not installed here (not found on PATH)")),
        }
    }

    async fn collect(&self, cx: Collection) -> Result<Outcome, CollectError> {
        let mut running = self.invocation().start(&cx)?;
        let cap = self.max_output_bytes.map_or(u64::MAX, |b| b.as_u64());
        // The output is redacted as what its name says it is: `compose-config.yaml` by YAML key rules.
        let media = super::file::media_type(&self.stdout);
        let stdout = cx.artifact(&self.stdout, media, Redaction::Text(Format::of(&self.stdout, media)))?;
        let stderr = cx.artifact("stderr.txt", "text/plain", Redaction::Text(Format::Text))?;
        let (out_pipe, err_pipe) = (running.stdout.take(), running.stderr.take());
        let drain = async {
            let (a, b) = tokio::join!(pump(out_pipe, stdout, cap), pump(err_pipe, stderr, cap));
            a.and(b)
        };
        let argv = running.argv.clone();
        let status = running.wait(&cx, drain).await?;

        let mut out = Outcome::default();
        out.detail("argv", cx.redact_str(&argv.join(" ")));
        out.detail("exit_code", status.code());
        {
            use std::os::unix::process::ExitStatusExt;
            out.detail("signal", status.signal());
        }
        match status.code() {
            Some(c) if self.success_codes.contains(&c) => Ok(out),
            Some(code) => Err(Error::Exited { program: argv[0].clone(), code }.into()),
            None => Err(Error::Killed { program: argv[0].clone() }.into()),
        }
    }
}

impl CommandSource {
    fn invocation(&self) -> Invocation<'_> {
        Invocation {
            argv: &self.argv,
            env: &self.env,
            inherit_env: &self.inherit_env,
            env_credentials: &self.env_credentials,
            cwd: self.cwd.as_deref(),
        }
    }
}

/// A program to run the way every kind runs one: argv without a shell, `${var}` expanded, stdin closed, a clean
/// environment (see [`inherited`]), in a process group of its own that is killed whole if the collection stops.
pub(crate) struct Invocation<'a> {
    pub argv: &'a [String],
    pub env: &'a BTreeMap<String, String>,
    pub inherit_env: &'a [String],
    pub env_credentials: &'a BTreeMap<String, CredentialRef>,
    pub cwd: Option<&'a str>,
}

/// Why a command collector failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be executed (not installed, not executable).
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    #[error("argv is empty")]
    EmptyArgv,
    /// It exited with a status not among its `success_codes`.
    #[error("`{program}` exited with status {code}")]
    Exited { program: String, code: i32 },
    #[error("`{program}` was killed by a signal")]
    Killed { program: String },
}

/// Why a program did not start.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StartError {
    /// The program could not be executed (not installed, not executable).
    #[error("cannot start `{program}`: {source}")]
    Spawn { program: String, source: std::io::Error },
    /// Its arguments or credentials could not be resolved.
    #[error(transparent)]
    Setup(#[from] CollectError),
}

impl From<StartError> for CollectError {
    fn from(e: StartError) -> Self {
        match e {
            StartError::Setup(c) => c,
            StartError::Spawn { program, source } => Error::Spawn { program, source }.into(),
        }
    }
}

/// A started program. Take its output pipes, then [`Running::wait`] while draining them.
pub(crate) struct Running {
    /// The arguments as run (`${var}` expanded); may hold secrets, so redact before recording.
    pub argv: Vec<String>,
    pub stdout: Option<tokio::process::ChildStdout>,
    pub stderr: Option<tokio::process::ChildStderr>,
    child: tokio::process::Child,
    group: ProcessGroup,
}

impl Invocation<'_> {
    pub(crate) fn start(&self, cx: &Collection) -> Result<Running, StartError> {
        let argv: Vec<String> = self.argv.iter().map(|a| cx.expand(a)).collect::<Result<_, _>>()?;
        let program = argv.first().ok_or(CollectError::Command(Error::EmptyArgv))?;
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(&argv[1..]).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.process_group(0).kill_on_drop(true);
        cmd.env_clear();
        cmd.envs(std::env::vars_os().filter(|(k, _)| k.to_str().is_some_and(|k| inherited(k, self.inherit_env))));
        cmd.envs(self.env);
        for (name, reference) in self.env_credentials {
            let secret = reference.resolve().map_err(CollectError::Credential)?;
            cmd.env(name, secret.expose_secret());
        }
        if let Some(cwd) = self.cwd {
            cmd.current_dir(cx.expand(cwd)?);
        }
        let mut child = cmd.spawn().map_err(|source| StartError::Spawn { program: program.clone(), source })?;
        let group = ProcessGroup(child.id());
        let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
        Ok(Running { argv, stdout, stderr, child, group })
    }
}

impl Running {
    /// Runs `drain` (which consumes the output pipes) and waits for the program to exit. On cancellation the whole
    /// process group is killed and `Cancelled` returned.
    pub(crate) async fn wait(
        self,
        cx: &Collection,
        drain: impl std::future::Future<Output = Result<(), CollectError>>,
    ) -> Result<std::process::ExitStatus, CollectError> {
        let Running { mut child, mut group, .. } = self;
        let run = async {
            drain.await?;
            child.wait().await.map_err(CollectError::io("waiting for the command"))
        };
        let status = tokio::select! {
            status = run => status?,
            _ = cx.cancelled() => {
                group.kill();
                return Err(CollectError::Cancelled);
            }
        };
        // Reaped: the group id may be reused from now on, so it must not be signalled any more.
        group.disarm();
        Ok(status)
    }
}

/// Whether a variable of preserve's environment is passed to commands.
fn inherited(name: &str, extra: &[String]) -> bool {
    const BASIC: [&str; 9] = ["PATH", "HOME", "LANG", "TZ", "USER", "LOGNAME", "TMPDIR", "KUBECONFIG", "TERM"];
    const PREFIXES: [&str; 3] = ["LC_", "DOCKER_", "HELM_"];
    BASIC.contains(&name) || PREFIXES.iter().any(|p| name.starts_with(p)) || extra.iter().any(|e| e == name)
}

/// Kills the whole process group when dropped (the command's children too), unless already reaped.
struct ProcessGroup(Option<u32>);

impl ProcessGroup {
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn kill(&self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Copies one output stream line by line into `artifact` (which redacts it), whole lines up to `cap` bytes; drains
/// the rest so the command never blocks on a full pipe. A line is never cut: part of a secret is not redacted as one.
async fn pump(pipe: Option<impl AsyncRead + Unpin>, mut artifact: Artifact, cap: u64) -> Result<(), CollectError> {
    let Some(pipe) = pipe else { return Ok(()) };
    let mut reader = BufReader::with_capacity(64 * 1024, pipe);
    let mut line = Vec::new();
    let mut written = 0u64;
    loop {
        line.clear();
        let n = (&mut reader)
            .take(1 << 20)
            .read_until(b'\n', &mut line)
            .await
            .map_err(CollectError::io("reading command output"))?;
        if n == 0 {
            break;
        }
        if written + line.len() as u64 > cap {
            artifact.set_truncated();
            written = cap;
            continue;
        }
        artifact.write_all(&line).map_err(CollectError::io("writing command output"))?;
        written += line.len() as u64;
        // Counted line by line, so a command cut off mid-output still reports its records.
        artifact.add_records(1);
    }
    artifact.finish().map_err(CollectError::io("writing command output"))
}

/// Where `program` would be run from: itself when it names a path, else the first executable file of that name on
/// `PATH`, as the system would find it.
pub fn find_program(program: &str) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let runnable =
        |p: &std::path::Path| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
    if program.contains('/') {
        let p = std::path::PathBuf::from(program);
        return runnable(&p).then_some(p);
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| runnable(p))
}
