//! What `benches/sink.rs` measures: the sink's batch building, run without
//! Kafka or Postgres so that criterion sees only this CPU work. Not an API:
//! hidden from the docs, and free to change with the sink.

use std::sync::Arc;

use etl_core::{Schema, envelope};

use crate::{
    copy::{Wire, copy_data},
    postgres::{Change, SinkRow, batch_fields, dedup_last},
    sink::config::PkMode,
};

/// Builds one batch as the sink does for `pk.mode=record_key` (our default):
/// decodes each record's JsonConverter envelope (`(file, row, value)`),
/// de-duplicates by key keeping the last, and renders the `COPY` data for the
/// table the sink creates for them (binary, see `copy`). Returns the bytes.
pub fn build_copy_batch(records: &[(String, i64, Vec<u8>)]) -> Result<Vec<u8>, String> {
    let mut changes = Vec::with_capacity(records.len());
    let mut last: Option<Arc<Schema>> = None;
    let mut last_file: Option<Arc<str>> = None;
    for (i, (file, row, value)) in records.iter().enumerate() {
        let (schema, values) = envelope::decode(value).map_err(|e| e.to_string())?;
        // Rows of one file share their schema, as in the sink.
        let schema = match &last {
            Some(s) if Arc::ptr_eq(s, &schema) || **s == *schema => s.clone(),
            _ => {
                last = Some(schema.clone());
                schema
            }
        };
        changes.push(Change::Row(SinkRow {
            // Rows of one file share its name, as in the sink.
            file: match &last_file {
                Some(f) if **f == **file => f.clone(),
                _ => last_file.insert(Arc::from(file.as_str())).clone(),
            },
            row: *row,
            trace_id: None,
            topic: "bench".into(),
            partition: 0,
            offset: i as i64,
            schema,
            values,
        }));
    }
    let pk = PkMode::RecordKey;
    let (rows, _deletes) = dedup_last(changes, &pk);
    let fields = batch_fields(&rows);
    // The columns of the table the sink creates: the fields, then the lineage.
    let wires: Option<Vec<Wire>> = fields
        .iter()
        .map(|f| Wire::of(f.ty.pg_type()))
        .chain([Some(Wire::Text), Some(Wire::Int8), Some(Wire::Text)])
        .collect();
    Ok(copy_data(&rows, &fields, &pk, wires.as_deref()).0)
}
