//! One row of PostgreSQL's `COPY ... (FORMAT csv)` output split into its fields, for the audit-chain tap, which
//! reads every row of the ledger as it streams past.
//!
//! A general CSV reader (csv-core) steps a state machine through every byte; it was the largest single cost of the
//! tap. PostgreSQL's output is narrower than CSV in general: one COPY message is exactly one row, its terminator
//! last; a field is quoted from its first byte or not at all; an unquoted field never holds a comma, a quote or a
//! line break (PostgreSQL quotes any field that does); inside quotes a quote is doubled. So a field is found with
//! one SIMD search for its end (`memchr`), and a quoted one copied between its doubled quotes.

/// Splits `row` (one COPY CSV message, its terminator included or not) into `out`, every field's unescaped bytes
/// back to back, and `ends`, where each field ends in `out`. Returns the number of fields. Malformed input (an
/// unterminated quote, bytes after a closing quote) is taken as it comes, never a panic: the row's hash then fails
/// to match, which is how a damaged row is reported.
pub fn split(row: &[u8], out: &mut Vec<u8>, ends: &mut Vec<usize>) -> usize {
    out.clear();
    ends.clear();
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    let row = row.strip_suffix(b"\r").unwrap_or(row);
    let mut i = 0;
    loop {
        if row.get(i) == Some(&b'"') {
            i += 1;
            loop {
                let Some(q) = memchr::memchr(b'"', &row[i..]) else {
                    out.extend_from_slice(&row[i..]);
                    i = row.len();
                    break;
                };
                out.extend_from_slice(&row[i..i + q]);
                i += q + 1;
                if row.get(i) == Some(&b'"') {
                    out.push(b'"');
                    i += 1;
                } else {
                    break;
                }
            }
        }
        let n = memchr::memchr(b',', &row[i..]).unwrap_or(row.len() - i);
        out.extend_from_slice(&row[i..i + n]);
        i += n;
        ends.push(out.len());
        if i >= row.len() {
            return ends.len();
        }
        i += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(row: &[u8]) -> Vec<String> {
        let (mut out, mut ends) = (Vec::new(), Vec::new());
        let n = split(row, &mut out, &mut ends);
        assert_eq!(n, ends.len());
        strings(&out, &ends)
    }

    /// Fields laid out back to back in `out`, each ending where `ends` says.
    fn strings(out: &[u8], ends: &[usize]) -> Vec<String> {
        let mut start = 0;
        ends.iter()
            .map(|&e| {
                let f = String::from_utf8_lossy(&out[start..e]).into_owned();
                start = e;
                f
            })
            .collect()
    }

    /// How PostgreSQL writes a field in CSV: quoted when it is empty text or holds a delimiter, quote or line
    /// break; NULL as nothing.
    fn encode(field: Option<&str>) -> String {
        match field {
            None => String::new(),
            Some(f) if f.is_empty() || f.contains([',', '"', '\n', '\r']) => format!("\"{}\"", f.replace('"', "\"\"")),
            Some(f) => f.to_string(),
        }
    }

    #[test]
    fn postgres_rows_split_into_their_fields() {
        assert_eq!(fields(b"id,zone_id,metadata_json\n"), ["id", "zone_id", "metadata_json"]);
        assert_eq!(fields(b"evt-1,,\"\"\n"), ["evt-1", "", ""], "NULL and empty text are both empty here");
        assert_eq!(
            fields(b"a,\"{\"\"k\"\": \"\"v,w\"\"}\",\"line\nbreak\",\"\"\"\"\r\n"),
            ["a", "{\"k\": \"v,w\"}", "line\nbreak", "\""]
        );
        assert_eq!(fields(b"x,"), ["x", ""], "a last empty field");
        assert_eq!(fields(b"\"unterminated,x"), ["unterminated,x"], "malformed: taken as it comes");
        assert_eq!(fields(b"\"a\"b,c"), ["ab", "c"], "malformed: bytes after the closing quote kept");
    }

    /// Every row PostgreSQL could write, as csv-core (a general CSV reader) reads it, and as it was before encoding.
    #[test]
    fn agrees_with_a_general_csv_reader_on_generated_rows() {
        let alphabet = ["a", "7", ",", "\"", "\n", "\r", " ", "é", "{\"k\":1}", "\\", ""];
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
            let row: Vec<Option<String>> = (0..width)
                .map(|_| (next(5) > 0).then(|| (0..next(6)).map(|_| alphabet[next(alphabet.len())]).collect()))
                .collect();
            let line = row.iter().map(|f| encode(f.as_deref())).collect::<Vec<_>>().join(",") + "\n";
            let ours = fields(line.as_bytes());
            let want: Vec<String> = row.iter().map(|f| f.clone().unwrap_or_default()).collect();
            assert_eq!(ours, want, "{line:?}");
            if line == "\n" {
                continue; // one NULL column: csv-core reads a blank line as no record at all
            }

            let (mut out, mut ends) = (vec![0u8; line.len() + 1], vec![0usize; line.len() + 2]);
            reader.reset();
            let (_, _, _, n) = reader.read_record(line.as_bytes(), &mut out, &mut ends);
            assert_eq!(ours, strings(&out, &ends[..n]), "{line:?}");
        }
    }
}
