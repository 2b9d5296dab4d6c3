//! Connector files (`deploy/connectors/*.json`) in Kafka Connect's form,
//! `{"name": "...", "config": {"key": "value", ...}}`, with `${VAR}` and
//! `${VAR:-default}` placeholders so one file serves the local stack, compose and
//! tests: whoever applies the file (etlctl, a test) supplies the variables.
//! ConfigProvider references (`${env:VAR}`, `${file:/path:key}`, see
//! [`crate::config_provider`]) are left as they are: connect-manager resolves
//! them when the connector starts, so the secret never travels with the file.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConnectorFileError {
    #[error("connector file is not valid JSON: {0}")]
    Json(String),
    #[error("connector file must be an object with \"name\" (string) and \"config\" (object)")]
    Shape,
    #[error("config value of {key:?} must be a string, number or boolean")]
    Value { key: String },
    #[error("placeholder ${{{name}}} has no value and no default: set {name} in the environment")]
    Unset { name: String },
    #[error("unterminated placeholder in {0:?}")]
    Unterminated(String),
}

/// A connector definition ready to send to connect-manager.
#[derive(Clone, Debug, PartialEq)]
pub struct ConnectorFile {
    pub name: String,
    pub config: BTreeMap<String, String>,
}

/// Parses a connector file, expanding placeholders with `lookup`.
/// Numbers and booleans in `config` become strings, as Kafka Connect treats them.
pub fn parse(
    json: &str,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ConnectorFile, ConnectorFileError> {
    let v: serde_json::Value =
        serde_json::from_str(json).map_err(|e| ConnectorFileError::Json(e.to_string()))?;
    let name = v
        .get("name")
        .and_then(|n| n.as_str())
        .ok_or(ConnectorFileError::Shape)?;
    let cfg = v
        .get("config")
        .and_then(|c| c.as_object())
        .ok_or(ConnectorFileError::Shape)?;
    let mut config = BTreeMap::new();
    for (k, val) in cfg {
        let raw = match val {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            serde_json::Value::Bool(b) => b.to_string(),
            _ => return Err(ConnectorFileError::Value { key: k.clone() }),
        };
        config.insert(k.clone(), expand(&raw, &lookup)?);
    }
    Ok(ConnectorFile {
        name: expand(name, &lookup)?,
        config,
    })
}

/// Expands `${VAR}` and `${VAR:-default}` in `s`.
pub fn expand(
    s: &str,
    lookup: &impl Fn(&str) -> Option<String>,
) -> Result<String, ConnectorFileError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| ConnectorFileError::Unterminated(s.to_string()))?;
        let inner = &after[..end];
        if crate::config_provider::is_reference(inner) {
            out.push_str(&rest[start..start + 2 + end + 1]);
            rest = &after[end + 1..];
            continue;
        }
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        match (lookup(name).filter(|v| !v.is_empty()), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(ConnectorFileError::Unset {
                    name: name.to_string(),
                });
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        match k {
            "HOST" => Some("db".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn expands_placeholders_and_defaults() {
        assert_eq!(
            expand("jdbc:postgresql://${HOST}:${PORT:-5432}/x", &env),
            Ok("jdbc:postgresql://db:5432/x".into())
        );
        assert_eq!(expand("${EMPTY:-d}", &env), Ok("d".into()));
        assert_eq!(expand("plain", &env), Ok("plain".into()));
        assert_eq!(
            expand("${env:PG_PASSWORD}/${file:/s.properties:pw}/${HOST}", &env),
            Ok("${env:PG_PASSWORD}/${file:/s.properties:pw}/db".into())
        );
        assert_eq!(
            expand("${NOPE}", &env),
            Err(ConnectorFileError::Unset {
                name: "NOPE".into()
            })
        );
        assert!(matches!(
            expand("${HOST", &env),
            Err(ConnectorFileError::Unterminated(_))
        ));
    }

    #[test]
    fn parses_kafka_connect_shape() {
        let f = parse(
            r#"{"name":"src","config":{"tasks.max":1,"csv.first.row.as.header":true,"sftp.host":"${HOST}"}}"#,
            env,
        )
        .expect("parses");
        assert_eq!(f.name, "src");
        assert_eq!(f.config["tasks.max"], "1");
        assert_eq!(f.config["csv.first.row.as.header"], "true");
        assert_eq!(f.config["sftp.host"], "db");
        assert_eq!(
            parse(r#"{"config":{}}"#, env),
            Err(ConnectorFileError::Shape)
        );
        assert!(matches!(
            parse(r#"{"name":"x","config":{"a":[1]}}"#, env),
            Err(ConnectorFileError::Value { .. })
        ));
    }
}
