//! Throwaway PostgreSQL servers for tests: `initdb` into a temporary directory, `postgres` on a free port, run as
//! the `postgres` user when the tests run as root. Stopped (killed) on drop.
#![allow(dead_code)]

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

pub struct PgServer {
    pub port: u16,
    pub dir: PathBuf,
    bin: PathBuf,
    child: Option<Child>,
}

fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let p = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if p.join("initdb").exists() {
            return p;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("PostgreSQL server binaries (scripts/test.sh installs postgresql)")
        .filter_map(Result::ok)
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    found.sort();
    found.pop().expect("initdb under /usr/lib/postgresql/*/bin")
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

/// A command run as the `postgres` user when we are root (PostgreSQL refuses to run as root).
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

impl PgServer {
    pub fn start(dir: &Path) -> Self {
        let bin = bindir();
        std::fs::create_dir_all(dir).unwrap();
        if is_root() {
            // The postgres user must reach the directory through the (root-owned, private) temp dirs above it.
            let mut p = dir.to_path_buf();
            while let Some(parent) = p.parent() {
                if parent == Path::new("/") || parent == Path::new("/tmp") {
                    break;
                }
                let mode = std::fs::metadata(parent).unwrap().permissions().mode();
                std::fs::set_permissions(parent, std::fs::Permissions::from_mode(mode | 0o711)).unwrap();
                p = parent.to_path_buf();
            }
            let st = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir).status().unwrap();
            assert!(st.success());
        }
        let data = dir.join("data");
        let st = as_pg(&bin.join("initdb"))
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale", "C", "-D"])
            .arg(&data)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success(), "initdb");
        let mut s = Self { port: super::redis::free_port(), dir: dir.to_path_buf(), bin, child: None };
        s.spawn();
        s
    }

    fn spawn(&mut self) {
        let child = as_pg(&self.bin.join("postgres"))
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-p", &self.port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"])
            .args(["-c", "unix_socket_directories=", "-c", "max_connections=40"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ok = Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q"])
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "postgres did not start on {}", self.port);
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Appends settings to `postgresql.conf`, with files (name, content) written into the data directory owned by
    /// the server's user with mode 0600 (as a TLS key must be), and restarts the server.
    pub fn configure(&mut self, conf: &str, files: &[(&str, &str)]) {
        let data = self.dir.join("data");
        for (name, content) in files {
            let p = data.join(name);
            std::fs::write(&p, content).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600)).unwrap();
            if is_root() {
                assert!(Command::new("chown").args(["postgres:postgres"]).arg(&p).status().unwrap().success());
            }
        }
        let mut c = std::fs::read_to_string(data.join("postgresql.conf")).unwrap();
        c.push_str(conf);
        std::fs::write(data.join("postgresql.conf"), c).unwrap();
        self.kill();
        self.spawn();
    }

    /// A client program of the server's version (`pg_restore`, `pg_dump`).
    pub fn tool(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// Runs SQL with psql as the superuser; panics with psql's message on error. Returns unaligned output.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", "-d", db])
            .args(["-v", "ON_ERROR_STOP=1", "-X", "-q", "-A", "-t", "-c", sql])
            .output()
            .unwrap();
        assert!(out.status.success(), "psql failed: {}\n{sql}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn kill(&mut self) {
        if let Some(pid) = self.child.as_ref().map(|c| c.id()) {
            // SIGQUIT to the postmaster is an immediate shutdown: it takes its backends down with it.
            if let Ok(text) = std::fs::read_to_string(self.dir.join("data/postmaster.pid"))
                && let Some(pm) = text.lines().next().and_then(|l| l.trim().parse::<i32>().ok())
            {
                let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pm), nix::sys::signal::Signal::SIGQUIT);
            }
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), nix::sys::signal::Signal::SIGKILL);
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.kill();
    }
}
