//! The sidecar's log on stderr, one line per event: as text (`preserve serve: <message>`, the lines an operator
//! reads and the docs quote) or as JSON lines for a log shipper, where the event's fields (snapshot id, profile,
//! status, archive, collector) are keys of their own beside the same message.

use std::fmt;

use tracing::{
    Event, Level, Subscriber,
    field::{Field, Visit},
};
use tracing_subscriber::{
    filter::Targets,
    fmt::{FmtContext, FormatEvent, FormatFields, format::Writer},
    layer::SubscriberExt,
    registry::LookupSpan,
    util::SubscriberInitExt,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// `preserve serve: <message>`.
    #[default]
    Text,
    /// One JSON object per line: `timestamp`, `level`, `message`, the event's fields, `target`.
    Json,
}

/// Sends preserve's events to stderr in `format`, from now on. A second call changes nothing.
pub fn init(format: LogFormat) {
    // preserve's own events only: what the libraries it uses say (through `log` or `tracing`) was never shown, and
    // a line of theirs could quote what they were handling.
    let ours = Targets::new().with_target("preserve", Level::INFO);
    let log = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => tracing_subscriber::registry().with(log.event_format(Plain)).with(ours).try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(log.json().flatten_event(true).with_current_span(false).with_span_list(false))
            .with(ours)
            .try_init(),
    };
}

/// The text lines as they were before there were JSON ones: the sidecar's own events say `preserve serve:`, those
/// of what it shares with the CLI (a snapshot's progress, a fatal error) `preserve:`, as the CLI says them.
struct Plain;

impl<S, N> FormatEvent<S, N> for Plain
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(&self, _: &FmtContext<'_, S, N>, mut writer: Writer<'_>, event: &Event<'_>) -> fmt::Result {
        let who = if event.metadata().target().starts_with("preserve::serve") { "preserve serve" } else { "preserve" };
        let mut message = Message::default();
        event.record(&mut message);
        // A message can quote what an alert or a server said: escaped, it stays one line, so nobody can write a
        // line of the log that the sidecar did not.
        writeln!(writer, "{who}: {}", crate::bundle::bounds::printable(&message.0))
    }
}

/// The `message` of an event; its other fields are for the JSON lines (the message already says them).
#[derive(Default)]
struct Message(String);

impl Visit for Message {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.0 = value.to_string();
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }
}
