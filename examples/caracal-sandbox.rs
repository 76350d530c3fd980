//! Starts the Caracal sandbox the tests use (tests/support/sandbox.rs) and keeps it running until Ctrl-C or SIGTERM:
//! real `redis-server` and PostgreSQL with Caracal's data, HTTP stand-ins for its services, a `$CARACAL_HOME`,
//! Docker logs. Prints the site config to point preserve at it. `scripts/quickstart.sh` runs it.
//!
//! Example:
//!   cargo run --example caracal-sandbox
//!   preserve snapshot --profile full --config <the printed preserve.toml>

#[path = "../tests/support/postgres.rs"]
mod postgres;
#[path = "../tests/support/redis.rs"]
mod redis;
#[path = "../tests/support/sandbox.rs"]
mod sandbox;

use std::io::Write;

fn main() -> std::io::Result<()> {
    let sb = sandbox::Sandbox::start();
    let alert = sb.root.join("alert-tamper.json");
    std::fs::write(&alert, sandbox::tamper_alert().to_string())?;
    // Machine-readable first lines (the quickstart reads them), then what a person needs.
    let mut out = std::io::stdout().lock();
    writeln!(out, "PRESERVE_CONFIG={}", sb.config.display())?;
    writeln!(out, "SANDBOX_ALERT={}", alert.display())?;
    writeln!(out, "\nCaracal sandbox running in {}:", sb.root.display())?;
    for (service, urls) in &sb.services {
        writeln!(out, "  {service:<12} {}", urls.join(", "))?;
    }
    writeln!(out, "  CARACAL_HOME {}", sb.caracal_home.display())?;
    writeln!(out, "\nTry:\n  preserve snapshot --profile full --config {}", sb.config.display())?;
    writeln!(
        out,
        "  preserve snapshot --profile audit-tamper --config {} --alert {}",
        sb.config.display(),
        alert.display()
    )?;
    writeln!(out, "\nCtrl-C stops it and removes everything it made.")?;
    drop(out);

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r,
            _ = term.recv() => Ok(()),
        }
    })?;
    drop(sb);
    Ok(())
}
