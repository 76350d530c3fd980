//! Rows of `COPY ... TO STDOUT` in PostgreSQL's text format, turned into the CSV that `FORMAT csv` would have sent.
//!
//! Tables are exported as CSV, but asked of the server in text format: the server's CSV encoder scans every value
//! for characters that need quoting and doubles the quotes in every JSON value, which made a ledger's export 15-20%
//! slower than `pg_dump`'s text COPY of the same rows (docs/performance.md). Here the text row is split once
//! (`memchr` on tabs, backslash escapes undone) into its fields, which the audit-chain tap reads as they are, and
//! the CSV is written from them by PostgreSQL's own rules, byte for byte (tests/postgres_export.rs compares the two
//! on a real server).
//!
//! The text format: one COPY message is one row ending in `\n`; fields are separated by tabs; NULL is `\N`; a
//! backslash, and the control characters backspace, form feed, newline, carriage return, tab and vertical tab, are
//! written as `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, `\v`; every other byte as itself.

/// One row: every field's bytes back to back (NULL as nothing), where each ends, which the CSV must quote, and where
/// the quotes are (the CSV doubles them).
#[derive(Default)]
pub struct Row {
    bytes: Vec<u8>,
    ends: Vec<usize>,
    quoted: Vec<bool>,
    quotes: Vec<usize>,
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

    /// The row of column names (the CSV header).
    pub fn set_names<'a>(&mut self, names: impl IntoIterator<Item = &'a str>) {
        self.clear();
        let names: Vec<&str> = names.into_iter().collect();
        for name in &names {
            let start = self.bytes.len();
            self.quotes.extend(name.bytes().enumerate().filter(|(_, b)| *b == b'"').map(|(i, _)| start + i));
            self.bytes.extend_from_slice(name.as_bytes());
            self.ends.push(self.bytes.len());
            self.quoted
                .push(name.is_empty() || name.contains([',', '"', '\n', '\r']) || (names.len() == 1 && *name == "\\."));
        }
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
        self.quoted.clear();
        self.quotes.clear();
    }

    /// Reads one COPY text message of `width` columns, in one pass over its tabs, backslashes and quotes and one
    /// over its commas. Malformed input (a lone backslash at the end) is taken as it comes, never a panic.
    pub fn read_text(&mut self, message: &[u8], width: usize) {
        self.clear();
        if width == 0 {
            return;
        }
        let row = message.strip_suffix(b"\n").unwrap_or(message);
        let mut commas = memchr::memchr_iter(b',', row).peekable();
        // Where the current field starts in `row`, how far `row` is copied, and whether the CSV must quote the field
        // for what it holds so far (a quote, or a line break that was escaped).
        let (mut start, mut copied, mut quote) = (0, 0, false);
        for i in memchr::memchr3_iter(b'\t', b'\\', b'"', row) {
            if i < copied {
                continue; // the byte after a backslash, already taken
            }
            self.bytes.extend_from_slice(&row[copied..i]);
            match row[i] {
                b'\t' => {
                    self.end_field(&row[start..i], quote, &mut commas, i, width);
                    (start, quote) = (i + 1, false);
                }
                b'"' => {
                    self.quotes.push(self.bytes.len());
                    self.bytes.push(b'"');
                    quote = true;
                }
                _ => match row.get(i + 1) {
                    Some(&c) => {
                        let c = match c {
                            b'b' => 0x08,
                            b'f' => 0x0c,
                            b'n' => b'\n',
                            b'r' => b'\r',
                            b't' => b'\t',
                            b'v' => 0x0b,
                            other => other,
                        };
                        if matches!(c, b'\n' | b'\r' | b'"') {
                            quote = true;
                            if c == b'"' {
                                self.quotes.push(self.bytes.len());
                            }
                        }
                        self.bytes.push(c);
                        copied = i + 2;
                        continue;
                    }
                    None => self.bytes.push(b'\\'),
                },
            }
            copied = i + 1;
        }
        self.bytes.extend_from_slice(&row[copied.min(row.len())..]);
        self.end_field(&row[start..], quote, &mut commas, row.len(), width);
    }

    /// Closes the field whose text-format bytes are `raw`, ending at `end` in the row.
    fn end_field(
        &mut self,
        raw: &[u8],
        quote: bool,
        commas: &mut std::iter::Peekable<memchr::Memchr<'_>>,
        end: usize,
        width: usize,
    ) {
        let first = self.ends.last().copied().unwrap_or(0);
        if raw == b"\\N" {
            self.bytes.truncate(first);
            self.ends.push(first);
            self.quoted.push(false);
            return;
        }
        let mut comma = false;
        while let Some(&c) = commas.peek() {
            if c >= end {
                break;
            }
            comma = true;
            commas.next();
        }
        let value = &self.bytes[first..];
        let quote = quote || comma || value.is_empty() || (width == 1 && value == b"\\.");
        self.ends.push(self.bytes.len());
        self.quoted.push(quote);
    }

    /// Appends the row as `COPY ... (FORMAT csv)` writes it: comma-separated; NULL as nothing; a value quoted when
    /// it is empty or holds a comma, a quote, a newline or a carriage return (and `\.` alone on a line), its quotes
    /// doubled; then `\n`.
    pub fn write_csv(&self, out: &mut Vec<u8>) {
        let mut quotes = self.quotes.iter().copied().peekable();
        for i in 0..self.len() {
            if i > 0 {
                out.push(b',');
            }
            let r = self.range(i);
            if !self.quoted[i] {
                out.extend_from_slice(&self.bytes[r]);
                continue;
            }
            out.push(b'"');
            let mut from = r.start;
            while let Some(q) = quotes.next_if(|&q| q < r.end) {
                out.extend_from_slice(&self.bytes[from..=q]);
                out.push(b'"');
                from = q + 1;
            }
            out.extend_from_slice(&self.bytes[from..r.end]);
            out.push(b'"');
        }
        out.push(b'\n');
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

    fn convert(message: &str, width: usize) -> (Vec<String>, String) {
        let mut row = Row::default();
        row.read_text(message.as_bytes(), width);
        let fields = (0..row.len()).map(|i| String::from_utf8_lossy(row.field(i)).into_owned()).collect();
        let mut out = Vec::new();
        row.write_csv(&mut out);
        (fields, String::from_utf8(out).unwrap())
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
        let mut row = Row::default();
        row.set_names(["id", "we ird", "a,b", "q\"uote"]);
        let mut out = Vec::new();
        row.write_csv(&mut out);
        assert_eq!(String::from_utf8(out).unwrap(), "id,we ird,\"a,b\",\"q\"\"uote\"\n");
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
