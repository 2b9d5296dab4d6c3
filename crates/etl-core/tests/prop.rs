//! Property tests for the parsers that take input from outside: the chunk
//! file reader, type inference, the Kafka Connect envelope and connector
//! files. Arbitrary input never panics; what is written or encoded reads
//! back the same.

use etl_core::{
    Field, FieldType, Schema, Value, connector_file,
    envelope::{self, Encoder},
    infer::{infer_columns, parse_value},
    table::{self, TableWriter},
};
use proptest::prelude::*;

/// Field text that exercises the format and inference: plain and tricky text
/// (delimiters, quotes, newlines, carriage returns, non-ASCII), and text that
/// looks like each inferred type (and near misses such as `007` or `1.50`).
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        "[a-z\t,\"\r\n é€😀]{0,12}",
        any::<i64>().prop_map(|i| i.to_string()),
        any::<f64>().prop_map(|d| d.to_string()),
        "[+-]?0[0-9]{1,3}(\\.[0-9]{0,3}0)?",
        prop::sample::select(vec!["true", "false", "True", "FALSE", "tRuE", "yes", ""])
            .prop_map(str::to_string),
        (0i64..4_102_444_800_000_000, 0u32..3).prop_map(|(micros, digits)| {
            let t = chrono::DateTime::from_timestamp_micros(micros).expect("in range");
            let t = match digits {
                0 => t.format("%Y-%m-%dT%H:%M:%SZ"),
                1 => t.format("%Y-%m-%dT%H:%M:%S%.3fZ"),
                _ => t.format("%Y-%m-%dT%H:%M:%S%.6fZ"),
            };
            t.to_string()
        }),
    ]
}

/// One column's values, all of one flavour half the time (so typed columns
/// are inferred), mixed otherwise.
fn column(rows: usize) -> impl Strategy<Value = Vec<String>> {
    prop_oneof![
        prop::collection::vec(field(), rows),
        prop::collection::vec(any::<i64>().prop_map(|i| i.to_string()), rows),
        prop::collection::vec(
            prop_oneof![
                any::<f64>().prop_map(|d| d.to_string()),
                Just(String::new())
            ],
            rows
        ),
        prop::collection::vec(
            (0i64..4_102_444_800_000_000).prop_map(|m| etl_core::value::format_timestamp(
                &chrono::DateTime::from_timestamp_micros(m).expect("in range")
            )),
            rows
        ),
    ]
}

/// A header of distinct, non-blank names and rows of the same width.
fn table_strategy() -> impl Strategy<Value = (Vec<String>, Vec<Vec<String>>)> {
    (1usize..5, 0usize..8).prop_flat_map(|(cols, rows)| {
        let header = prop::collection::btree_set("[a-z_][a-z0-9_ é]{0,8}", cols)
            .prop_map(|s| s.into_iter().collect::<Vec<_>>());
        let columns = prop::collection::vec(column(rows), cols);
        (header, columns).prop_map(move |(header, columns)| {
            let width = header.len();
            let rows = (0..rows)
                .map(|r| (0..width).map(|c| columns[c][r].clone()).collect())
                .collect();
            (header, rows)
        })
    })
}

fn write(delimiter: u8, header: &[String], rows: &[Vec<String>]) -> Vec<u8> {
    let mut w = TableWriter::with_delimiter(Vec::new(), delimiter);
    w.write_row(header).expect("write header");
    for r in rows {
        w.write_row(r).expect("write row");
    }
    w.into_inner().expect("flush")
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn the_reader_never_panics_on_arbitrary_bytes(data in prop::collection::vec(any::<u8>(), 0..512)) {
        for delimiter in [b'\t', b','] {
            if let Err(e) = table::parse(&data, delimiter) {
                // Every error can be shown to the user.
                let _ = e.to_string();
                let _ = e.line();
            }
        }
        let _ = table::detect_delimiter(&data);
    }

    #[test]
    fn the_reader_never_panics_on_near_valid_files(
        (header, rows) in table_strategy(),
        cut in any::<prop::sample::Index>(),
        junk in prop::sample::select(vec![&b"\""[..], b"\t", b"\n", b"\r", b"\xff", b"\"x\"y"]),
    ) {
        let mut data = write(b'\t', &header, &rows);
        let at = cut.index(data.len() + 1);
        data.splice(at..at, junk.iter().copied());
        let _ = table::parse(&data, b'\t');
    }

    #[test]
    fn written_tables_read_back_the_same((header, rows) in table_strategy(), comma in any::<bool>()) {
        let delimiter = if comma { b',' } else { b'\t' };
        // One empty field alone on a line is an empty line, which the format
        // cannot tell from no row: the extractor never writes single-column files.
        prop_assume!(header.len() > 1 || rows.iter().all(|r| !r[0].is_empty()));
        let data = write(delimiter, &header, &rows);
        let t = table::parse(&data, delimiter).expect("a written table parses");
        prop_assert_eq!(&t.header, &header);
        prop_assert_eq!(&t.rows, &rows);
        if header.len() > 1 && !comma {
            prop_assert_eq!(table::detect_delimiter(&data), b'\t');
        }
    }

    /// Lossless inference: every value of a column parses with the column's
    /// type, and turns back into exactly its text, through the Kafka Connect
    /// envelope too (what the sink reads).
    #[test]
    fn inferred_values_survive_the_envelope_unaltered((header, rows) in table_strategy()) {
        let types = infer_columns(header.len(), &rows);
        let schema = Schema {
            name: "t".into(),
            fields: header
                .iter()
                .zip(&types)
                .map(|(n, ty)| Field { name: n.clone(), ty: *ty, optional: true })
                .collect(),
        };
        let encoder = Encoder::new(&schema);
        for row in &rows {
            let values: Vec<Value> = row
                .iter()
                .zip(&types)
                .map(|(s, ty)| parse_value(s, *ty))
                .collect::<Option<_>>()
                .ok_or_else(|| TestCaseError::fail(format!("{row:?} does not fit {types:?}")))?;
            let bytes = encoder.encode(&values);
            let (got_schema, got) = envelope::decode(&bytes).expect("our envelope decodes");
            prop_assert_eq!(&*got_schema, &schema);
            let texts: Vec<String> = got.iter().map(Value::canonical_text).collect();
            let want: Vec<String> = row
                .iter()
                .zip(&types)
                .map(|(s, ty)| {
                    // `True`/`FALSE` are booleans that come back lowercase (see `infer`).
                    if *ty == FieldType::Boolean { s.to_lowercase() } else { s.clone() }
                })
                .collect();
            prop_assert_eq!(texts, want);
        }
    }

    #[test]
    fn the_envelope_decoder_never_panics(data in prop::collection::vec(any::<u8>(), 0..256)) {
        if let Err(e) = envelope::decode(&data) {
            let _ = e.to_string();
        }
    }

    #[test]
    fn the_envelope_decoder_never_panics_on_json_shapes(
        ty in prop::sample::select(vec!["string", "int8", "int32", "int64", "float", "double", "boolean", "bytes", "struct", ""]),
        logical in prop::option::of(prop::sample::select(vec!["org.apache.kafka.connect.data.Timestamp", "x"])),
        optional in prop::option::of(any::<bool>()),
        value in prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<u64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(|f| serde_json::json!(f)),
            any::<String>().prop_map(serde_json::Value::from),
            Just(serde_json::json!([1, {"a": null}])),
        ],
    ) {
        let mut field = serde_json::json!({"field": "f", "type": ty});
        if let Some(l) = logical { field["name"] = l.into(); }
        if let Some(o) = optional { field["optional"] = o.into(); }
        let record = serde_json::json!({
            "schema": {"type": "struct", "fields": [field]},
            "payload": {"f": value},
        });
        let bytes = serde_json::to_vec(&record).expect("json");
        if let Err(e) = envelope::decode(&bytes) {
            let _ = e.to_string();
        }
    }

    /// The one-pass decoder gives exactly the generic reader's answer (values
    /// or error) on envelopes in both key orders, with fields missing, extra,
    /// named twice, keys written with escapes, values of every JSON kind, and
    /// whitespace or more after the envelope, read once and again.
    #[test]
    fn the_fast_decoder_agrees_with_the_generic_one(
        fields in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "é", "a b"]),
                prop::sample::select(vec!["string", "int32", "int64", "double", "float", "boolean", "ts", "bytes"]),
                prop::option::of(any::<bool>()),
            ),
            0..4,
        ),
        entries in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "é", "a b", "\\u0061", "zz"]),
                prop_oneof![
                    Just("null".to_string()),
                    any::<bool>().prop_map(|b| b.to_string()),
                    any::<i64>().prop_map(|i| i.to_string()),
                    any::<u64>().prop_map(|u| u.to_string()),
                    any::<f64>().prop_map(|f| serde_json::json!(f).to_string()),
                    Just("-0".to_string()),
                    Just("1e400".to_string()),
                    any::<String>().prop_map(|s| serde_json::Value::from(s).to_string()),
                    Just("\"tab\\tq\\\"\"".to_string()),
                    Just("[1,{\"a\":null}]".to_string()),
                    Just("{\"x\":1}".to_string()),
                ],
            ),
            0..5,
        ),
        payload_first in any::<bool>(),
        trailing in prop::sample::select(vec!["", ",\"x\":1", " "]),
        after in prop::sample::select(vec!["", " \r\n", "\u{c}", "}"]),
    ) {
        let fields: Vec<serde_json::Value> = fields
            .iter()
            .map(|(name, ty, optional)| {
                let mut f = match *ty {
                    "ts" => serde_json::json!({"type": "int64", "name": "org.apache.kafka.connect.data.Timestamp"}),
                    t => serde_json::json!({"type": t}),
                };
                f["field"] = (*name).into();
                if let Some(o) = optional { f["optional"] = (*o).into(); }
                f
            })
            .collect();
        let schema = serde_json::json!({"type": "struct", "name": "t", "fields": fields}).to_string();
        let payload = format!(
            "{{{}}}",
            entries.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect::<Vec<_>>().join(",")
        );
        let record = if payload_first {
            format!("{{\"payload\":{payload},\"schema\":{schema}{trailing}}}")
        } else {
            format!("{{\"schema\":{schema},\"payload\":{payload}{trailing}}}")
        };
        let record = format!("{record}{after}");
        let generic = envelope::decode_generic(record.as_bytes()).map_err(|e| e.to_string());
        // Twice: the second time the schema is this thread's last one, and a
        // record that begins as the last one did is read after that beginning.
        for _ in 0..2 {
            let fast = envelope::decode(record.as_bytes())
                .map(|(schema, values)| ((*schema).clone(), values))
                .map_err(|e| e.to_string());
            prop_assert_eq!(format!("{fast:?}"), format!("{generic:?}"), "record {}", record);
        }
    }

    /// The encoder writes the bytes the JSON tree it replaced wrote (payload
    /// keys sorted, a name given twice once with its last value, a
    /// non-finite double as null), so records on the topic did not change.
    #[test]
    fn the_encoder_writes_what_the_json_tree_wrote(
        columns in prop::collection::vec(
            (
                prop::sample::select(vec!["a", "b", "B", "é", "a\"b", "z\n", "title"]),
                prop_oneof![
                    Just(Value::Null),
                    any::<bool>().prop_map(Value::Bool),
                    any::<i64>().prop_map(Value::Int),
                    any::<f64>().prop_map(Value::Double),
                    Just(Value::Double(f64::NAN)),
                    any::<String>().prop_map(Value::Text),
                    (-8_000_000_000_000i64..8_000_000_000_000).prop_map(|ms| {
                        Value::Timestamp(chrono::DateTime::from_timestamp_millis(ms).expect("in range"))
                    }),
                ],
            ),
            0..6,
        ),
    ) {
        let schema = Schema {
            name: "t".into(),
            fields: columns
                .iter()
                .map(|(n, _)| Field { name: (*n).to_string(), ty: FieldType::String, optional: true })
                .collect(),
        };
        let values: Vec<Value> = columns.iter().map(|(_, v)| v.clone()).collect();
        let mut payload = serde_json::Map::new();
        for (f, v) in schema.fields.iter().zip(&values) {
            let j = match v {
                Value::Null => serde_json::Value::Null,
                Value::Bool(b) => serde_json::json!(b),
                Value::Int(i) => serde_json::json!(i),
                Value::Double(d) => serde_json::json!(d),
                Value::Text(s) => serde_json::json!(s),
                Value::Timestamp(t) => serde_json::json!(t.timestamp_millis()),
            };
            payload.insert(f.name.clone(), j);
        }
        let want = format!(
            "{{\"schema\":{},\"payload\":{}}}",
            envelope::schema_json(&schema),
            serde_json::Value::Object(payload)
        );
        let got = Encoder::new(&schema).encode(&values);
        prop_assert_eq!(String::from_utf8(got).expect("utf-8"), want);
    }

    #[test]
    fn connector_files_never_panic(json in any::<String>(), value in any::<String>()) {
        let _ = connector_file::parse(&json, |_| None);
        let file = serde_json::json!({"name": "c", "config": {"k": value}}).to_string();
        let _ = connector_file::parse(&file, |v| Some(format!("<{v}>")));
    }

    /// Text without placeholders comes through a connector file unchanged,
    /// and numbers and booleans become their JSON text.
    #[test]
    fn connector_file_values_round_trip(
        config in prop::collection::btree_map("k\\.[a-z.]{0,11}", "[^$]{0,20}", 0..6),
        n in any::<i64>(),
        b in any::<bool>(),
    ) {
        let mut json = serde_json::json!({"name": "c", "config": config});
        json["config"]["num"] = n.into();
        json["config"]["flag"] = b.into();
        let parsed = connector_file::parse(&json.to_string(), |_| None).expect("parses");
        prop_assert_eq!(parsed.name, "c");
        for (k, v) in &config {
            prop_assert_eq!(&parsed.config[k], v);
        }
        prop_assert_eq!(&parsed.config["num"], &n.to_string());
        prop_assert_eq!(&parsed.config["flag"], &b.to_string());
    }
}
