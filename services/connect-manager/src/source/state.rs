//! What a source connector must remember across restarts, in
//! `<data-dir>/source-state/<connector>.json` (0600, replaced atomically):
//!
//! - with `cleanup.policy=NONE`, the files already sent, by size and mtime, so a
//!   restart does not send every file again (Kafka Connect keeps the same in its
//!   offset store);
//! - the record schema the connector's files must fit (the first file's, pinned),
//!   so an uploader cannot reshape the shared table by sending other columns or
//!   other types; `etl.schema.evolve=true` turns the guard off.
//!
//! Deleting the file resets both (the next file pins a new schema).
//!
//! In distributed mode the same state lives in Kafka Connect's offset topic
//! instead (see `offsets`), where every worker's tasks see it; [`StateStore`]
//! is what the source uses in both modes.

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
};

use etl_core::{Field, FieldType, Schema};
use serde::{Deserialize, Serialize};

use super::offsets::{OffsetChange, TopicStore};

/// `(size, mtime)` of a file when it was sent.
pub(crate) type FileStat = (u64, Option<u64>);

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SourceState {
    /// cleanup.policy=NONE: files already sent.
    #[serde(default)]
    pub(crate) sent: BTreeMap<String, FileStat>,
    /// The pinned columns: name and Kafka Connect type, in file order.
    #[serde(default)]
    pub(crate) schema: Option<PinnedSchema>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct PinnedSchema {
    /// The file that pinned it, for error messages.
    pub(crate) from_file: String,
    pub(crate) columns: Vec<(String, String)>,
}

impl PinnedSchema {
    pub(crate) fn of(file: &str, schema: &Schema) -> Self {
        Self {
            from_file: file.to_string(),
            columns: schema
                .fields
                .iter()
                .map(|f| (f.name.clone(), type_name(f.ty).to_string()))
                .collect(),
        }
    }

    /// The pinned schema as a record schema named `name`; None if the stored
    /// file holds a type name this version does not know.
    pub(crate) fn schema(&self, name: &str) -> Option<Schema> {
        let fields = self
            .columns
            .iter()
            .map(|(n, t)| {
                type_of(t).map(|ty| Field {
                    name: n.clone(),
                    ty,
                    optional: true,
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(Schema {
            name: name.to_string(),
            fields,
        })
    }
}

fn type_name(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Boolean => "boolean",
        FieldType::Int32 => "int32",
        FieldType::Int64 => "int64",
        FieldType::Float => "float",
        FieldType::Double => "double",
        FieldType::String => "string",
        FieldType::Timestamp => "timestamp",
    }
}

fn type_of(name: &str) -> Option<FieldType> {
    Some(match name {
        "boolean" => FieldType::Boolean,
        "int32" => FieldType::Int32,
        "int64" => FieldType::Int64,
        "float" => FieldType::Float,
        "double" => FieldType::Double,
        "string" => FieldType::String,
        "timestamp" => FieldType::Timestamp,
        _ => return None,
    })
}

/// The state file of one connector.
pub(crate) struct StateFile {
    path: PathBuf,
}

impl StateFile {
    pub(crate) fn new(data_dir: &Path, connector: &str) -> Self {
        // Connector names may hold characters a file name should not.
        let safe = etl_core::naming::path_segment(connector);
        Self {
            path: data_dir.join("source-state").join(format!("{safe}.json")),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The stored state; an absent file is an empty state.
    pub(crate) fn load(&self) -> Result<SourceState, String> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                format!(
                    "source state {} is not valid JSON ({e}); fix or remove it",
                    self.path.display()
                )
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(SourceState::default()),
            Err(e) => Err(format!("cannot read {}: {e}", self.path.display())),
        }
    }

    /// Writes the state durably: temp file (0600), fsync, rename.
    pub(crate) fn save(&self, state: &SourceState) -> Result<(), String> {
        let fail = |e: &dyn std::fmt::Display| format!("cannot write {}: {e}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| fail(&e))?;
        }
        let json = serde_json::to_vec_pretty(state).map_err(|e| fail(&e))?;
        let tmp = self.path.with_extension("json.tmp");
        crate::registry::write_private(&tmp, &json).map_err(|e| fail(&e))?;
        std::fs::rename(&tmp, &self.path).map_err(|e| fail(&e))
    }
}

/// Where a source keeps its state: its file (standalone) or the offset topic
/// (distributed, shared by every worker).
pub(crate) enum StateStore {
    File(StateFile),
    Topic(TopicStore),
}

impl StateStore {
    /// The stored state; an absent file or topic is an empty state.
    pub(crate) async fn load(&self) -> Result<SourceState, String> {
        match self {
            StateStore::File(f) => f.load(),
            StateStore::Topic(t) => t.read().await,
        }
    }

    /// Brings `state` up to what other workers stored since it was read (the
    /// file has no other writer: nothing to do).
    pub(crate) async fn refresh(&self, state: &mut SourceState) -> Result<(), String> {
        if let StateStore::Topic(t) = self {
            *state = t.read().await?;
        }
        Ok(())
    }

    /// Remembers that `name` was sent as it is now (`cleanup.policy=NONE`),
    /// durably before returning.
    pub(crate) async fn record_sent(
        &self,
        state: &mut SourceState,
        name: &str,
        stat: FileStat,
    ) -> Result<(), String> {
        match self {
            StateStore::File(f) => {
                state.sent.insert(name.to_string(), stat);
                f.save(state)
            }
            StateStore::Topic(t) => {
                t.write(&[OffsetChange::File {
                    name: name.to_string(),
                    stat: Some(stat),
                }])
                .await?;
                state.sent.insert(name.to_string(), stat);
                Ok(())
            }
        }
    }

    /// Pins `mine` (no schema is pinned in `state`) and returns the schema
    /// pinned now: `mine`, or in the topic another worker's that came first.
    pub(crate) async fn pin(
        &self,
        state: &mut SourceState,
        mine: PinnedSchema,
    ) -> Result<PinnedSchema, String> {
        let pinned = match self {
            StateStore::File(f) => {
                state.schema = Some(mine.clone());
                f.save(state)?;
                mine
            }
            StateStore::Topic(t) => t.pin(&mine).await?,
        };
        state.schema = Some(pinned.clone());
        Ok(pinned)
    }

    /// Where the pinned schema is kept and how to reset it, for the error of
    /// a pinned schema this version cannot read.
    pub(crate) fn unknown_type_hint(&self) -> String {
        match self {
            StateStore::File(f) => format!(
                "the pinned schema in {} names an unknown type; remove the file to pin a new one",
                f.path().display()
            ),
            StateStore::Topic(t) => format!(
                "the pinned schema (key {} in {}) names an unknown type; write a tombstone for that key to pin a new one",
                t.schema_key(),
                t.describe()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("dir");
        let file = StateFile::new(dir.path(), "review/source");
        assert!(file.path().ends_with("source-state/review_source.json"));
        let mut state = file.load().expect("empty");
        assert!(state.sent.is_empty() && state.schema.is_none());
        state.sent.insert("a.csv".into(), (10, Some(5)));
        let schema = Schema {
            name: "review".into(),
            fields: vec![
                Field {
                    name: "body".into(),
                    ty: FieldType::String,
                    optional: true,
                },
                Field {
                    name: "is_streaming".into(),
                    ty: FieldType::Boolean,
                    optional: true,
                },
            ],
        };
        state.schema = Some(PinnedSchema::of("a.csv", &schema));
        file.save(&state).expect("save");
        let back = file.load().expect("load");
        assert_eq!(back.sent.get("a.csv"), Some(&(10, Some(5))));
        let pinned = back.schema.expect("pinned");
        assert_eq!(pinned.from_file, "a.csv");
        assert_eq!(pinned.schema("review"), Some(schema));
    }

    #[test]
    fn a_corrupt_state_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("dir");
        let file = StateFile::new(dir.path(), "s");
        std::fs::create_dir_all(file.path().parent().expect("parent")).expect("mkdir");
        std::fs::write(file.path(), b"{not json").expect("write");
        let err = file.load().expect_err("corrupt");
        assert!(err.contains("source-state/s.json"), "{err}");
    }
}
