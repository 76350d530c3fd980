//! Config errors that say where: file, line, column and the key at fault.

use std::{fmt, path::PathBuf};

/// An error in a config or collector file, located in its source text.
#[derive(Debug, Clone)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub column: Option<usize>,
    pub message: String,
}

impl std::error::Error for ConfigError {}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
            if let Some(c) = self.column {
                write!(f, ":{c}")?;
            }
        }
        write!(f, ": {}", self.message)
    }
}

impl ConfigError {
    pub fn new(file: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Self { file: file.into(), line: None, column: None, message: message.into() }
    }

    /// Locates `span` (byte offsets into `text`) as a 1-based line and column.
    pub fn at(
        file: impl Into<PathBuf>,
        text: &str,
        span: Option<std::ops::Range<usize>>,
        message: impl Into<String>,
    ) -> Self {
        let mut e = Self::new(file, message);
        if let Some(span) = span {
            let (line, column) = line_col(text, span.start);
            e.line = Some(line);
            e.column = Some(column);
        }
        e
    }

    /// Turns a `toml` deserialization error into a located one; the message already names the key.
    pub fn from_toml(file: impl Into<PathBuf>, text: &str, err: &toml::de::Error) -> Self {
        Self::at(file, text, err.span(), err.message().trim().to_string())
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text.as_bytes()[..offset];
    let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
    let col = offset - before.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    #[test]
    fn line_and_column_are_one_based() {
        assert_eq!(super::line_col("a = 1\nbb = 2\n", 6), (2, 1));
        assert_eq!(super::line_col("a = 1\nbb = 2\n", 9), (2, 4));
    }
}
