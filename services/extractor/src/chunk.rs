//! Rows → one chunk file: the TSV bytes (header + rows in `CHUNK_COLUMNS`
//! order, quoted as the design says), the digest of every row as written, the
//! file checksum, and the name `{run_id}__{stem}__chunk_{n:06}.csv`.
//!
//! Chunk `n` of an input holds the kept rows of its records
//! `n*chunk_size .. (n+1)*chunk_size` in reading order (bad lines take no
//! place), so the same input and options always give the same files, whatever
//! the timing of the workers: a rerun can skip what is already uploaded.

use etl_core::{
    digest::{file_checksum, row_digest},
    naming::chunk_file_name,
    review::{CHUNK_COLUMNS, OutputRow},
    table::TableWriter,
};
use etl_proto::v1::FileManifest;

/// What the verifier is told about one file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub run_id: String,
    pub file_name: String,
    pub row_count: u64,
    pub columns: Vec<String>,
    pub row_digests: Vec<u64>,
    pub checksum: u64,
}

impl Manifest {
    /// The gRPC form, once the file is in place.
    /// `traceparent` is the chunk span's; the verifier's span becomes its child.
    pub fn to_proto(&self, uploaded_at_unix_ms: i64, traceparent: &str) -> FileManifest {
        FileManifest {
            run_id: self.run_id.clone(),
            file_name: self.file_name.clone(),
            row_count: self.row_count,
            columns: self.columns.clone(),
            row_digests: self.row_digests.clone(),
            checksum: self.checksum,
            uploaded_at_unix_ms,
            trace_id: etl_telemetry::trace_id_of(traceparent)
                .unwrap_or_default()
                .to_string(),
            traceparent: traceparent.to_string(),
        }
    }
}

/// One encoded chunk file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChunkFile {
    /// 0-based chunk number within its input.
    pub number: u64,
    pub name: String,
    pub data: Vec<u8>,
    pub manifest: Manifest,
}

/// Encodes `rows` as chunk `number` of input `stem` in run `run_id`.
pub fn encode(run_id: &str, stem: &str, number: u64, rows: &[OutputRow]) -> ChunkFile {
    let name = chunk_file_name(run_id, stem, number);
    let approx: usize = rows
        .iter()
        .map(|r| r.header.len() + r.body.len() + 40)
        .sum();
    let mut writer = TableWriter::tsv(Vec::with_capacity(approx + 64));
    let mut row_digests = Vec::with_capacity(rows.len());
    // Writing to a Vec cannot fail; the expects document that, not hide I/O.
    writer
        .write_row(CHUNK_COLUMNS)
        .expect("writing to memory cannot fail");
    for row in rows {
        let fields = row.fields();
        writer
            .write_row(fields)
            .expect("writing to memory cannot fail");
        row_digests.push(row_digest(&fields));
    }
    let data = writer.into_inner().expect("flushing to memory cannot fail");
    let manifest = Manifest {
        run_id: run_id.to_string(),
        file_name: name.clone(),
        row_count: rows.len() as u64,
        columns: CHUNK_COLUMNS.iter().map(|c| c.to_string()).collect(),
        checksum: file_checksum(&row_digests),
        row_digests,
    };
    ChunkFile {
        number,
        name,
        data,
        manifest,
    }
}

#[cfg(test)]
mod tests {
    use etl_core::{naming::parse_chunk_file_name, review::FeedbackType, table};
    use proptest::prelude::*;

    use super::*;

    fn row(header: &str, body: &str) -> OutputRow {
        OutputRow {
            header: header.into(),
            body: body.into(),
            feedback_type: FeedbackType::Positive,
            source: "amazon".into(),
            is_streaming: false,
            language_code: "en".into(),
        }
    }

    #[test]
    fn tsv_is_exactly_as_designed_for_tricky_fields() {
        let rows = [
            row("plain, with comma", "tab\there"),
            row("say \"hi\"", "two\nlines"),
            row("", "carriage\rreturn"),
        ];
        let chunk = encode("run-1", "train", 0, &rows);
        assert_eq!(chunk.name, "run-1__train__chunk_000000.csv");
        let text = String::from_utf8(chunk.data.clone()).expect("utf8");
        assert_eq!(
            text,
            "header\tbody\tfeedback_type\tsource\tis_streaming\tlanguage_code\n\
             plain, with comma\t\"tab\there\"\tpositive\tamazon\tfalse\ten\n\
             \"say \"\"hi\"\"\"\t\"two\nlines\"\tpositive\tamazon\tfalse\ten\n\
             \t\"carriage\rreturn\"\tpositive\tamazon\tfalse\ten\n"
        );
        assert_eq!(chunk.manifest.row_count, 3);
        assert_eq!(chunk.manifest.columns, CHUNK_COLUMNS.to_vec());
        assert_eq!(chunk.manifest.row_digests[0], row_digest(&rows[0].fields()));
        assert_eq!(
            chunk.manifest.checksum,
            file_checksum(&chunk.manifest.row_digests)
        );
    }

    #[test]
    fn names_follow_run_stem_and_number() {
        let a = encode("run-abc", "train.ft", 12, &[row("a", "b")]);
        assert_eq!(
            parse_chunk_file_name(&a.name),
            Some(("run-abc", "train.ft", 12))
        );
        assert_eq!(a.manifest.file_name, a.name);
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let proto = a.manifest.to_proto(5, tp);
        assert_eq!(proto.uploaded_at_unix_ms, 5);
        assert_eq!(proto.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(proto.traceparent, tp);
        assert_eq!(proto.row_digests, a.manifest.row_digests);
    }

    fn feedback() -> impl Strategy<Value = FeedbackType> {
        prop_oneof![
            Just(FeedbackType::Positive),
            Just(FeedbackType::Negative),
            Just(FeedbackType::Neutral)
        ]
    }

    /// Arbitrary text, biased towards the characters quoting is about.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                3 => any::<char>().prop_map(|c| c.to_string()),
                1 => prop::sample::select(vec!["\t", "\"", "\n", "\r", ",", "\r\n", " ", "\"\""])
                    .prop_map(str::to_string),
            ],
            0..40,
        )
        .prop_map(|parts| parts.concat())
    }

    fn output_row() -> impl Strategy<Value = OutputRow> {
        (
            text(),
            text(),
            feedback(),
            text(),
            any::<bool>(),
            "[a-z]{2}",
        )
            .prop_map(
                |(header, body, feedback_type, source, is_streaming, language_code)| OutputRow {
                    header,
                    body,
                    feedback_type,
                    source,
                    is_streaming,
                    language_code,
                },
            )
    }

    proptest! {
        #[test]
        fn rows_survive_the_chunk_format(rows in prop::collection::vec(output_row(), 1..20)) {
            let chunk = encode("run-p", "in", 3, &rows);
            let parsed = table::parse(&chunk.data, table::detect_delimiter(&chunk.data))
                .expect("chunk parses");
            prop_assert_eq!(&parsed.header, &CHUNK_COLUMNS.to_vec());
            prop_assert_eq!(parsed.rows.len(), rows.len());
            for ((written, read), digest) in rows.iter().zip(&parsed.rows).zip(&chunk.manifest.row_digests) {
                prop_assert_eq!(written.fields().to_vec(), read.clone());
                prop_assert_eq!(row_digest(read), *digest);
            }
        }
    }
}
