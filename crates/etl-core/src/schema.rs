//! Schemas in Kafka Connect's terms, and how each type lands in Postgres.

/// The column types file-etl infers and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FieldType {
    Boolean,
    Int32,
    Int64,
    Float,
    Double,
    String,
    Timestamp,
}

/// The Kafka Connect logical name of a timestamp (an int64 of epoch milliseconds).
pub const CONNECT_TIMESTAMP: &str = "org.apache.kafka.connect.data.Timestamp";

impl FieldType {
    /// Kafka Connect's primitive type name.
    pub fn connect_type(self) -> &'static str {
        match self {
            FieldType::Boolean => "boolean",
            FieldType::Int32 => "int32",
            FieldType::Int64 | FieldType::Timestamp => "int64",
            FieldType::Float => "float",
            FieldType::Double => "double",
            FieldType::String => "string",
        }
    }

    /// Kafka Connect's logical type name, where one applies.
    pub fn connect_name(self) -> Option<&'static str> {
        matches!(self, FieldType::Timestamp).then_some(CONNECT_TIMESTAMP)
    }

    /// The Postgres column type this field is stored in.
    pub fn pg_type(self) -> &'static str {
        match self {
            FieldType::Boolean => "boolean",
            FieldType::Int32 | FieldType::Int64 => "bigint",
            FieldType::Float | FieldType::Double => "double precision",
            FieldType::String => "text",
            FieldType::Timestamp => "timestamptz",
        }
    }

    /// The narrowest type that holds values of both `self` and `other` without
    /// loss: used when a later file's column disagrees with the table.
    pub fn widen(self, other: FieldType) -> FieldType {
        use FieldType::*;
        match (self, other) {
            (a, b) if a == b => a,
            (Int32 | Int64, Int32 | Int64) => Int64,
            (Int32 | Int64 | Float | Double, Int32 | Int64 | Float | Double) => Double,
            _ => String,
        }
    }

    /// The type of a Postgres column, by its `information_schema` data type name.
    pub fn from_pg_type(name: &str) -> Option<FieldType> {
        Some(match name {
            "boolean" => FieldType::Boolean,
            "bigint" | "integer" | "smallint" => FieldType::Int64,
            "double precision" | "real" | "numeric" => FieldType::Double,
            "text" | "character varying" | "character" => FieldType::String,
            "timestamp with time zone" | "timestamp without time zone" => FieldType::Timestamp,
            _ => return None,
        })
    }
}

/// One field of a record schema.
#[derive(Clone, Debug, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub optional: bool,
}

/// A struct schema: the shape of every row of one file.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub name: String,
    pub fields: Vec<Field>,
}

impl Schema {
    pub fn field_names(&self) -> impl Iterator<Item = &str> {
        self.fields.iter().map(|f| f.name.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::FieldType::*;

    #[test]
    fn widening_never_loses_values() {
        assert_eq!(Int64.widen(Int64), Int64);
        assert_eq!(Int32.widen(Int64), Int64);
        assert_eq!(Int64.widen(Double), Double);
        assert_eq!(Boolean.widen(Int64), String);
        assert_eq!(Timestamp.widen(String), String);
        assert_eq!(Double.widen(Timestamp), String);
    }

    #[test]
    fn connect_and_pg_names() {
        assert_eq!(Timestamp.connect_type(), "int64");
        assert_eq!(Timestamp.connect_name(), Some(super::CONNECT_TIMESTAMP));
        assert_eq!(Double.pg_type(), "double precision");
        assert_eq!(super::FieldType::from_pg_type("bigint"), Some(Int64));
        assert_eq!(super::FieldType::from_pg_type("uuid"), None);
    }
}
