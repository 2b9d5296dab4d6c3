//! The delimited chunk format: UTF-8, a header row, fields that contain the
//! delimiter, a newline or a quote are quoted with quotes doubled (RFC 4180 rules,
//! tab or comma as delimiter). Errors name the line, so a rejected file's reason
//! file tells its author what to fix.

use std::io::Write;

/// A parsed file: its header and its data rows, every row as long as the header.
#[derive(Clone, Debug, PartialEq)]
pub struct Table {
    pub header: Vec<String>,
    pub rows: Vec<Vec<String>>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ParseError {
    #[error("the file is empty: expected a header row")]
    Empty,
    #[error("line 1 (header): column {column} has an empty name")]
    EmptyColumnName { column: usize },
    #[error("line 1 (header): column name {name:?} appears twice")]
    DuplicateColumn { name: String },
    #[error("line {line} (row {row}): field {field} is not valid UTF-8")]
    InvalidUtf8 { line: u64, row: u64, field: usize },
    #[error("line {line} (row {row}): expected {expected} fields like the header, found {found}")]
    Ragged {
        line: u64,
        row: u64,
        expected: usize,
        found: usize,
    },
    #[error("line {line}: {reason}")]
    Malformed { line: u64, reason: String },
}

impl ParseError {
    /// The physical line the error is on (1 = header), if it is about one line.
    pub fn line(&self) -> Option<u64> {
        match self {
            ParseError::Empty => None,
            ParseError::EmptyColumnName { .. } | ParseError::DuplicateColumn { .. } => Some(1),
            ParseError::InvalidUtf8 { line, .. }
            | ParseError::Ragged { line, .. }
            | ParseError::Malformed { line, .. } => Some(*line),
        }
    }
}

/// Tab when the first line has one, else comma: a `.csv` chunk from the extractor
/// is tab-separated, a hand-made one usually comma-separated.
pub fn detect_delimiter(data: &[u8]) -> u8 {
    let first_line = data.split(|b| *b == b'\n').next().unwrap_or(&[]);
    if first_line.contains(&b'\t') {
        b'\t'
    } else {
        b','
    }
}

/// Parses a whole file with a header row.
pub fn parse(data: &[u8], delimiter: u8) -> Result<Table, ParseError> {
    // A UTF-8 byte-order mark is not part of the first column's name.
    let data = data.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(data);
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(false)
        .flexible(true)
        .from_reader(data);
    let mut records = reader.byte_records();
    let header_rec = match records.next() {
        None => return Err(ParseError::Empty),
        Some(r) => r.map_err(|e| malformed(&e, 1))?,
    };
    let header = utf8_fields(&header_rec, 1, 0)?;
    for (i, name) in header.iter().enumerate() {
        if name.trim().is_empty() {
            return Err(ParseError::EmptyColumnName { column: i + 1 });
        }
        if header[..i].contains(name) {
            return Err(ParseError::DuplicateColumn { name: name.clone() });
        }
    }
    let mut rows = Vec::new();
    for (i, rec) in records.enumerate() {
        let row = i as u64 + 1;
        let rec = rec.map_err(|e| malformed(&e, row + 1))?;
        let line = rec.position().map(|p| p.line()).unwrap_or(row + 1);
        if rec.len() != header.len() {
            return Err(ParseError::Ragged {
                line,
                row,
                expected: header.len(),
                found: rec.len(),
            });
        }
        rows.push(utf8_fields(&rec, line, row)?);
    }
    Ok(Table { header, rows })
}

fn utf8_fields(rec: &csv::ByteRecord, line: u64, row: u64) -> Result<Vec<String>, ParseError> {
    rec.iter()
        .enumerate()
        .map(|(i, f)| {
            std::str::from_utf8(f)
                .map(str::to_string)
                .map_err(|_| ParseError::InvalidUtf8 {
                    line,
                    row,
                    field: i + 1,
                })
        })
        .collect()
}

fn malformed(e: &csv::Error, fallback_line: u64) -> ParseError {
    let line = e.position().map(|p| p.line()).unwrap_or(fallback_line);
    ParseError::Malformed {
        line,
        reason: e.to_string(),
    }
}

/// Writes a delimited file row by row, with the quoting rules above.
pub struct TableWriter<W: Write> {
    inner: csv::Writer<W>,
}

impl<W: Write> TableWriter<W> {
    /// A TSV writer (the chunk format).
    pub fn tsv(out: W) -> Self {
        Self::with_delimiter(out, b'\t')
    }

    pub fn with_delimiter(out: W, delimiter: u8) -> Self {
        Self {
            inner: csv::WriterBuilder::new()
                .delimiter(delimiter)
                .quote_style(csv::QuoteStyle::Necessary)
                .terminator(csv::Terminator::Any(b'\n'))
                .from_writer(out),
        }
    }

    pub fn write_row<I, S>(&mut self, fields: I) -> std::io::Result<()>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<[u8]>,
    {
        self.inner.write_record(fields).map_err(into_io)
    }

    pub fn into_inner(self) -> std::io::Result<W> {
        self.inner.into_inner().map_err(|e| e.into_error())
    }
}

fn into_io(e: csv::Error) -> std::io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(io) => io,
        other => std::io::Error::other(format!("{other:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tsv(header: &[&str], rows: &[Vec<&str>]) -> Vec<u8> {
        let mut w = TableWriter::tsv(Vec::new());
        w.write_row(header).expect("write");
        for r in rows {
            w.write_row(r).expect("write");
        }
        w.into_inner().expect("flush")
    }

    #[test]
    fn quotes_only_what_needs_it() {
        let out = tsv(
            &["a", "b"],
            &[
                vec!["plain, comma", "tab\there"],
                vec!["say \"hi\"", "two\nlines"],
            ],
        );
        let text = String::from_utf8(out).expect("utf8");
        assert_eq!(
            text,
            "a\tb\nplain, comma\t\"tab\there\"\n\"say \"\"hi\"\"\"\t\"two\nlines\"\n"
        );
    }

    #[test]
    fn parse_round_trips_written_rows() {
        let rows = vec![vec!["x\ty", "\"q\""], vec!["", "multi\nline\r\nend"]];
        let out = tsv(&["h1", "h2"], &rows);
        let t = parse(&out, detect_delimiter(&out)).expect("parses");
        assert_eq!(t.header, vec!["h1", "h2"]);
        let want: Vec<Vec<String>> = rows
            .iter()
            .map(|r| r.iter().map(|s| s.to_string()).collect())
            .collect();
        assert_eq!(t.rows, want);
    }

    #[test]
    fn ragged_row_names_its_line() {
        let data = b"a,b\n1,2\n\"multi\nline\",3\n4\n";
        let err = parse(data, b',').expect_err("ragged");
        assert_eq!(
            err,
            ParseError::Ragged {
                line: 5,
                row: 3,
                expected: 2,
                found: 1
            }
        );
        assert_eq!(err.line(), Some(5));
        assert!(err.to_string().contains("line 5"));
    }

    #[test]
    fn invalid_utf8_names_its_line_and_field() {
        let data = b"a,b\n1,2\n3,\xff\xfe\n";
        let err = parse(data, b',').expect_err("bad utf8");
        assert_eq!(
            err,
            ParseError::InvalidUtf8 {
                line: 3,
                row: 2,
                field: 2
            }
        );
    }

    #[test]
    fn header_problems() {
        assert_eq!(parse(b"", b','), Err(ParseError::Empty));
        assert_eq!(
            parse(b"a,a\n", b','),
            Err(ParseError::DuplicateColumn { name: "a".into() })
        );
        assert_eq!(
            parse(b"a,\n", b','),
            Err(ParseError::EmptyColumnName { column: 2 })
        );
        let t = parse(b"\xEF\xBB\xBFa,b\n1,2\n", b',').expect("bom");
        assert_eq!(t.header, vec!["a", "b"]);
    }

    #[test]
    fn detects_delimiter_from_header() {
        assert_eq!(detect_delimiter(b"a\tb\n1,2\t3"), b'\t');
        assert_eq!(detect_delimiter(b"a,b\n"), b',');
    }
}
