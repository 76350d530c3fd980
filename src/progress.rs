//! Progress of a snapshot: on a terminal, one live line per collector (bytes, records, elapsed); otherwise plain
//! log lines on stderr as collectors start and end. Each collector's problem is said once, as it ends, on one line
//! of at most [`LINE`] characters (whole with `--verbose`; the manifest always has it whole); the run ends with one
//! line naming the collectors that did not finish ok ([`closing_lines`]).

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bundle::{
    artifact::Counters,
    bounds::printable,
    manifest::{CollectorRecord, CollectorStatus, Manifest},
};

/// The longest line a snapshot prints on stderr without `--verbose`.
pub const LINE: usize = 200;

pub struct Progress {
    mode: Mode,
    /// Errors whole rather than cut to [`LINE`].
    verbose: bool,
}

enum Mode {
    Quiet,
    Lines,
    /// Events for the sidecar's log (`serve::log`), which prints them as `Lines` would or as JSON lines.
    Log,
    Bars {
        multi: MultiProgress,
        bars: Mutex<BTreeMap<String, (ProgressBar, tokio::task::JoinHandle<()>)>>,
    },
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise; nothing when `quiet`. Errors are cut to fit a line.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::default() }
        } else {
            Mode::Lines
        };
        Self { mode, verbose: false }
    }

    /// Errors whole, whatever their length (`--verbose`).
    pub fn verbose(self, verbose: bool) -> Self {
        Self { verbose, ..self }
    }

    /// Events in the sidecar's log whatever stderr is: its snapshots run side by side, where live bars would mix.
    /// Errors are logged whole.
    pub fn log() -> Self {
        Self { mode: Mode::Log, verbose: true }
    }

    pub fn started(&self, name: &str, counters: Arc<Counters>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("preserve: collector {name}: started"),
            Mode::Log => tracing::info!(collector = name, "collector {name}: started"),
            Mode::Bars { multi, bars } => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner} {prefix:<24} {msg} {elapsed:>4}")
                        .unwrap_or_else(|_| ProgressStyle::default_spinner()),
                );
                bar.set_prefix(name.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                let b = bar.clone();
                let ticker = tokio::spawn(async move {
                    loop {
                        b.set_message(amounts(&counters));
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                });
                bars.lock().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), (bar, ticker));
            }
        }
    }

    pub fn finished(&self, record: &CollectorRecord, counters: &Counters) {
        let line = format!(
            "{} {} in {:.1}s{}",
            record.status.as_str(),
            amounts(counters),
            record.duration_ms as f64 / 1000.0,
            record.error.as_ref().map(|e| format!(": {e}")).unwrap_or_default()
        );
        let cut = |line: String, room: usize| if self.verbose { printable(&line) } else { fit(&line, room) };
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("{}", cut(format!("preserve: collector {}: {line}", record.name), LINE)),
            // The log's own prefix, `preserve: `, has its room kept.
            Mode::Log => tracing::info!(
                collector = record.name,
                status = record.status.as_str(),
                "{}",
                cut(format!("collector {}: {line}", record.name), LINE - "preserve: ".len())
            ),
            Mode::Bars { bars, .. } => {
                if let Some((bar, ticker)) = bars.lock().unwrap_or_else(|p| p.into_inner()).remove(&record.name) {
                    ticker.abort();
                    // The spinner, the name's 24 columns and the elapsed time share the line.
                    bar.finish_with_message(cut(line, LINE - 32));
                }
            }
        }
    }

    pub fn note(&self, message: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("preserve: {message}"),
            Mode::Log => tracing::info!("{message}"),
            Mode::Bars { multi, .. } => {
                let _ = multi.println(message);
            }
        }
    }
}

/// The lines that end a snapshot on stderr: the collectors that did not finish ok, counted by status and named on
/// one line; `hint` (why so many failed, when preserve can tell); and where the details are. For a run whose
/// progress was not shown, `errors` is the longest line each of those collectors' errors gets (`usize::MAX`: whole).
pub fn closing_lines(
    manifest: &Manifest,
    bundle: &std::path::Path,
    hint: Option<&str>,
    errors: Option<usize>,
) -> Vec<String> {
    const ORDER: [CollectorStatus; 4] =
        [CollectorStatus::Failed, CollectorStatus::Timeout, CollectorStatus::Partial, CollectorStatus::Skipped];
    let mut counts = Vec::new();
    let mut names = Vec::new();
    for status in ORDER {
        let of: Vec<&CollectorRecord> = manifest.collectors.iter().filter(|c| c.status == status).collect();
        if !of.is_empty() {
            counts.push(format!("{} {}", of.len(), status.as_str()));
            names.extend(of);
        }
    }
    if names.is_empty() {
        return Vec::new();
    }
    let head = format!("preserve: {}: ", counts.join(", "));
    let mut lines = vec![head.clone() + &name_list(&names, LINE.saturating_sub(head.chars().count()))];
    if let Some(room) = errors {
        for c in &names {
            let error = c.error.as_deref().unwrap_or("");
            lines.push(fit(&format!("preserve: {} {}: {error}", c.name, c.status.as_str()), room));
        }
    }
    if let Some(h) = hint {
        lines.push(fit(&format!("preserve: hint: {h}"), LINE));
    }
    lines.push(printable(&format!("preserve: details: preserve inspect {}", bundle.display())));
    lines
}

/// Collector names, comma-separated, in at most `room` characters: those that do not fit are counted.
fn name_list(collectors: &[&CollectorRecord], room: usize) -> String {
    let names: Vec<String> = collectors.iter().map(|c| printable(&c.name)).collect();
    let mut shown = names.join(", ");
    let mut kept = names.len();
    while shown.chars().count() > room && kept > 0 {
        kept -= 1;
        shown = format!("{}, … {} more", names[..kept].join(", "), names.len() - kept);
        if kept == 0 {
            shown = format!("{} collectors", names.len());
        }
    }
    shown
}

/// `line` escaped onto one line and cut to at most `max` characters, `…` marking the cut.
pub fn fit(line: &str, max: usize) -> String {
    let line = printable(line);
    if line.chars().count() <= max {
        return line;
    }
    let mut out: String = line.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn amounts(c: &Counters) -> String {
    format!(
        "{} {} records",
        bytesize::ByteSize::b(c.bytes.load(Ordering::Relaxed)).display().iec(),
        c.records.load(Ordering::Relaxed)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_cut_to_fit_and_escaped() {
        assert_eq!(fit("short", 10), "short");
        assert_eq!(fit("0123456789abc", 10), "012345678…");
        assert_eq!(fit("a\nforged", 20), "a\\nforged");
        assert_eq!(fit(&"é".repeat(300), LINE).chars().count(), LINE);
    }
}
