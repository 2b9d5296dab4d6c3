//! The Kafka Connect JsonConverter envelope with schemas enabled:
//! `{"schema": {"type":"struct","fields":[…],"optional":false,"name":…}, "payload": {…}}`.
//! Exactly those two keys: stock Kafka Connect sinks reject anything else, and
//! being readable by them is why the topic uses this format.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde_json::value::RawValue;
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

/// Encodes many rows of one schema: the schema's JSON is rendered once, and
/// each row is written straight into its buffer (no JSON tree per record:
/// this runs for every record the source sends).
pub struct Encoder {
    prefix: Vec<u8>,
    /// Payload keys in the order a `serde_json::Map` renders them (sorted,
    /// each once, the last field of a name winning), so the bytes are those
    /// of the JSON tree this replaced: `"name":` and the value's index.
    keys: Vec<(Vec<u8>, usize)>,
}

impl Encoder {
    pub fn new(schema: &Schema) -> Self {
        let mut last: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, f) in schema.fields.iter().enumerate() {
            last.insert(&f.name, i);
        }
        let keys = last
            .into_iter()
            .map(|(name, i)| {
                let mut key = Json::from(name).to_string().into_bytes();
                key.push(b':');
                (key, i)
            })
            .collect();
        Self {
            prefix: format!("{{\"schema\":{},\"payload\":{{", schema_json(schema)).into_bytes(),
            keys,
        }
    }

    /// The envelope of one row; `values` are in schema field order.
    pub fn encode(&self, values: &[Value]) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.prefix.len() + 64 * self.keys.len());
        out.extend_from_slice(&self.prefix);
        let mut first = true;
        for (key, i) in &self.keys {
            let Some(v) = values.get(*i) else { continue };
            if !first {
                out.push(b',');
            }
            first = false;
            out.extend_from_slice(key);
            write_value(&mut out, v);
        }
        out.extend_from_slice(b"}}");
        out
    }
}

/// A value as `serde_json` renders it (a non-finite double as `null`, as
/// `json!` made it before).
fn write_value(out: &mut Vec<u8>, v: &Value) {
    // Writing into a Vec cannot fail.
    let _ = match v {
        Value::Null => {
            out.extend_from_slice(b"null");
            Ok(())
        }
        Value::Bool(b) => {
            out.extend_from_slice(if *b { b"true" } else { b"false" });
            Ok(())
        }
        Value::Int(i) => serde_json::to_writer(&mut *out, i),
        Value::Double(d) => serde_json::to_writer(&mut *out, d),
        Value::Text(s) => serde_json::to_writer(&mut *out, s),
        Value::Timestamp(t) => serde_json::to_writer(&mut *out, &t.timestamp_millis()),
    };
}

thread_local! {
    /// The last schema decoded on this thread, with its JSON text. Every
    /// record of a file carries the same schema: parsing it once per change
    /// instead of once per record was most of the sink's decoding cost.
    static LAST_SCHEMA: RefCell<Option<LastSchema>> = const { RefCell::new(None) };
}

struct LastSchema {
    /// `{"schema":` + the schema's JSON text + `,"payload":`: how an envelope
    /// of our source or of Kafka Connect's JsonConverter with this schema
    /// begins. Comparing these bytes skips the schema without scanning it as
    /// JSON (validating its UTF-8, looking for escapes), which was half of
    /// decoding a record.
    prefix: Box<[u8]>,
    /// Where the schema's text is in `prefix`.
    text: std::ops::Range<usize>,
    schema: Arc<Schema>,
}

impl LastSchema {
    fn new(text: &str, schema: Arc<Schema>) -> Self {
        let mut prefix = Vec::with_capacity(text.len() + 24);
        prefix.extend_from_slice(br#"{"schema":"#);
        let start = prefix.len();
        prefix.extend_from_slice(text.as_bytes());
        let end = prefix.len();
        prefix.extend_from_slice(br#","payload":"#);
        Self {
            prefix: prefix.into_boxed_slice(),
            text: start..end,
            schema,
        }
    }

    fn text(&self) -> &[u8] {
        &self.prefix[self.text.clone()]
    }
}

/// Decodes an envelope into its schema and the values in schema field order.
/// Consecutive records with the same schema share one `Arc` (a sink compares
/// it per record, and cloning a schema per record cost a dozen allocations).
///
/// One pass over the bytes for the envelope as Kafka Connect and our source
/// write it (`schema` first, then `payload`, no field name twice). Anything
/// else, and every error, goes through [`decode_generic`], the reader of any
/// valid envelope, so both paths give the same answer (a property test holds
/// them to it).
pub fn decode(bytes: &[u8]) -> Result<(Arc<Schema>, Vec<Value>), EnvelopeError> {
    match decode_fast(bytes) {
        Some(decoded) => Ok(decoded),
        None => decode_generic(bytes).map(|(schema, values)| (Arc::new(schema), values)),
    }
}

fn decode_fast(bytes: &[u8]) -> Option<(Arc<Schema>, Vec<Value>)> {
    if let Some(decoded) = decode_after_last_prefix(bytes) {
        return Some(decoded);
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let decoded = de.deserialize_map(EnvelopeVisitor).ok()??;
    de.end().ok()?;
    Some(decoded)
}

/// An envelope that begins as the last one decoded on this thread did, up to
/// its payload: the payload read with the cached schema, or `None` (another
/// beginning, or anything after the payload but its closing brace) for the
/// full reading, which gives the same answer when this one has one.
fn decode_after_last_prefix(bytes: &[u8]) -> Option<(Arc<Schema>, Vec<Value>)> {
    LAST_SCHEMA.with_borrow(|last| {
        let last = last.as_ref()?;
        let rest = bytes.strip_prefix(&*last.prefix)?;
        // JSON's whitespace only (not form feed, which `trim_ascii_end` drops).
        let end = rest
            .iter()
            .rposition(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))?;
        let payload = rest[..=end].strip_suffix(b"}")?;
        let mut de = serde_json::Deserializer::from_slice(payload);
        let values = Payload(&last.schema.fields).deserialize(&mut de).ok()??;
        de.end().ok()?;
        Some((last.schema.clone(), values))
    })
}

/// The schema of `text`, from the thread's cache when it is the last one seen.
/// `None` for a schema the fast path leaves to [`decode_generic`].
fn cached_schema(text: &str) -> Option<Arc<Schema>> {
    LAST_SCHEMA.with_borrow_mut(|last| {
        if let Some(last) = last.as_ref()
            && last.text() == text.as_bytes()
        {
            return Some(last.schema.clone());
        }
        let schema = Arc::new(parse_schema(&serde_json::from_str(text).ok()?).ok()?);
        let mut names: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
        names.sort_unstable();
        if names.windows(2).any(|w| w[0] == w[1]) {
            return None;
        }
        *last = Some(LastSchema::new(text, schema.clone()));
        Some(schema)
    })
}

/// The fast path's reading of the envelope: `None` sends it to [`decode_generic`].
struct EnvelopeVisitor;

impl<'de> Visitor<'de> for EnvelopeVisitor {
    type Value = Option<(Arc<Schema>, Vec<Value>)>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a Kafka Connect envelope")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        if map.next_key_seed(KeyIs("schema"))? != Some(true) {
            return Ok(None);
        }
        let raw: &'de RawValue = map.next_value()?;
        let Some(schema) = cached_schema(raw.get()) else {
            return Ok(None);
        };
        if map.next_key_seed(KeyIs("payload"))? != Some(true) {
            return Ok(None);
        }
        let Some(values) = map.next_value_seed(Payload(&schema.fields))? else {
            return Ok(None);
        };
        if map.next_key::<IgnoredAny>()?.is_some() {
            return Ok(None);
        }
        Ok(Some((schema, values)))
    }
}

/// Whether the next key is the given one, without allocating it.
struct KeyIs(&'static str);

impl<'de> DeserializeSeed<'de> for KeyIs {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for KeyIs {
    type Value = bool;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a key")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The index of the field a payload key names, if any.
struct FieldIndex<'a>(&'a [Field]);

impl<'de> DeserializeSeed<'de> for FieldIndex<'_> {
    type Value = Option<usize>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<usize>, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for FieldIndex<'_> {
    type Value = Option<usize>;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a field name")
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|f| f.name == v))
    }
}

/// The payload's values in field order, read straight into [`Value`]s;
/// `None` when one does not fit its field (the generic path says why).
struct Payload<'a>(&'a [Field]);

impl<'de> DeserializeSeed<'de> for Payload<'_> {
    type Value = Option<Vec<Value>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Payload<'_> {
    type Value = Option<Vec<Value>>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a payload object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut values: Vec<Option<Value>> = vec![None; self.0.len()];
        while let Some(index) = map.next_key_seed(FieldIndex(self.0))? {
            match index {
                Some(i) => match map.next_value_seed(FieldValue(&self.0[i]))? {
                    Some(v) => values[i] = Some(v),
                    None => return Ok(None),
                },
                // Read in full, not skipped: the generic path rejects a
                // number out of range even in a key the schema lacks.
                None => {
                    map.next_value::<Json>()?;
                }
            }
        }
        // An absent field reads as null, as in the generic path.
        Ok(values
            .into_iter()
            .zip(self.0)
            .map(|(v, f)| v.or_else(|| f.optional.then_some(Value::Null)))
            .collect())
    }
}

/// One payload value as its field's type, with [`parse_field_value`]'s rules.
struct FieldValue<'a>(&'a Field);

impl<'de> DeserializeSeed<'de> for FieldValue<'_> {
    type Value = Option<Value>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldValue<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a payload value")
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(self.0.optional.then_some(Value::Null))
    }
    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Self::Value, E> {
        Ok((self.0.ty == FieldType::Boolean).then_some(Value::Bool(b)))
    }
    fn visit_i64<E: de::Error>(self, i: i64) -> Result<Self::Value, E> {
        Ok(match self.0.ty {
            FieldType::Int32 | FieldType::Int64 => Some(Value::Int(i)),
            FieldType::Float | FieldType::Double => Some(Value::Double(i as f64)),
            FieldType::Timestamp => DateTime::<Utc>::from_timestamp_millis(i).map(Value::Timestamp),
            FieldType::Boolean | FieldType::String => None,
        })
    }
    fn visit_u64<E: de::Error>(self, u: u64) -> Result<Self::Value, E> {
        match (self.0.ty, i64::try_from(u)) {
            (FieldType::Float | FieldType::Double, _) => Ok(Some(Value::Double(u as f64))),
            (_, Ok(i)) => self.visit_i64(i),
            (_, Err(_)) => Ok(None),
        }
    }
    fn visit_f64<E: de::Error>(self, d: f64) -> Result<Self::Value, E> {
        Ok(matches!(self.0.ty, FieldType::Float | FieldType::Double).then_some(Value::Double(d)))
    }
    fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
        Ok((self.0.ty == FieldType::String).then(|| Value::Text(s.to_owned())))
    }
    fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
        Ok((self.0.ty == FieldType::String).then_some(Value::Text(s)))
    }
}

/// Decodes any valid envelope (keys in any order) through a JSON tree, with
/// an error that says what is wrong; [`decode`] falls back to it.
pub fn decode_generic(bytes: &[u8]) -> Result<(Schema, Vec<Value>), EnvelopeError> {
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
        assert_eq!(*s, schema());
        assert_eq!(v, vals);
    }

    /// The property test holds the fast path to the generic one; this holds
    /// it to being taken, for our records and for Kafka Connect's.
    #[test]
    fn usual_envelopes_take_the_fast_path() {
        let enc = Encoder::new(&schema());
        let ours = enc.encode(&[
            Value::Text("é \"q\"".into()),
            Value::Bool(true),
            Value::Int(7),
            Value::Double(2.5),
            Value::Null,
        ]);
        let (schema, values) = decode_generic(&ours).expect("valid");
        let first = decode_fast(&ours).expect("fast path");
        assert_eq!((&*first.0, &first.1), (&schema, &values));
        // The second record meets the cached schema: the same Arc.
        let second = decode_fast(&ours).expect("fast path");
        assert!(Arc::ptr_eq(&first.0, &second.0));
        let connect = br#"{"schema":{"type":"struct","fields":[{"type":"int64","optional":false,"field":"n"},{"type":"string","optional":true,"field":"t\u00e9"}],"optional":false},"payload":{"t\u00e9":"a\nb","n":-1,"extra":[1]}}"#;
        let (s, v) = decode_fast(connect).expect("fast path");
        assert_eq!(s.fields[1].name, "té");
        assert_eq!(v, vec![Value::Int(-1), Value::Text("a\nb".into())]);
        // A schema naming a field twice is left to the generic path.
        let twice = br#"{"schema":{"type":"struct","fields":[{"type":"int64","field":"n"},{"type":"int64","field":"n"}]},"payload":{"n":1}}"#;
        assert_eq!(decode_fast(twice), None);
        assert_eq!(
            decode(twice).expect("valid").1,
            vec![Value::Int(1), Value::Int(1)]
        );
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
