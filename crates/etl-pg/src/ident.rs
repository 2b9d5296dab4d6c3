//! Identifiers in SQL text. Column names come from file headers and table names
//! from connector configs: they may be anything, reserved words and quotes
//! included, so every name we put into a statement is quoted.

use std::fmt;

/// `"name"`, with embedded quotes doubled: any text is then one identifier that
/// cannot end the statement or name something else.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// A table, in a schema or in the connection's current schema.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TableName {
    /// `None`: `current_schema()`, the first schema of the `search_path`.
    pub schema: Option<String>,
    pub name: String,
}

impl TableName {
    /// A table in the current schema, named exactly `name` (a dot is part of
    /// the name): how the sink reads `table.name.format`.
    pub fn unqualified(name: &str) -> Self {
        Self {
            schema: None,
            name: name.to_string(),
        }
    }

    /// `schema.table` or `table`, split at the first dot: how the verifier
    /// reads `--table`.
    pub fn parse(s: &str) -> Self {
        match s.split_once('.') {
            Some((schema, name)) => Self {
                schema: Some(schema.to_string()),
                name: name.to_string(),
            },
            None => Self::unqualified(s),
        }
    }

    /// The name as SQL: `"schema"."table"` or `"table"`.
    pub fn quoted(&self) -> String {
        match &self.schema {
            Some(schema) => format!("{}.{}", quote_ident(schema), quote_ident(&self.name)),
            None => quote_ident(&self.name),
        }
    }
}

impl fmt::Display for TableName {
    /// The quoted form, which is also unambiguous in messages.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_are_quoted() {
        assert_eq!(quote_ident("review"), "\"review\"");
        assert_eq!(quote_ident("a\"b; drop"), "\"a\"\"b; drop\"");
        assert_eq!(quote_ident(""), "\"\"");
    }

    #[test]
    fn table_names() {
        assert_eq!(TableName::parse("review").quoted(), "\"review\"");
        assert_eq!(
            TableName::parse("etl.review").quoted(),
            "\"etl\".\"review\""
        );
        assert_eq!(
            TableName::unqualified("etl.review").quoted(),
            "\"etl.review\""
        );
        assert_eq!(TableName::parse("a.b.c").schema.as_deref(), Some("a"));
        assert_eq!(TableName::parse("a.b.c").name, "b.c");
    }
}
