//! Lossless type inference: a column gets a non-text type only when every value in
//! it turns back into exactly the same text. `007`, `+5`, `1.50` and `1e3` stay
//! text; `true`/`false` are booleans; `2024-01-02T03:04:05Z` is a timestamp
//! (down to milliseconds, the precision of Kafka Connect's Timestamp:
//! `…05.123456Z` stays text).
//!
//! Why lossless: the pipeline promises rows arrive *unaltered*, and the verifier
//! proves it by digesting values read back from Postgres. A lossy inference (say,
//! `1.50` stored as 1.5) would make an honest pipeline look like it altered data.
//!
//! # The one exception: booleans in other cases
//! `True`/`False` (Python's spelling, which the original extractor wrote) and
//! `TRUE`/`FALSE` are booleans too, and come back as `true`/`false`. Keeping
//! them text would be worse: one such file would make a shared boolean column
//! text for every later reader (or be refused by a source whose first file
//! pinned the column as boolean). The verifier is not affected: it only checks
//! files the extractor registered, and the extractor writes lowercase
//! `true`/`false`, which still round-trip exactly. Only these six spellings
//! count (not `tRuE`, `yes`, `1`).
//!
//! [`parse_declared`] is the other way in: values against a type the user
//! declared (a connector's `value.schema`), converted as Kafka Connect would
//! (`007` is the integer 7), so not lossless, by the user's choice.

use chrono::{DateTime, Utc};

use crate::{FieldType, Value, value::format_timestamp};

fn as_int(s: &str) -> Option<i64> {
    let v: i64 = s.parse().ok()?;
    (v.to_string() == s).then_some(v)
}

fn as_double(s: &str) -> Option<f64> {
    let v: f64 = s.parse().ok()?;
    (v.is_finite() && v.to_string() == s).then_some(v)
}

fn as_bool(s: &str) -> Option<bool> {
    match s {
        "true" | "True" | "TRUE" => Some(true),
        "false" | "False" | "FALSE" => Some(false),
        _ => None,
    }
}

fn as_timestamp(s: &str) -> Option<DateTime<Utc>> {
    // Cheap filter first: most text is not a timestamp.
    if s.len() < 20 || s.as_bytes().get(4) != Some(&b'-') {
        return None;
    }
    let t = DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc);
    // The record carries Kafka Connect's Timestamp (epoch milliseconds): a
    // finer value would reach Postgres truncated, so it stays text. (Found by
    // the property test `inferred_values_survive_the_envelope_unaltered`.)
    let millis_exact = t.timestamp_subsec_nanos() % 1_000_000 == 0;
    (millis_exact && format_timestamp(&t) == s).then_some(t)
}

/// Tracks which types every value seen so far fits; the column's type is the most
/// specific one still possible when the column ends.
#[derive(Clone, Debug)]
pub struct ColumnInference {
    bool_ok: bool,
    int_ok: bool,
    double_ok: bool,
    ts_ok: bool,
    non_empty: u64,
}

impl Default for ColumnInference {
    fn default() -> Self {
        Self {
            bool_ok: true,
            int_ok: true,
            double_ok: true,
            ts_ok: true,
            non_empty: 0,
        }
    }
}

impl ColumnInference {
    pub fn observe(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        self.non_empty += 1;
        if self.bool_ok {
            self.bool_ok = as_bool(s).is_some();
        }
        if self.int_ok {
            self.int_ok = as_int(s).is_some();
        }
        if self.double_ok {
            self.double_ok = as_double(s).is_some();
        }
        if self.ts_ok {
            self.ts_ok = as_timestamp(s).is_some();
        }
    }

    /// A column with no non-empty value is text: nothing proves otherwise.
    pub fn result(&self) -> FieldType {
        if self.non_empty == 0 {
            FieldType::String
        } else if self.bool_ok {
            FieldType::Boolean
        } else if self.int_ok {
            FieldType::Int64
        } else if self.double_ok {
            FieldType::Double
        } else if self.ts_ok {
            FieldType::Timestamp
        } else {
            FieldType::String
        }
    }
}

/// Infers one type per column from the data rows of a file.
pub fn infer_columns<R: AsRef<[String]>>(columns: usize, rows: &[R]) -> Vec<FieldType> {
    let mut cols = vec![ColumnInference::default(); columns];
    for row in rows {
        for (c, v) in cols.iter_mut().zip(row.as_ref()) {
            c.observe(v);
        }
    }
    cols.iter().map(ColumnInference::result).collect()
}

/// Parses a field of a column already inferred as `ty`. An empty field in a typed
/// column is Null; in a text column it stays an empty string.
///
/// Only fails when `s` does not fit `ty`, which inference over the same column
/// rules out; callers parsing against a type from elsewhere get `None`.
pub fn parse_value(s: &str, ty: FieldType) -> Option<Value> {
    if s.is_empty() && ty != FieldType::String {
        return Some(Value::Null);
    }
    Some(match ty {
        FieldType::String => Value::Text(s.to_string()),
        FieldType::Boolean => Value::Bool(as_bool(s)?),
        FieldType::Int32 | FieldType::Int64 => Value::Int(as_int(s)?),
        FieldType::Float | FieldType::Double => Value::Double(as_double(s)?),
        FieldType::Timestamp => Value::Timestamp(as_timestamp(s)?),
    })
}

/// Parses a field against a type the user declared (not inferred): integers
/// and numbers as Rust (and Java) parse them (`+5`, `007`, `1e3`), booleans as
/// `true`/`false` in any case, timestamps as RFC 3339 with any offset. `Int32`
/// must fit in 32 bits; numbers must be finite (JSON has no NaN). An empty
/// field in a typed column is Null, in a text column an empty string.
///
/// `None` when `s` is not a value of `ty`.
pub fn parse_declared(s: &str, ty: FieldType) -> Option<Value> {
    if s.is_empty() && ty != FieldType::String {
        return Some(Value::Null);
    }
    Some(match ty {
        FieldType::String => Value::Text(s.to_string()),
        FieldType::Boolean => match s.to_ascii_lowercase().as_str() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => return None,
        },
        FieldType::Int32 => Value::Int(i64::from(s.parse::<i32>().ok()?)),
        FieldType::Int64 => Value::Int(s.parse().ok()?),
        FieldType::Float | FieldType::Double => {
            let v: f64 = s.parse().ok()?;
            if !v.is_finite() {
                return None;
            }
            Value::Double(v)
        }
        FieldType::Timestamp => {
            Value::Timestamp(DateTime::parse_from_rfc3339(s).ok()?.with_timezone(&Utc))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use FieldType::*;

    fn infer(vals: &[&str]) -> FieldType {
        let mut c = ColumnInference::default();
        vals.iter().for_each(|v| c.observe(v));
        c.result()
    }

    #[test]
    fn infers_most_specific_lossless_type() {
        assert_eq!(infer(&["true", "false", ""]), Boolean);
        assert_eq!(infer(&["1", "-2", "30"]), Int64);
        assert_eq!(infer(&["1", "2.5"]), Double);
        assert_eq!(
            infer(&["2024-01-02T03:04:05Z", "2024-01-02T03:04:05.500Z"]),
            Timestamp
        );
        // chrono writes milliseconds as three digits, so `.5` would come back as `.500`.
        assert_eq!(infer(&["2024-01-02T03:04:05.5Z"]), String);
        assert_eq!(infer(&["hello", "1"]), String);
        assert_eq!(infer(&[]), String);
        assert_eq!(infer(&["", ""]), String);
    }

    #[test]
    fn values_that_would_change_stay_text() {
        for v in [
            "007", "+5", "1.50", "1e3", "1.0", "NaN", "inf", "tRuE", "yes",
        ] {
            assert_eq!(infer(&[v]), String, "{v}");
        }
        // Offsets and nanoseconds would not survive Postgres.
        assert_eq!(infer(&["2024-01-02T03:04:05+02:00"]), String);
        assert_eq!(infer(&["2024-01-02T03:04:05.123456789Z"]), String);
        // Beyond 2^53 an integer is not exactly a double.
        assert_eq!(infer(&["9007199254740993", "0.5"]), String);
    }

    #[test]
    fn booleans_in_any_of_six_spellings() {
        // Python's `False` (the original extractor), upper case, and mixed in a column.
        assert_eq!(infer(&["False", "True", ""]), Boolean);
        assert_eq!(infer(&["TRUE", "false", "True"]), Boolean);
        assert_eq!(infer(&["False", "no"]), String);
        for (s, b) in [
            ("true", true),
            ("True", true),
            ("TRUE", true),
            ("false", false),
            ("False", false),
            ("FALSE", false),
        ] {
            assert_eq!(parse_value(s, Boolean), Some(Value::Bool(b)), "{s}");
        }
        // The trade-off: other spellings come back lowercase; lowercase stays exact.
        assert_eq!(
            parse_value("False", Boolean).map(|v| v.canonical_text()),
            Some("false".to_string())
        );
        assert_eq!(parse_value("tRuE", Boolean), None);
    }

    #[test]
    fn declared_types_convert_like_kafka_connect() {
        assert_eq!(parse_declared("007", Int64), Some(Value::Int(7)));
        assert_eq!(parse_declared("+5", Int32), Some(Value::Int(5)));
        assert_eq!(parse_declared("3000000000", Int32), None);
        assert_eq!(
            parse_declared("3000000000", Int64),
            Some(Value::Int(3_000_000_000))
        );
        assert_eq!(parse_declared("1.50", Double), Some(Value::Double(1.5)));
        assert_eq!(parse_declared("NaN", Double), None);
        assert_eq!(parse_declared("tRuE", Boolean), Some(Value::Bool(true)));
        assert_eq!(parse_declared("yes", Boolean), None);
        assert_eq!(parse_declared("", Boolean), Some(Value::Null));
        assert_eq!(
            parse_declared("", String),
            Some(Value::Text(std::string::String::new()))
        );
        let t = parse_declared("2024-01-02T05:04:05+02:00", Timestamp).expect("timestamp");
        assert_eq!(t.canonical_text(), "2024-01-02T03:04:05Z");
        assert_eq!(parse_declared("x", Int64), None);
    }

    #[test]
    fn parse_value_round_trips_to_the_same_text() {
        for (s, ty) in [
            ("true", Boolean),
            ("42", Int64),
            ("-3.25", Double),
            ("2024-01-02T03:04:05.123Z", Timestamp),
            ("x", String),
            ("", String),
        ] {
            let v = parse_value(s, ty).expect("fits");
            assert_eq!(v.canonical_text(), s);
        }
        assert_eq!(parse_value("", Int64), Some(Value::Null));
        assert_eq!(parse_value("x", Int64), None);
    }

    #[test]
    fn infer_columns_per_column() {
        let rows = vec![
            vec!["a".to_string(), "1".to_string(), "true".to_string()],
            vec!["b".to_string(), "2".to_string(), "false".to_string()],
        ];
        assert_eq!(infer_columns(3, &rows), vec![String, Int64, Boolean]);
    }
}
