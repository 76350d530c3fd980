//! Rows of `COPY ... TO STDOUT` in PostgreSQL's text format, turned into the CSV that `FORMAT csv` would have sent.
//!
//! Tables are exported as CSV, but asked of the server in text format: the server's CSV encoder scans every value
//! for characters that need quoting and doubles the quotes in every JSON value, which made a ledger's export slower
//! than `pg_dump`'s text COPY of the same rows (docs/performance.md). Here each text row is written as CSV in one
//! pass over its tabs, backslashes and quotes ([`text_to_csv`]), by PostgreSQL's own rules, byte for byte
//! (tests/postgres_export.rs compares the two on a real server); the audit-chain tap splits the row into its values
//! with [`Row::read_text`].
//!
//! The text format: one COPY message is one row ending in `\n`; fields are separated by tabs; NULL is `\N`; a
//! backslash, and the control characters backspace, form feed, newline, carriage return, tab and vertical tab, are
//! written as `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\v`; every other byte as itself.

/// The byte a backslash escape stands for.
fn unescaped(c: u8) -> u8 {
    match c {
        b'b' => 0x08,
        b'f' => 0x0c,
        b'n' => b'\n',
        b'r' => b'\r',
        b't' => b'\t',
        b'v' => 0x0b,
        other => other,
    }
}

/// Whether PostgreSQL's CSV quotes a value whatever characters it holds: an empty one (NULL is written as nothing),
/// and `\.` alone on a line (it would read as the end of data).
fn quoted_anyway(value: &[u8], single_column: bool) -> bool {
    value.is_empty() || (single_column && value == b"\\.")
}

/// Appends one COPY text message of `width` columns as `COPY ... (FORMAT csv)` writes the row: comma-separated;
/// NULL as nothing; a value quoted when it is empty or holds a comma, a quote, a newline or a carriage return (or is
/// `\.` alone on a line), its quotes doubled; then `\n`. Malformed input (a lone backslash at the end) is taken as
/// it comes, never a panic.
pub fn text_to_csv(message: &[u8], width: usize, out: &mut Vec<u8>) {
    if width == 0 {
        out.push(b'\n');
        return;
    }
    let row = message.strip_suffix(b"\n").unwrap_or(message);
    let mut commas = memchr::memchr_iter(b',', row).peekable();
    // Where the current field starts in `row` and in `out`, how far `row` is copied, and whether the field must be
    // quoted for what it holds so far (a quote, or a line break that was escaped). A value is written as it is
    // read; the opening quote is put in front of it once its end shows it needs one.
    let (mut start, mut at, mut copied, mut quote) = (0, out.len(), 0, false);
    let mut close = |out: &mut Vec<u8>, raw: &[u8], at: usize, quote: bool, end: usize| {
        if raw == b"\\N" {
            out.truncate(at);
            return;
        }
        let mut comma = false;
        while commas.next_if(|&c| c < end).is_some() {
            comma = true;
        }
        if quote || comma || quoted_anyway(&out[at..], width == 1) {
            out.insert(at, b'"');
            out.push(b'"');
        }
    };
    for i in memchr::memchr3_iter(b'\t', b'\\', b'"', row) {
        if i < copied {
            continue; // the byte after a backslash, already taken
        }
        out.extend_from_slice(&row[copied..i]);
        copied = i + 1;
        match row[i] {
            b'\t' => {
                close(out, &row[start..i], at, quote, i);
                out.push(b',');
                (start, at, quote) = (i + 1, out.len(), false);
            }
            b'"' => {
                out.extend_from_slice(b"\"\"");
                quote = true;
            }
            _ => match row.get(i + 1).map(|&c| unescaped(c)) {
                Some(c) => {
                    if c == b'"' {
                        out.push(b'"');
                    }
                    quote |= matches!(c, b'"' | b'\n' | b'\r');
                    out.push(c);
                    copied = i + 2;
                }
                None => out.push(b'\\'),
            },
        }
    }
    out.extend_from_slice(&row[copied.min(row.len())..]);
    close(out, &row[start..], at, quote, row.len());
    out.push(b'\n');
}

/// Appends column names as `COPY ... (FORMAT csv, HEADER true)` writes its header line.
pub fn header_csv<'a>(names: impl IntoIterator<Item = &'a str>, out: &mut Vec<u8>) {
    let names: Vec<&str> = names.into_iter().collect();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        if name.contains([',', '"', '\n', '\r']) || quoted_anyway(name.as_bytes(), names.len() == 1) {
            out.push(b'"');
            out.extend_from_slice(name.replace('"', "\"\"").as_bytes());
            out.push(b'"');
        } else {
            out.extend_from_slice(name.as_bytes());
        }
    }
    out.push(b'\n');
}

/// One row's values, for the audit-chain tap: every field's bytes back to back (NULL as nothing) and where each
/// ends.
#[derive(Default)]
pub struct Row {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Row {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Field `i`'s bytes (empty for NULL, and past the last field).
    pub fn field(&self, i: usize) -> &[u8] {
        self.bytes.get(self.range(i)).unwrap_or_default()
    }

    /// Every field's bytes back to back, as [`Row::field`] slices them.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where field `i` lies in [`Row::bytes`].
    pub fn range(&self, i: usize) -> std::ops::Range<usize> {
        let start = if i == 0 { 0 } else { self.ends.get(i - 1).copied().unwrap_or(0) };
        start..self.ends.get(i).copied().unwrap_or(start)
    }

    /// The row of column names (the header).
    pub fn set_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.bytes.clear();
        self.ends.clear();
        for name in names {
            self.bytes.extend_from_slice(name.as_bytes());
            self.ends.push(self.bytes.len());
        }
    }

    /// Splits one COPY text message into its values, escapes undone. Malformed input is taken as it comes.
    pub fn read_text(&mut self, message: &[u8]) {
        self.bytes.clear();
        self.ends.clear();
        let row = message.strip_suffix(b"\n").unwrap_or(message);
        let (mut start, mut copied) = (0, 0);
        let close = |row_bytes: &mut Vec<u8>, ends: &mut Vec<usize>, raw: &[u8]| {
            if raw == b"\\N" {
                row_bytes.truncate(ends.last().copied().unwrap_or(0));
            }
            ends.push(row_bytes.len());
        };
        for i in memchr::memchr2_iter(b'\t', b'\\', row) {
            if i < copied {
                continue;
            }
            self.bytes.extend_from_slice(&row[copied..i]);
            copied = i + 1;
            if row[i] == b'\t' {
                close(&mut self.bytes, &mut self.ends, &row[start..i]);
                start = i + 1;
            } else if let Some(&c) = row.get(i + 1) {
                self.bytes.push(unescaped(c));
                copied = i + 2;
            } else {
                self.bytes.push(b'\\');
            }
        }
        self.bytes.extend_from_slice(&row[copied.min(row.len())..]);
        close(&mut self.bytes, &mut self.ends, &row[start..]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How PostgreSQL writes a value in text format.
    fn text(field: Option<&str>) -> String {
        let Some(f) = field else { return "\\N".into() };
        let mut s = String::new();
        for c in f.chars() {
            match c {
                '\\' => s.push_str("\\\\"),
                '\u{8}' => s.push_str("\\b"),
                '\u{c}' => s.push_str("\\f"),
                '\n' => s.push_str("\\n"),
                '\r' => s.push_str("\\r"),
                '\t' => s.push_str("\\t"),
                '\u{b}' => s.push_str("\\v"),
                c => s.push(c),
            }
        }
        s
    }

    /// How PostgreSQL writes a value in CSV.
    fn csv(field: Option<&str>, single: bool) -> String {
        match field {
            None => String::new(),
            Some(f) if f.is_empty() || f.contains([',', '"', '\n', '\r']) || (single && f == "\\.") => {
                format!("\"{}\"", f.replace('"', "\"\""))
            }
            Some(f) => f.to_string(),
        }
    }

    /// The row's values as the tap reads them, and its CSV.
    fn convert(message: &str, width: usize) -> (Vec<String>, String) {
        let mut row = Row::default();
        row.read_text(message.as_bytes());
        let fields = (0..row.len()).map(|i| String::from_utf8_lossy(row.field(i)).into_owned()).collect();
        let mut out = b"before|".to_vec();
        text_to_csv(message.as_bytes(), width, &mut out);
        let out = String::from_utf8(out).unwrap();
        (fields, out.strip_prefix("before|").expect("appended, not overwritten").to_string())
    }

    #[test]
    fn text_rows_become_postgres_csv() {
        assert_eq!(
            convert("evt-1\t\\N\t\t{\"k\": \"v,w\"}\tline\\nbreak\\r\ta\\\\b\\tc\n", 6),
            (
                vec![
                    "evt-1".into(),
                    "".into(),
                    "".into(),
                    "{\"k\": \"v,w\"}".into(),
                    "line\nbreak\r".into(),
                    "a\\b\tc".into()
                ],
                "evt-1,,\"\",\"{\"\"k\"\": \"\"v,w\"\"}\",\"line\nbreak\r\",a\\b\tc\n".into()
            ),
            "NULL is nothing, empty text is quoted; tabs and backslashes need no quotes in CSV"
        );
        assert_eq!(convert("\\\\.\n", 1).1, "\"\\.\"\n", "`\\.` alone on a line is quoted");
        assert_eq!(convert("\\\\.\tx\n", 2).1, "\\.,x\n", "but not beside another column");
        assert_eq!(convert("\\N\n", 1).1, "\n", "one NULL column: an empty line");
        assert_eq!(convert("\n", 1).1, "\"\"\n", "one empty column");
        assert_eq!(convert("\n", 0).1, "\n", "no columns");
        assert_eq!(convert("a\\\n", 1).0, ["a\\"], "malformed: a lone backslash kept");
    }

    #[test]
    fn a_header_is_written_as_postgres_writes_column_names() {
        let mut out = Vec::new();
        header_csv(["id", "we ird", "a,b", "q\"uote", ""], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "id,we ird,\"a,b\",\"q\"\"uote\",\"\"\n");
        let mut out = Vec::new();
        header_csv(["\\."], &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "\"\\.\"\n");
    }

    /// Generated rows of every byte that matters: the text message PostgreSQL would send reads back to the values,
    /// and becomes exactly the CSV PostgreSQL would have sent, which a general CSV reader reads back to them too.
    #[test]
    fn agrees_with_postgres_rules_and_a_general_csv_reader_on_generated_rows() {
        let alphabet =
            ["a", "7", ",", "\"", "\n", "\r", "\t", "\\", "\\.", "\u{8}", "\u{1}", " ", "é", "{\"k\":1}", ""];
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut next = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let mut reader = csv_core::Reader::new();
        for _ in 0..20_000 {
            let width = 1 + next(6);
            let values: Vec<Option<String>> = (0..width)
                .map(|_| (next(5) > 0).then(|| (0..next(6)).map(|_| alphabet[next(alphabet.len())]).collect()))
                .collect();
            let message = values.iter().map(|v| text(v.as_deref())).collect::<Vec<_>>().join("\t") + "\n";
            let (fields, line) = convert(&message, width);
            let want: Vec<String> = values.iter().map(|v| v.clone().unwrap_or_default()).collect();
            assert_eq!(fields, want, "{message:?}");
            let expected = values.iter().map(|v| csv(v.as_deref(), width == 1)).collect::<Vec<_>>().join(",") + "\n";
            assert_eq!(line, expected, "{message:?}");
            if line == "\n" {
                continue; // one NULL column: csv-core reads a blank line as no record at all
            }
            let (mut out, mut ends) = (vec![0u8; line.len() + 1], vec![0usize; line.len() + 2]);
            reader.reset();
            let (_, _, _, n) = reader.read_record(line.as_bytes(), &mut out, &mut ends);
            let mut start = 0;
            let read: Vec<String> = ends[..n]
                .iter()
                .map(|&e| {
                    let f = String::from_utf8_lossy(&out[start..e]).into_owned();
                    start = e;
                    f
                })
                .collect();
            assert_eq!(read, want, "{line:?}");
        }
    }
}
