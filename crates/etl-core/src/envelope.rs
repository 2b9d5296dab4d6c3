//! The Kafka Connect JsonConverter envelope with schemas enabled:
//! `{"schema": {"type":"struct","fields":[…],"optional":false,"name":…}, "payload": {…}}`.
//! Exactly those two keys: stock Kafka Connect sinks reject anything else, and
//! being readable by them is why the topic uses this format.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value as Json, json};

use crate::{Field, FieldType, Schema, Value, schema::CONNECT_TIMESTAMP};

#[derive(Debug, thiserror::Error)]
pub enum EnvelopeError {
    #[error("record value is not JSON: {0}")]
    NotJson(#[from] serde_json::Error),
    #[error("record value must be an object with exactly the keys \"schema\" and \"payload\"")]
    NotEnvelope,
    #[error("schema: {0}")]
    BadSchema(String),
    #[error("payload field {field:?}: {reason}")]
    BadValue { field: String, reason: String },
}

/// The JSON of a schema, in Kafka Connect's form.
pub fn schema_json(schema: &Schema) -> Json {
    let fields: Vec<Json> = schema
        .fields
        .iter()
        .map(|f| {
            let mut m = Map::new();
            m.insert("type".into(), json!(f.ty.connect_type()));
            m.insert("optional".into(), json!(f.optional));
            m.insert("field".into(), json!(f.name));
            if let Some(name) = f.ty.connect_name() {
                m.insert("name".into(), json!(name));
                m.insert("version".into(), json!(1));
            }
            Json::Object(m)
        })
        .collect();
    json!({"type": "struct", "fields": fields, "optional": false, "name": schema.name})
}

fn value_json(v: &Value) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        Value::Double(d) => json!(d),
        Value::Text(s) => json!(s),
        Value::Timestamp(t) => json!(t.timestamp_millis()),
    }
}

/// Encodes many rows of one schema: the schema's JSON is rendered once.
pub struct Encoder {
    prefix: String,
    names: Vec<String>,
}

impl Encoder {
    pub fn new(schema: &Schema) -> Self {
        Self {
            prefix: format!("{{\"schema\":{},\"payload\":", schema_json(schema)),
            names: schema.fields.iter().map(|f| f.name.clone()).collect(),
        }
    }

    /// The envelope of one row; `values` are in schema field order.
    pub fn encode(&self, values: &[Value]) -> Vec<u8> {
        let mut payload = Map::with_capacity(values.len());
        for (name, v) in self.names.iter().zip(values) {
            payload.insert(name.clone(), value_json(v));
        }
        let mut out = self.prefix.clone().into_bytes();
        // Serializing a Map of plain values cannot fail.
        out.extend_from_slice(Json::Object(payload).to_string().as_bytes());
        out.push(b'}');
        out
    }
}

/// Decodes an envelope into its schema and the values in schema field order.
pub fn decode(bytes: &[u8]) -> Result<(Schema, Vec<Value>), EnvelopeError> {
    let json: Json = serde_json::from_slice(bytes)?;
    let obj = json.as_object().ok_or(EnvelopeError::NotEnvelope)?;
    if obj.len() != 2 {
        return Err(EnvelopeError::NotEnvelope);
    }
    let (schema_j, payload_j) = match (obj.get("schema"), obj.get("payload")) {
        (Some(s), Some(p)) => (s, p),
        _ => return Err(EnvelopeError::NotEnvelope),
    };
    let schema = parse_schema(schema_j)?;
    let payload = payload_j
        .as_object()
        .ok_or_else(|| EnvelopeError::BadSchema("payload is not an object".into()))?;
    let values = schema
        .fields
        .iter()
        .map(|f| parse_field_value(f, payload.get(&f.name).unwrap_or(&Json::Null)))
        .collect::<Result<_, _>>()?;
    Ok((schema, values))
}

fn parse_schema(j: &Json) -> Result<Schema, EnvelopeError> {
    let bad = |m: &str| EnvelopeError::BadSchema(m.to_string());
    if j.get("type").and_then(Json::as_str) != Some("struct") {
        return Err(bad("type must be \"struct\""));
    }
    let name = j
        .get("name")
        .and_then(Json::as_str)
        .unwrap_or("record")
        .to_string();
    let fields = j
        .get("fields")
        .and_then(Json::as_array)
        .ok_or_else(|| bad("missing \"fields\" array"))?;
    let fields = fields
        .iter()
        .map(|f| {
            let field = f
                .get("field")
                .and_then(Json::as_str)
                .ok_or_else(|| bad("a field has no \"field\" name"))?;
            let ty = f.get("type").and_then(Json::as_str).unwrap_or("");
            let logical = f.get("name").and_then(Json::as_str);
            let ty = match (ty, logical) {
                ("int64", Some(CONNECT_TIMESTAMP)) => FieldType::Timestamp,
                ("boolean", _) => FieldType::Boolean,
                ("int8" | "int16" | "int32", _) => FieldType::Int32,
                ("int64", _) => FieldType::Int64,
                ("float", _) => FieldType::Float,
                ("double", _) => FieldType::Double,
                ("string", _) => FieldType::String,
                (other, _) => {
                    return Err(EnvelopeError::BadSchema(format!(
                        "field {field:?} has unsupported type {other:?}"
                    )));
                }
            };
            Ok(Field {
                name: field.to_string(),
                ty,
                optional: f.get("optional").and_then(Json::as_bool).unwrap_or(true),
            })
        })
        .collect::<Result<_, _>>()?;
    Ok(Schema { name, fields })
}

fn parse_field_value(f: &Field, j: &Json) -> Result<Value, EnvelopeError> {
    let bad = |reason: &str| EnvelopeError::BadValue {
        field: f.name.clone(),
        reason: reason.to_string(),
    };
    if j.is_null() {
        return if f.optional {
            Ok(Value::Null)
        } else {
            Err(bad("null in a required field"))
        };
    }
    Ok(match f.ty {
        FieldType::Boolean => Value::Bool(j.as_bool().ok_or_else(|| bad("expected boolean"))?),
        FieldType::Int32 | FieldType::Int64 => {
            Value::Int(j.as_i64().ok_or_else(|| bad("expected integer"))?)
        }
        FieldType::Float | FieldType::Double => {
            Value::Double(j.as_f64().ok_or_else(|| bad("expected number"))?)
        }
        FieldType::String => Value::Text(
            j.as_str()
                .ok_or_else(|| bad("expected string"))?
                .to_string(),
        ),
        FieldType::Timestamp => {
            let ms = j
                .as_i64()
                .ok_or_else(|| bad("expected epoch milliseconds"))?;
            Value::Timestamp(
                DateTime::<Utc>::from_timestamp_millis(ms)
                    .ok_or_else(|| bad("timestamp out of range"))?,
            )
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            name: "review".into(),
            fields: vec![
                Field {
                    name: "header".into(),
                    ty: FieldType::String,
                    optional: true,
                },
                Field {
                    name: "is_streaming".into(),
                    ty: FieldType::Boolean,
                    optional: true,
                },
                Field {
                    name: "n".into(),
                    ty: FieldType::Int64,
                    optional: true,
                },
                Field {
                    name: "score".into(),
                    ty: FieldType::Double,
                    optional: true,
                },
                Field {
                    name: "at".into(),
                    ty: FieldType::Timestamp,
                    optional: true,
                },
            ],
        }
    }

    #[test]
    fn envelope_has_kafka_connect_shape() {
        let enc = Encoder::new(&schema());
        let t = DateTime::<Utc>::from_timestamp_millis(1_700_000_000_123).expect("ts");
        let bytes = enc.encode(&[
            Value::Text("a \"q\"\tb".into()),
            Value::Bool(false),
            Value::Int(-3),
            Value::Double(0.25),
            Value::Timestamp(t),
        ]);
        let j: Json = serde_json::from_slice(&bytes).expect("json");
        let obj = j.as_object().expect("object");
        assert_eq!(obj.keys().collect::<Vec<_>>(), vec!["payload", "schema"]);
        assert_eq!(
            j["schema"],
            json!({"type":"struct","optional":false,"name":"review","fields":[
                {"type":"string","optional":true,"field":"header"},
                {"type":"boolean","optional":true,"field":"is_streaming"},
                {"type":"int64","optional":true,"field":"n"},
                {"type":"double","optional":true,"field":"score"},
                {"type":"int64","optional":true,"field":"at","name":"org.apache.kafka.connect.data.Timestamp","version":1}
            ]})
        );
        assert_eq!(
            j["payload"],
            json!({"header":"a \"q\"\tb","is_streaming":false,"n":-3,"score":0.25,"at":1_700_000_000_123_i64})
        );
    }

    #[test]
    fn decode_inverts_encode() {
        let enc = Encoder::new(&schema());
        let vals = vec![
            Value::Text("x".into()),
            Value::Null,
            Value::Int(i64::MAX),
            Value::Double(1e-7),
            Value::Null,
        ];
        let (s, v) = decode(&enc.encode(&vals)).expect("decodes");
        assert_eq!(s, schema());
        assert_eq!(v, vals);
    }

    #[test]
    fn decode_rejects_non_envelopes() {
        assert!(matches!(
            decode(b"{\"payload\":{}}"),
            Err(EnvelopeError::NotEnvelope)
        ));
        assert!(matches!(
            decode(b"{\"schema\":{\"type\":\"struct\",\"fields\":[]},\"payload\":{},\"x\":1}"),
            Err(EnvelopeError::NotEnvelope)
        ));
        assert!(matches!(decode(b"nope"), Err(EnvelopeError::NotJson(_))));
        let wrong = br#"{"schema":{"type":"struct","fields":[{"field":"n","type":"int64","optional":false}]},"payload":{"n":"x"}}"#;
        assert!(matches!(decode(wrong), Err(EnvelopeError::BadValue { .. })));
    }
}
