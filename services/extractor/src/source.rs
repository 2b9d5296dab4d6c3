//! Input formats. A [`Source`] yields raw review records with the line they
//! start on, and the lines it could not read as a record ([`BadRow`]), in
//! reading order and with bounded memory: a file larger than memory streams.
//!
//! [`AmazonCsv`] reads the Amazon review dumps: CSV without header,
//! `label,title,body`, fields quoted as needed (a quoted field may span lines).

use std::{
    fmt,
    fs::File,
    io::{BufRead, BufReader, Read},
    path::Path,
};

use crate::Error;

/// One record as read, before any transform.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawRecord {
    /// 1-based physical line the record starts on.
    pub line: u64,
    pub label: String,
    pub title: String,
    pub body: String,
}

/// Why a line is not a usable record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum BadKind {
    WrongColumnCount,
    InvalidUtf8,
    EmptyLine,
    UnknownLabel,
}

impl BadKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::WrongColumnCount => "wrong column count",
            Self::InvalidUtf8 => "invalid UTF-8",
            Self::EmptyLine => "empty line",
            Self::UnknownLabel => "unknown label",
        }
    }
}

impl fmt::Display for BadKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A line that was skipped (or, with `--strict`, stopped the run).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadRow {
    pub line: u64,
    pub kind: BadKind,
    /// What is wrong, for a person fixing the file.
    pub reason: String,
}

/// What a source yields, in reading order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Item {
    Record(RawRecord),
    Bad(BadRow),
}

/// An input format that yields raw review records with line numbers.
pub trait Source: Send {
    /// The next record or bad line; `Ok(None)` at the end. An `Err` is fatal
    /// (the input cannot be read any more), unlike a [`BadRow`].
    fn next_item(&mut self) -> Result<Option<Item>, Error>;
    /// Input bytes consumed so far, for progress.
    fn bytes_read(&self) -> u64;
}

/// Opens `path` with the source format that reads it. This is the one place
/// that knows the formats: a new one implements [`Source`] and is chosen here
/// (by extension, or by a `--source` option), and nothing else changes.
pub fn open(path: &Path) -> Result<Box<dyn Source>, Error> {
    Ok(Box::new(AmazonCsv::open(path)?))
}

/// A record longer than this is refused: it is almost always a quote that
/// was never closed, swallowing the rest of the file, and memory must stay bounded.
pub const MAX_RECORD_BYTES: usize = 16 * 1024 * 1024;

/// The Amazon review CSV (`label,title,body`, no header), RFC 4180 quoting.
///
/// The parser is a small state machine over the bytes rather than the `csv`
/// crate, because it must report *physical* line numbers, and empty lines,
/// which `csv` skips silently (and then counts towards the next record).
/// It reads like `csv`: a quote inside an unquoted field is literal, text
/// after a closing quote is appended, `\r\n` and `\n` both end a line.
pub struct AmazonCsv<R: Read> {
    reader: BufReader<R>,
    path: String,
    machine: Machine,
    bytes: u64,
    first: bool,
    done: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum State {
    FieldStart,
    Unquoted,
    Quoted,
    /// A quote inside a quoted field: the closing one, or the first of `""`.
    QuoteInQuoted,
}

/// A complete record (or empty line) starting on `line`.
enum Event {
    Record(u64),
    Empty(u64),
}

struct Machine {
    state: State,
    /// The physical line being read (1-based).
    line: u64,
    in_record: bool,
    record_line: u64,
    record_bytes: usize,
    saw_quote: bool,
    fields: Vec<Vec<u8>>,
    field: Vec<u8>,
}

impl Machine {
    fn new() -> Self {
        Self {
            state: State::FieldStart,
            line: 1,
            in_record: false,
            record_line: 1,
            record_bytes: 0,
            saw_quote: false,
            fields: Vec::with_capacity(3),
            field: Vec::new(),
        }
    }

    #[inline]
    fn step(&mut self, b: u8) -> Option<Event> {
        if !self.in_record {
            self.in_record = true;
            self.record_line = self.line;
            self.record_bytes = 0;
            self.saw_quote = false;
        }
        self.record_bytes += 1;
        let event = match (self.state, b) {
            (State::Quoted, b'"') => {
                self.state = State::QuoteInQuoted;
                None
            }
            (State::Quoted, _) => {
                self.field.push(b);
                None
            }
            (State::QuoteInQuoted, b'"') => {
                self.field.push(b'"');
                self.state = State::Quoted;
                None
            }
            (State::FieldStart, b'"') => {
                self.saw_quote = true;
                self.state = State::Quoted;
                None
            }
            (_, b',') => {
                self.end_field();
                self.state = State::FieldStart;
                None
            }
            (_, b'\n') => Some(self.end_record()),
            (_, _) => {
                self.field.push(b);
                self.state = State::Unquoted;
                None
            }
        };
        if b == b'\n' {
            self.line += 1;
        }
        event
    }

    fn end_field(&mut self) {
        self.fields.push(std::mem::take(&mut self.field));
    }

    /// Ends the record at a line end (or the end of input).
    fn end_record(&mut self) -> Event {
        // `\r\n` line ends: the `\r` is not data (inside quotes it is, and
        // that case never gets here).
        if self.field.last() == Some(&b'\r') {
            self.field.pop();
        }
        self.end_field();
        self.state = State::FieldStart;
        self.in_record = false;
        if self.fields.len() == 1 && self.fields[0].is_empty() && !self.saw_quote {
            self.fields.clear();
            Event::Empty(self.record_line)
        } else {
            Event::Record(self.record_line)
        }
    }
}

impl AmazonCsv<File> {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let file = File::open(path).map_err(|error| Error::Input {
            path: path.to_path_buf(),
            error,
        })?;
        Ok(Self::from_reader(file, &path.display().to_string()))
    }
}

impl<R: Read> AmazonCsv<R> {
    /// Reads from `reader`; `path` names the input in errors.
    pub fn from_reader(reader: R, path: &str) -> Self {
        Self {
            reader: BufReader::with_capacity(256 * 1024, reader),
            path: path.to_string(),
            machine: Machine::new(),
            bytes: 0,
            first: true,
            done: false,
        }
    }

    fn item(&mut self, event: Event) -> Item {
        let line = match event {
            Event::Empty(line) => {
                return Item::Bad(BadRow {
                    line,
                    kind: BadKind::EmptyLine,
                    reason: "empty line".into(),
                });
            }
            Event::Record(line) => line,
        };
        let raw = std::mem::take(&mut self.machine.fields);
        let bad = |kind, reason: String| Item::Bad(BadRow { line, kind, reason });
        if raw.len() != 3 {
            return bad(
                BadKind::WrongColumnCount,
                format!("expected 3 fields (label,title,body), found {}", raw.len()),
            );
        }
        let mut fields = [String::new(), String::new(), String::new()];
        for (i, (bytes, out)) in raw.into_iter().zip(fields.iter_mut()).enumerate() {
            match String::from_utf8(bytes) {
                Ok(s) => *out = s,
                Err(e) => {
                    return bad(
                        BadKind::InvalidUtf8,
                        format!(
                            "field {} ({}) is not valid UTF-8 at byte {}",
                            i + 1,
                            ["label", "title", "body"][i],
                            e.utf8_error().valid_up_to()
                        ),
                    );
                }
            }
        }
        let [mut label, title, body] = fields;
        if std::mem::take(&mut self.first) && label.starts_with('\u{feff}') {
            // A byte-order mark belongs to the file, not to the first label.
            label.drain(..'\u{feff}'.len_utf8());
        }
        Item::Record(RawRecord {
            line,
            label,
            title,
            body,
        })
    }
}

impl<R: Read + Send> Source for AmazonCsv<R> {
    fn next_item(&mut self) -> Result<Option<Item>, Error> {
        loop {
            if self.done {
                return Ok(None);
            }
            let buf = self.reader.fill_buf().map_err(|error| Error::Input {
                path: self.path.clone().into(),
                error,
            })?;
            if buf.is_empty() {
                self.done = true;
                if self.machine.in_record {
                    // The last line has no line end.
                    let event = self.machine.end_record();
                    return Ok(Some(self.item(event)));
                }
                return Ok(None);
            }
            let mut used = 0;
            let mut event = None;
            for &b in buf {
                used += 1;
                if let Some(e) = self.machine.step(b) {
                    event = Some(e);
                    break;
                }
            }
            self.reader.consume(used);
            self.bytes += used as u64;
            if let Some(event) = event {
                return Ok(Some(self.item(event)));
            }
            if self.machine.record_bytes > MAX_RECORD_BYTES {
                return Err(Error::Input {
                    path: self.path.clone().into(),
                    error: std::io::Error::other(format!(
                        "the record starting on line {} is longer than {} MiB: is a quote missing its closing quote?",
                        self.machine.record_line,
                        MAX_RECORD_BYTES / (1024 * 1024)
                    )),
                });
            }
        }
    }

    fn bytes_read(&self) -> u64 {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(data: &[u8]) -> Vec<Item> {
        let mut src = AmazonCsv::from_reader(data, "test.csv");
        let mut out = Vec::new();
        while let Some(item) = src.next_item().expect("reads") {
            out.push(item);
        }
        out
    }

    fn lines(items: &[Item]) -> Vec<(u64, Option<BadKind>)> {
        items
            .iter()
            .map(|i| match i {
                Item::Record(r) => (r.line, None),
                Item::Bad(b) => (b.line, Some(b.kind)),
            })
            .collect()
    }

    #[test]
    fn reads_records_with_quoted_fields_and_lines() {
        let got = items(b"2,\"Great, really\",\"said \"\"wow\"\"\nnext line\"\n1,Bad,meh\n");
        assert_eq!(
            got,
            vec![
                Item::Record(RawRecord {
                    line: 1,
                    label: "2".into(),
                    title: "Great, really".into(),
                    body: "said \"wow\"\nnext line".into(),
                }),
                Item::Record(RawRecord {
                    line: 3,
                    label: "1".into(),
                    title: "Bad".into(),
                    body: "meh".into(),
                }),
            ]
        );
    }

    #[test]
    fn empty_lines_are_reported_with_their_line() {
        let got = items(b"\n1,a,b\n\n\n2,c,d\n\n");
        assert_eq!(
            lines(&got),
            vec![
                (1, Some(BadKind::EmptyLine)),
                (2, None),
                (3, Some(BadKind::EmptyLine)),
                (4, Some(BadKind::EmptyLine)),
                (5, None),
                (6, Some(BadKind::EmptyLine)),
            ]
        );
        // No trailing newline, CRLF line ends: nothing extra.
        let got = items(b"1,a,b\r\n\r\n2,c,d");
        assert_eq!(
            lines(&got),
            vec![(1, None), (2, Some(BadKind::EmptyLine)), (3, None)]
        );
    }

    #[test]
    fn wrong_column_count_names_the_line() {
        let got = items(b"1,a,b\n1,only two\n2,\"multi\nline\",x,extra\n2,c,d\n");
        assert_eq!(
            lines(&got),
            vec![
                (1, None),
                (2, Some(BadKind::WrongColumnCount)),
                (3, Some(BadKind::WrongColumnCount)),
                (5, None),
            ]
        );
        let Item::Bad(b) = &got[1] else {
            panic!("bad row expected")
        };
        assert_eq!(b.reason, "expected 3 fields (label,title,body), found 2");
    }

    #[test]
    fn invalid_utf8_names_the_line_and_field() {
        let got = items(b"1,a,b\n2,ok,caf\xe9\n2,c,d\n");
        assert_eq!(
            lines(&got),
            vec![(1, None), (2, Some(BadKind::InvalidUtf8)), (3, None)]
        );
        let Item::Bad(b) = &got[1] else {
            panic!("bad row expected")
        };
        assert!(b.reason.contains("field 3 (body)"), "{}", b.reason);
    }

    #[test]
    fn reads_like_csv_for_odd_quoting() {
        let got = items(b"2,5\" screen,\"quoted\"tail\n1,\"\",\"a\r\nb\"\r\n");
        assert_eq!(
            got,
            vec![
                Item::Record(RawRecord {
                    line: 1,
                    label: "2".into(),
                    title: "5\" screen".into(),
                    body: "quotedtail".into(),
                }),
                Item::Record(RawRecord {
                    line: 2,
                    label: "1".into(),
                    title: "".into(),
                    body: "a\r\nb".into(),
                }),
            ]
        );
        // A quoted empty field alone on a line is a record (with one field), not an empty line.
        assert_eq!(
            lines(&items(b"\"\"\n")),
            vec![(1, Some(BadKind::WrongColumnCount))]
        );
    }

    #[test]
    fn byte_order_mark_is_not_part_of_the_label() {
        let got = items("\u{feff}2,a,b\n".as_bytes());
        let Item::Record(r) = &got[0] else {
            panic!("record expected")
        };
        assert_eq!(r.label, "2");
    }

    #[test]
    fn counts_bytes_read() {
        let data = b"1,a,b\n2,c,d\n";
        let mut src = AmazonCsv::from_reader(&data[..], "t");
        while src.next_item().expect("reads").is_some() {}
        assert_eq!(src.bytes_read(), data.len() as u64);
    }
}
