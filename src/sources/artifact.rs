//! The artifact as a source sees it: opened with the redaction its content needs, so every byte a source writes
//! passes that redaction on its way to the bundle. There is no other way for a source to write an artifact, so a
//! new source cannot forget to redact; the mode is recorded in the manifest beside the artifact.

use std::{io, io::Write, sync::Arc};

use crate::{
    bundle::artifact::ArtifactWriter,
    redact::{Format, Redactor, Tally, TextRedactor},
};

/// How an artifact's content is redacted, chosen when it is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redaction {
    /// Text in a format (a log, a config file, a response body): line by line, known values, credential shapes and
    /// the format's secret keys.
    Text(Format),
    /// Data that is evidence as it is (table rows, stream entries, stored policies): known values and the shapes
    /// that are credentials wherever they are, never signatures or hashes.
    Data,
    /// Bytes whose framing counts them (a `pg_dump` custom archive): known values and credential shapes are
    /// masked with `*` of the same length. The reason says why the content cannot be redacted as text.
    Binary { reason: &'static str },
}

impl Redaction {
    /// What the manifest records of it.
    pub fn describe(&self) -> String {
        match self {
            Self::Text(f) => format!("text:{}", f.name()),
            Self::Data => "data".into(),
            Self::Binary { reason } => format!("binary: {reason}"),
        }
    }
}

/// Text and data are redacted in batches of whole lines of about this size (see `Write for Artifact`).
const BATCH: usize = 64 << 10;

/// Redacted text is written a line at a time; a line longer than this is redacted in pieces of about this size,
/// cut where no secret is split (see [`Artifact::long_line_cut`]).
const MAX_PIECE: usize = 1 << 20;
/// How much of a long line on each side of a cut must redact to itself for the cut to split no secret: more than
/// any key, separator and secret value preserve's rules take together.
const CUT_CONTEXT: usize = 512;
/// Binary content is masked a line at a time too (the COPY data inside a dump is line-based); past
/// [`MAX_BINARY_PIECE`] without a line end, it is masked in pieces that keep this much back, so a secret that
/// starts before the cut is masked whole and one starting after it waits for the next piece.
const BINARY_KEEP: usize = 64 << 10;
const MAX_BINARY_PIECE: usize = 8 << 20;

/// An artifact being written. Implements [`Write`]: what is written is redacted, then hashed and counted.
pub struct Artifact {
    /// `None` once finished or abandoned.
    out: Option<ArtifactWriter>,
    redaction: Redaction,
    redactor: Arc<Redactor>,
    tally: Arc<Tally>,
    text: Option<TextRedactor<Arc<Redactor>>>,
    /// What was written after the last line end: redacted once its line is complete.
    pending: Vec<u8>,
    /// A line longer than this is redacted in pieces of this size.
    max_line: usize,
    masked: u64,
    /// Whether redaction changed anything written so far.
    redacted: bool,
}

impl Artifact {
    pub(super) fn new(
        mut out: ArtifactWriter,
        redaction: Redaction,
        redactor: Arc<Redactor>,
        tally: Arc<Tally>,
    ) -> Self {
        out.set_redaction(redaction.describe());
        let text = match redaction {
            Redaction::Text(format) => Some(TextRedactor::new(redactor.clone(), format)),
            _ => None,
        };
        Self {
            out: Some(out),
            redaction,
            redactor,
            tally,
            text,
            pending: Vec::new(),
            max_line: MAX_PIECE,
            masked: 0,
            redacted: false,
        }
    }

    fn out(&mut self) -> io::Result<&mut ArtifactWriter> {
        self.out.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "artifact already closed"))
    }

    /// Redacts and writes `chunk`, which ends at a line end or is a whole piece.
    fn emit(&mut self, chunk: &[u8]) -> io::Result<()> {
        let clean = match (&mut self.text, self.redaction) {
            (Some(text), _) => text.lines(chunk, &self.tally),
            (None, Redaction::Data) => self.redactor.redact_data(chunk, &self.tally),
            (None, _) => std::borrow::Cow::Borrowed(chunk),
        };
        self.redacted |= matches!(clean, std::borrow::Cow::Owned(_));
        let out = self.out.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "artifact closed"))?;
        out.write_all(&clean)
    }

    /// Masks and writes the pending binary bytes up to `cut`, keeping the rest pending.
    fn emit_binary(&mut self, cut: usize) -> io::Result<()> {
        let masked = self.redactor.mask(&mut self.pending, cut, &self.tally) as u64;
        self.masked += masked;
        self.redacted |= masked > 0;
        let out = self.out.as_mut().ok_or_else(|| io::Error::new(io::ErrorKind::BrokenPipe, "artifact closed"))?;
        out.write_all(&self.pending[..cut])?;
        self.pending.drain(..cut);
        Ok(())
    }

    /// Writes out whatever is pending (the last line, without its line end).
    fn drain_pending(&mut self) -> io::Result<()> {
        if self.pending.is_empty() {
            return Ok(());
        }
        if matches!(self.redaction, Redaction::Binary { .. }) {
            return self.emit_binary(self.pending.len());
        }
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest)
    }

    /// Writes the pending part of a line past `max_line` long in pieces, each cut by [`Artifact::long_line_cut`].
    fn drain_long_line(&mut self) -> io::Result<()> {
        while self.pending.len() >= self.max_line {
            let cut = self.long_line_cut();
            let rest = self.pending.split_off(cut);
            let piece = std::mem::replace(&mut self.pending, rest);
            self.emit(&piece)?;
        }
        Ok(())
    }

    /// Where to cut the pending part of a line too long to redact whole: just after a separator (space, tab, `,`,
    /// `;`, `&`) whose surroundings, [`CUT_CONTEXT`] bytes each side, redact to themselves, so that no secret nor
    /// the key before one lies across the cut. Tries separators from the end back to half of what is pending; when
    /// none is quiet (a line made to defeat this), the last separator, or everything without one.
    fn long_line_cut(&self) -> usize {
        let p = &self.pending;
        let floor = p.len() / 2;
        let scratch = Tally::default();
        let quiet = |window: &[u8]| match self.redaction {
            Redaction::Data => matches!(self.redactor.redact_data(window, &scratch), std::borrow::Cow::Borrowed(_)),
            // Text rules cover every format's key-value shapes on a fragment, which a format's parser may not.
            _ => matches!(self.redactor.redact_as(window, Format::Text, &scratch), std::borrow::Cow::Borrowed(_)),
        };
        let mut fallback = None;
        let mut end = p.len().saturating_sub(CUT_CONTEXT);
        for _ in 0..64 {
            let Some(i) = p[floor..end].iter().rposition(|b| matches!(b, b' ' | b'\t' | b',' | b';' | b'&')) else {
                break;
            };
            let at = floor + i + 1;
            fallback.get_or_insert(at);
            if quiet(&p[at.saturating_sub(CUT_CONTEXT)..(at + CUT_CONTEXT).min(p.len())]) {
                return at;
            }
            // The next candidate's surroundings must not hold what made this one loud.
            end = (at - 1).saturating_sub(CUT_CONTEXT).max(floor);
        }
        fallback.unwrap_or(p.len())
    }

    /// Redacts lines up to `bytes` long whole instead of in pieces of 1 MiB: for content whose structure spans a
    /// long line (a JSON document without line ends), at the cost of holding that much.
    pub fn set_max_line(&mut self, bytes: usize) {
        self.max_line = bytes.max(MAX_PIECE);
    }

    /// Counts `n` more records (lines, rows, entries) in this artifact.
    pub fn add_records(&mut self, n: u64) {
        if let Some(o) = &mut self.out {
            o.add_records(n);
        }
    }

    /// Marks the artifact as cut short by a limit.
    pub fn set_truncated(&mut self) {
        if let Some(o) = &mut self.out {
            o.set_truncated();
        }
    }

    /// Records where the artifact's content came from (a file path, a container).
    pub fn set_source(&mut self, source: impl Into<String>) {
        if let Some(o) = &mut self.out {
            o.set_source(source);
        }
    }

    /// Bytes written to the artifact so far, redacted (what is pending is not counted yet).
    pub fn bytes(&self) -> u64 {
        self.out.as_ref().map_or(0, ArtifactWriter::bytes)
    }

    /// Writes out the last line even though it has no line end yet: what was written so far is then redacted.
    pub fn flush_lines(&mut self) -> io::Result<()> {
        self.drain_pending()
    }

    /// Whether redaction changed anything written so far (see [`Artifact::flush_lines`]).
    pub fn redacted(&self) -> bool {
        self.redacted
    }

    /// How many secrets were masked in a binary artifact so far.
    pub fn masked(&self) -> u64 {
        self.masked
    }

    /// Closes an artifact its writer could not complete: what was written is kept, hashed, marked truncated, with
    /// `reason` as its error.
    pub fn abandon(mut self, reason: &str) {
        let _ = self.drain_pending();
        if let Some(o) = self.out.take() {
            o.abandon(reason);
        }
    }

    /// Closes the artifact; its hash is then fixed. Fails if the data could not all be written.
    pub fn finish(mut self) -> io::Result<()> {
        let drained = self.drain_pending();
        let out = self.out.take().ok_or_else(|| io::Error::other("artifact already closed"))?;
        match drained {
            Ok(()) => out.finish(),
            Err(e) => {
                out.abandon(&format!("write failed: {e}"));
                Err(e)
            }
        }
    }
}

impl Write for Artifact {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.out()?;
        if let Redaction::Binary { .. } = self.redaction {
            // What was pending holds no line end: only the new bytes are searched.
            let before = self.pending.len();
            self.pending.extend_from_slice(buf);
            let cut = match memchr::memrchr(b'\n', &self.pending[before..]) {
                Some(i) => before + i + 1,
                None if self.pending.len() > MAX_BINARY_PIECE => self.pending.len() - BINARY_KEEP,
                None => return Ok(buf.len()),
            };
            self.emit_binary(cut)?;
            return Ok(buf.len());
        }
        // Lines are gathered into batches of about [`BATCH`]: the redactor finds what it looks for in a batch in
        // one pass, where a source writing a line at a time (a log's reader) cost it a search per line.
        let before = self.pending.len();
        self.pending.extend_from_slice(buf);
        if self.pending.len() < BATCH {
            return Ok(buf.len());
        }
        let last = memchr::memrchr(b'\n', &self.pending[before..])
            .map(|i| before + i)
            .or_else(|| memchr::memrchr(b'\n', &self.pending[..before]));
        match last {
            Some(last) => {
                let rest = self.pending.split_off(last + 1);
                let lines = std::mem::replace(&mut self.pending, rest);
                self.emit(&lines)?;
                self.drain_long_line()?;
            }
            None => self.drain_long_line()?,
        }
        Ok(buf.len())
    }

    /// Flushes what is complete; a line not yet ended stays pending until it is (or until the artifact is closed).
    fn flush(&mut self) -> io::Result<()> {
        self.out()?.flush()
    }
}

impl Drop for Artifact {
    /// Dropped without [`Artifact::finish`]: its collector was cut off. What it had written reaches the artifact,
    /// redacted, before the artifact is sealed as cut off.
    fn drop(&mut self) {
        let _ = self.drain_pending();
    }
}

impl std::fmt::Debug for Artifact {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Artifact").field("redaction", &self.redaction).field("pending", &self.pending.len()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bundle::{artifact::Staging, outdir::OutDir},
        config::{EnvSource, Environment, Secret},
        sources::Collection,
    };

    struct NoVars;
    impl EnvSource for NoVars {
        fn var(&self, _: &str) -> Option<String> {
            None
        }
    }

    const SECRET: &str = "s3cr3t-Pa55word-of-the-site";

    /// A collection as the runner makes one, whose run knows `SECRET`, in a staging area of its own.
    fn collection(dir: &tempfile::TempDir) -> (Collection, Arc<Staging>) {
        let out = OutDir::open(dir.path()).unwrap();
        let staging = Staging::create(Arc::new(out.private(".t.staging").unwrap()), 3);
        let key = crate::redact::FingerprintKey::per_bundle().unwrap();
        let redactor = Arc::new(Redactor::new(vec![("site password".into(), Secret::new(SECRET))], key));
        let env = Arc::new(Environment::load(None, &NoVars).unwrap());
        let cx = Collection::new(
            "c".into(),
            Default::default(),
            env,
            Default::default(),
            Default::default(),
            Default::default(),
            staging.clone(),
            redactor,
            Default::default(),
            Default::default(),
        );
        (cx, staging)
    }

    fn written(staging: &Staging, dir: &tempfile::TempDir) -> Vec<(String, Option<String>, String)> {
        let root = dir.path().join(".t.staging");
        staging
            .finish()
            .into_iter()
            .map(|a| {
                let frame = std::fs::read(root.join(&a.record.path)).unwrap();
                let text = String::from_utf8(zstd::decode_all(&frame[..]).unwrap()).unwrap();
                (a.record.path, a.record.redaction, text)
            })
            .collect()
    }

    /// A line past the 1 MiB redacted at once is cut where no secret is: however a secret, with or without its
    /// key, straddles where a fixed cut would fall, none survives, and the line comes out otherwise whole.
    #[test]
    fn a_line_too_long_to_redact_whole_is_cut_where_no_secret_is() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, staging) = collection(&dir);
        let shapes = [("password=", "Xx9longlinepw"), ("Authorization: Bearer ", "Xx9longlinebearer0"), ("", SECRET)];
        let mut lines = Vec::new();
        for (n, (key, value)) in shapes.iter().enumerate() {
            for shift in (1..key.len() + value.len()).step_by(4) {
                for (m, mode) in [Redaction::Text(Format::Text), Redaction::Data].into_iter().enumerate() {
                    let mut line = "filler ".repeat(MAX_PIECE / 7 + 1).into_bytes();
                    line.truncate(MAX_PIECE - shift - 1);
                    line.push(b' ');
                    line.extend(format!("{key}{value} and more ").bytes());
                    line.extend("tail ".repeat(300).bytes());
                    line.push(b'\n');
                    let path = format!("long-{n}-{shift}-{m}.log");
                    let mut a = cx.artifact(&path, "text/plain", mode).unwrap();
                    // Written as a reader hands it over: fixed-size chunks, the old cut falling at exactly 1 MiB.
                    for chunk in line.chunks(4096) {
                        a.write_all(chunk).unwrap();
                    }
                    a.finish().unwrap();
                    lines.push((path, line.len()));
                }
            }
        }
        let out = written(&staging, &dir);
        assert_eq!(out.len(), lines.len());
        for (path, _, text) in &out {
            for (_, value) in shapes {
                assert!(!text.contains(value), "{path}: {value} survived");
            }
            assert!(text.starts_with("filler filler ") && text.ends_with(&format!("{}\n", "tail ".repeat(300))));
            assert_eq!(text.matches('\n').count(), 1, "{path}: one line still");
        }
    }

    #[test]
    fn every_mode_redacts_what_a_source_writes_however_it_is_split() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, staging) = collection(&dir);
        // A source that writes raw bytes, split anywhere, as a careless new source would.
        let pieces = |text: &str| -> Vec<Vec<u8>> { text.as_bytes().chunks(5).map(<[u8]>::to_vec).collect() };

        let mut log = cx.artifact("app.log", "text/plain", Redaction::Text(Format::Text)).unwrap();
        for p in pieces(&format!("login ok\nconnecting with {SECRET} now\nAuthorization: Bearer abc.def.ghi\nend")) {
            log.write_all(&p).unwrap();
        }
        log.finish().unwrap();

        let mut yaml = cx.text_artifact("values.yaml", "application/yaml").unwrap();
        yaml.write_all(b"db:\n  password: hunter2hunter2\n  host: pg\n").unwrap();
        yaml.finish().unwrap();

        let mut rows = cx.artifact("rows.csv", "text/csv", Redaction::Data).unwrap();
        let row = format!(
            "1,{SECRET},postgres://u:dbpass99@db/x,9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0\n"
        );
        for p in pieces(&row) {
            rows.write_all(&p).unwrap();
        }
        rows.finish().unwrap();

        let mut dump = cx.artifact("x.dump", "application/octet-stream", Redaction::Binary { reason: "test" }).unwrap();
        let mut bytes = vec![0u8, 1, 2];
        bytes.extend_from_slice(SECRET.as_bytes());
        bytes.extend_from_slice(&[3, 4]);
        for p in bytes.chunks(4) {
            dump.write_all(p).unwrap();
        }
        assert_eq!(dump.masked(), 0, "nothing masked before the secret is whole");
        dump.finish().unwrap();

        let out = written(&staging, &dir);
        let by = |name: &str| out.iter().find(|(p, ..)| p.ends_with(name)).unwrap();
        for (path, _, text) in &out {
            assert!(!text.contains(SECRET), "{path}: {text:?}");
        }
        let (_, mode, text) = by("app.log");
        assert_eq!(mode.as_deref(), Some("text:plain"));
        assert!(text.starts_with("login ok\nconnecting with [REDACTED:") && text.ends_with("\nend"), "{text:?}");
        assert!(!text.contains("abc.def.ghi"), "{text:?}");
        let (_, mode, text) = by("values.yaml");
        assert_eq!(mode.as_deref(), Some("text:yaml"));
        assert!(!text.contains("hunter2hunter2") && text.contains("host: pg"), "{text:?}");
        let (_, mode, text) = by("rows.csv");
        assert_eq!(mode.as_deref(), Some("data"));
        assert!(!text.contains("dbpass99"), "{text:?}");
        assert!(
            text.contains("9f86d081884c7d659a2feaea0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a0"),
            "a digest is evidence"
        );
        let (_, mode, text) = by("x.dump");
        assert_eq!(mode.as_deref(), Some("binary: test"));
        assert_eq!(text.len(), bytes.len(), "a binary artifact keeps every length");
        assert!(text.contains(&"*".repeat(SECRET.len())));
    }

    #[test]
    fn a_collector_cut_off_mid_line_still_has_that_line_redacted() {
        let dir = tempfile::tempdir().unwrap();
        let (cx, staging) = collection(&dir);
        let mut log = cx.artifact("cut.log", "text/plain", Redaction::Text(Format::Text)).unwrap();
        log.write_all(format!("first\nhalf a line with {SECRET}").as_bytes()).unwrap();
        drop(log);
        let out = written(&staging, &dir);
        assert!(out[0].2.starts_with("first\nhalf a line with [REDACTED:"), "{:?}", out[0].2);
    }
}
