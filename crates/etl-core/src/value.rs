//! Typed values of one field.

use chrono::{DateTime, SecondsFormat, Utc};

/// One field of one row, after inference.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Text(String),
    Timestamp(DateTime<Utc>),
}

impl Value {
    /// The text this value was inferred from. Inference is lossless, so for any
    /// value parsed from a file this is exactly the field as written; the verifier
    /// relies on it to digest rows read back from Postgres. Null renders as "".
    pub fn canonical_text(&self) -> String {
        match self {
            Value::Null => String::new(),
            Value::Bool(b) => b.to_string(),
            Value::Int(i) => i.to_string(),
            Value::Double(d) => d.to_string(),
            Value::Text(s) => s.clone(),
            Value::Timestamp(t) => format_timestamp(t),
        }
    }
}

/// RFC 3339 in UTC with `Z` and only the sub-second digits needed.
pub fn format_timestamp(t: &DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_text_of_each_kind() {
        assert_eq!(Value::Null.canonical_text(), "");
        assert_eq!(Value::Bool(true).canonical_text(), "true");
        assert_eq!(Value::Int(-7).canonical_text(), "-7");
        assert_eq!(Value::Double(1.5).canonical_text(), "1.5");
        assert_eq!(Value::Text("a\tb".into()).canonical_text(), "a\tb");
        let t = DateTime::parse_from_rfc3339("2024-01-02T03:04:05.250Z")
            .map(|t| t.with_timezone(&Utc))
            .expect("valid");
        assert_eq!(
            Value::Timestamp(t).canonical_text(),
            "2024-01-02T03:04:05.250Z"
        );
    }
}
