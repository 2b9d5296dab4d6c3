//! What each file should hold: the manifests the extractor registers, validated
//! on the way in (and again when they are read back from the store after a
//! restart), so a corrupted manifest is refused instead of making an honest
//! pipeline look like it lost rows.

use etl_core::digest::file_checksum;
use etl_proto::v1::FileManifest;

use crate::Error;

/// A validated [`FileManifest`]: as many digests as rows, and a checksum that
/// matches them, so a corrupted registration is refused instead of making an
/// honest pipeline look like it lost rows.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Manifest {
    pub(crate) run_id: String,
    pub(crate) file_name: String,
    pub(crate) row_count: u64,
    pub(crate) columns: Vec<String>,
    pub(crate) row_digests: Vec<u64>,
    pub(crate) checksum: u64,
    pub(crate) uploaded_at_unix_ms: i64,
    /// 32 hex digits, or empty when the file was not traced.
    pub(crate) trace_id: String,
    /// The uploader's span (W3C traceparent), parent of the verifier's span.
    pub(crate) traceparent: String,
}

impl TryFrom<FileManifest> for Manifest {
    type Error = Error;

    fn try_from(m: FileManifest) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidManifest {
            file: m.file_name.clone(),
            reason,
        };
        if m.file_name.is_empty() {
            return Err(invalid("file_name is empty".into()));
        }
        if m.file_name.contains('/') {
            return Err(invalid(
                "file_name must be the bare name written to _etl_file, without a directory".into(),
            ));
        }
        if m.run_id.is_empty() {
            return Err(invalid("run_id is empty".into()));
        }
        if m.columns.is_empty() {
            return Err(invalid("columns is empty: send the file's header".into()));
        }
        if let Some(c) = m.columns.iter().find(|c| c.is_empty()) {
            return Err(invalid(format!("column name {c:?} is empty")));
        }
        for (i, c) in m.columns.iter().enumerate() {
            if m.columns[..i].contains(c) {
                return Err(invalid(format!("column {c:?} appears twice")));
            }
        }
        if m.row_digests.len() as u64 != m.row_count {
            return Err(invalid(format!(
                "row_count is {} but {} row digests were sent (one per data row)",
                m.row_count,
                m.row_digests.len()
            )));
        }
        let checksum = file_checksum(&m.row_digests);
        if checksum != m.checksum {
            return Err(invalid(format!(
                "checksum {:016x} does not match the row digests (expected {checksum:016x}): the manifest was corrupted or built differently from etl_core::digest::file_checksum",
                m.checksum
            )));
        }
        // A traceparent of another trace than `trace_id` would split the file's trace.
        let traceparent = match etl_telemetry::trace_id_of(&m.traceparent) {
            Some(t) if m.trace_id.is_empty() || t == m.trace_id => m.traceparent.clone(),
            _ => String::new(),
        };
        let m = if m.trace_id.is_empty() && !traceparent.is_empty() {
            FileManifest {
                trace_id: etl_telemetry::trace_id_of(&traceparent)
                    .unwrap_or_default()
                    .to_string(),
                ..m
            }
        } else {
            m
        };
        let trace_id = if is_trace_id(&m.trace_id) {
            m.trace_id
        } else {
            if !m.trace_id.is_empty() {
                // A bad trace id costs the file its span parent, not its verification.
                tracing::warn!(file = %m.file_name, trace_id = %m.trace_id, "ignoring malformed trace id");
            }
            String::new()
        };
        Ok(Manifest {
            run_id: m.run_id,
            file_name: m.file_name,
            row_count: m.row_count,
            columns: m.columns,
            row_digests: m.row_digests,
            checksum: m.checksum,
            uploaded_at_unix_ms: m.uploaded_at_unix_ms,
            trace_id,
            traceparent,
        })
    }
}

fn is_trace_id(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) && s.bytes().any(|b| b != b'0')
}

impl Manifest {
    /// What makes two registrations of this file the same registration.
    pub(crate) fn content(&self) -> Content {
        Content {
            run_id: self.run_id.clone(),
            columns: self.columns.clone(),
            row_count: self.row_count,
            checksum: self.checksum,
        }
    }

    /// A manifest read back from the store: the same checks as on the way in,
    /// so a damaged row in `etl_verifier` is reported, not verified against.
    pub(crate) fn from_stored(m: FileManifest) -> Result<Manifest, Error> {
        let file = m.file_name.clone();
        Manifest::try_from(m).map_err(|e| Error::StoredState {
            file,
            reason: e.to_string(),
        })
    }
}

/// The part of a manifest that must not change when a file is registered again.
/// Upload time and trace id may differ on a retried registration and do not
/// change what must land.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Content {
    pub(crate) run_id: String,
    pub(crate) columns: Vec<String>,
    pub(crate) row_count: u64,
    pub(crate) checksum: u64,
}

impl Content {
    /// `None` when `new` registers the same file again; otherwise what differs.
    pub(crate) fn difference(&self, new: &Content) -> Option<String> {
        if self.run_id != new.run_id {
            return Some(format!(
                "registered in run {:?}, now in run {:?}",
                self.run_id, new.run_id
            ));
        }
        if self.columns != new.columns {
            return Some(format!(
                "columns were {:?}, now {:?}",
                self.columns, new.columns
            ));
        }
        if self.row_count != new.row_count || self.checksum != new.checksum {
            return Some(format!(
                "{} rows with checksum {:016x} before, now {} rows with checksum {:016x}",
                self.row_count, self.checksum, new.row_count, new.checksum
            ));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use etl_core::digest::row_digest;

    use super::*;

    fn proto(run: &str, file: &str, rows: &[[&str; 2]]) -> FileManifest {
        let row_digests: Vec<u64> = rows.iter().map(|r| row_digest(r)).collect();
        FileManifest {
            run_id: run.into(),
            file_name: file.into(),
            row_count: rows.len() as u64,
            columns: vec!["a".into(), "b".into()],
            checksum: file_checksum(&row_digests),
            row_digests,
            uploaded_at_unix_ms: 1_000,
            trace_id: "4bf92f3577b34da6a3ce929d0e0e4736".into(),
            traceparent: String::new(),
        }
    }

    fn invalid_reason(m: FileManifest) -> String {
        match Manifest::try_from(m) {
            Err(Error::InvalidManifest { reason, .. }) => reason,
            other => panic!("expected an invalid manifest, got {other:?}"),
        }
    }

    #[test]
    fn valid_manifest_is_accepted() {
        let m = Manifest::try_from(proto("r", "f.csv", &[["x", "1"], ["y", "2"]])).expect("valid");
        assert_eq!(m.row_count, 2);
        assert_eq!(m.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
    }

    #[test]
    fn digest_count_must_match_row_count() {
        let mut m = proto("r", "f.csv", &[["x", "1"]]);
        m.row_count = 2;
        assert!(invalid_reason(m).contains("row_count is 2 but 1 row digests"));
    }

    #[test]
    fn checksum_must_match_digests() {
        let mut m = proto("r", "f.csv", &[["x", "1"], ["y", "2"]]);
        m.row_digests.swap(0, 1);
        assert!(invalid_reason(m).contains("does not match the row digests"));
    }

    #[test]
    fn names_and_columns_are_checked() {
        let mut m = proto("r", "f.csv", &[]);
        m.file_name.clear();
        assert!(invalid_reason(m).contains("file_name is empty"));
        let mut m = proto("", "f.csv", &[]);
        m.run_id.clear();
        assert!(invalid_reason(m).contains("run_id is empty"));
        let mut m = proto("r", "f.csv", &[]);
        m.columns = vec!["a".into(), "a".into()];
        assert!(invalid_reason(m).contains("appears twice"));
        let mut m = proto("r", "f.csv", &[]);
        m.file_name = "input/f.csv".into();
        assert!(invalid_reason(m).contains("without a directory"));
    }

    #[test]
    fn malformed_trace_id_is_dropped_not_fatal() {
        let mut m = proto("r", "f.csv", &[]);
        m.trace_id = "xyz".into();
        assert_eq!(Manifest::try_from(m).expect("valid").trace_id, "");
    }

    fn manifest(run: &str, file: &str, rows: &[[&str; 2]]) -> Manifest {
        Manifest::try_from(proto(run, file, rows)).expect("valid")
    }

    #[test]
    fn same_content_ignores_upload_time_and_trace() {
        let m = manifest("r", "f.csv", &[["x", "1"]]);
        let mut later = m.clone();
        later.uploaded_at_unix_ms += 5;
        later.trace_id.clear();
        assert_eq!(m.content().difference(&later.content()), None);
        let other = manifest("r", "f.csv", &[["x", "2"]]);
        let why = m.content().difference(&other.content()).expect("differs");
        assert!(why.contains("checksum"), "{why}");
        let other_run = manifest("r2", "f.csv", &[["x", "1"]]);
        let why = m
            .content()
            .difference(&other_run.content())
            .expect("differs");
        assert!(why.contains("run \"r2\""), "{why}");
    }

    #[test]
    fn a_damaged_stored_manifest_is_refused() {
        let mut stored = proto("r", "f.csv", &[["x", "1"], ["y", "2"]]);
        stored.row_digests.pop();
        match Manifest::from_stored(stored) {
            Err(Error::StoredState { file, reason }) => {
                assert_eq!(file, "f.csv");
                assert!(reason.contains("row digests"), "{reason}");
            }
            other => panic!("expected a stored-state error, got {other:?}"),
        }
    }
}
