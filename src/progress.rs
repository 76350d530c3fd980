//! Progress of a snapshot: on a terminal, one live line per collector (bytes, records, elapsed); otherwise plain
//! log lines on stderr as collectors start and end.

use std::{
    collections::BTreeMap,
    io::IsTerminal,
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::bundle::{artifact::Counters, manifest::CollectorRecord};

pub struct Progress {
    mode: Mode,
}

enum Mode {
    Quiet,
    Lines,
    Bars { multi: MultiProgress, bars: Mutex<BTreeMap<String, (ProgressBar, tokio::task::JoinHandle<()>)>> },
}

impl Progress {
    /// Bars when stderr is a terminal, lines otherwise; nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars { multi: MultiProgress::with_draw_target(ProgressDrawTarget::stderr()), bars: Mutex::default() }
        } else {
            Mode::Lines
        };
        Self { mode }
    }

    /// Plain log lines whatever stderr is: the sidecar's snapshots run side by side, where live bars would mix.
    pub fn lines() -> Self {
        Self { mode: Mode::Lines }
    }

    pub fn started(&self, name: &str, counters: Arc<Counters>) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("preserve: collector {name}: started"),
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
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("preserve: collector {}: {line}", record.name),
            Mode::Bars { bars, .. } => {
                if let Some((bar, ticker)) = bars.lock().unwrap_or_else(|p| p.into_inner()).remove(&record.name) {
                    ticker.abort();
                    bar.finish_with_message(line);
                }
            }
        }
    }

    pub fn note(&self, message: &str) {
        match &self.mode {
            Mode::Quiet => {}
            Mode::Lines => eprintln!("preserve: {message}"),
            Mode::Bars { multi, .. } => {
                let _ = multi.println(message);
            }
        }
    }
}

fn amounts(c: &Counters) -> String {
    format!(
        "{} {} records",
        bytesize::ByteSize::b(c.bytes.load(Ordering::Relaxed)).display().iec(),
        c.records.load(Ordering::Relaxed)
    )
}
