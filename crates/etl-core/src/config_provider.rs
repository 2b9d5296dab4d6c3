//! Kafka Connect's ConfigProvider references in connector configs, so a config
//! on disk (or in connect-manager's store) names a secret instead of holding it:
//!
//! - `${env:VAR}`: the environment variable `VAR` of the process that runs
//!   the connector (Kafka Connect's `EnvVarConfigProvider`);
//! - `${file:/path/to/file.properties:key}`: `key` of a Java properties file
//!   (`FileConfigProvider`).
//!
//! The syntax is Kafka's, `${provider:[path:]key}`: the provider ends at the
//! first `:`, the path at the next one, the key is the rest. A reference to a
//! provider other than these two is left as it is (Kafka Connect does the same
//! with providers it has not configured); `${topic}` and other text without a
//! `:` is no reference at all. Errors name the reference, never a value.
//!
//! Pure: the caller hands in how to read a variable and a file.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProviderError {
    #[error("{reference} in {key:?}: {reason}")]
    Unresolved {
        key: String,
        reference: String,
        reason: String,
    },
}

/// One `${provider:[path:]key}` reference.
#[derive(Debug, PartialEq, Eq)]
struct Reference<'a> {
    provider: &'a str,
    path: Option<&'a str>,
    key: &'a str,
}

/// The providers this resolver knows.
const PROVIDERS: [&str; 2] = ["env", "file"];

fn parse_reference(inner: &str) -> Option<Reference<'_>> {
    let (provider, rest) = inner.split_once(':')?;
    // `${NAME:-default}` is a placeholder of connector files, not a reference.
    if provider.is_empty()
        || rest.starts_with('-')
        || !provider
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    let (path, key) = match rest.split_once(':') {
        Some((path, key)) => (Some(path), key),
        None => (None, rest),
    };
    Some(Reference {
        provider,
        path,
        key,
    })
}

/// Whether `value` holds a reference this resolver would replace.
pub fn has_reference(value: &str) -> bool {
    references(value).next().is_some()
}

/// Whether the text between `${` and `}` is a reference this resolver
/// knows (connector file placeholders pass those through untouched).
pub fn is_reference(inner: &str) -> bool {
    parse_reference(inner).is_some_and(|r| PROVIDERS.contains(&r.provider))
}

/// The `(start, end, inner)` of each known reference in `value`, in order.
fn references(value: &str) -> impl Iterator<Item = (usize, usize, &str)> {
    let mut from = 0;
    std::iter::from_fn(move || {
        while let Some(found) = value[from..].find("${") {
            let start = from + found;
            let inner_start = start + 2;
            let Some(len) = value[inner_start..].find('}') else {
                from = value.len();
                return None;
            };
            let inner = &value[inner_start..inner_start + len];
            let end = inner_start + len + 1;
            from = end;
            if is_reference(inner) {
                return Some((start, end, inner));
            }
        }
        None
    })
}

/// Variables `${env:…}` may not read: the control plane's own credentials are
/// not a connector's business, and a connector config (which any API caller
/// can write) must not be a way to send them elsewhere.
pub const FORBIDDEN_ENV: &[&str] = &["ETL_API_TOKEN", "ETL_API_TOKEN_FILE"];

/// Resolves every reference in `value`. `env` reads a variable; `file` reads
/// a whole file (its error is the reason shown).
pub fn resolve_value(
    key: &str,
    value: &str,
    env: &impl Fn(&str) -> Option<String>,
    file: &impl Fn(&str) -> Result<String, String>,
) -> Result<String, ProviderError> {
    let mut out = String::with_capacity(value.len());
    let mut last = 0;
    for (start, end, inner) in references(value) {
        out.push_str(&value[last..start]);
        let fail = |reason: String| ProviderError::Unresolved {
            key: key.to_string(),
            reference: format!("${{{inner}}}"),
            reason,
        };
        let Some(r) = parse_reference(inner) else {
            // `references` yields only references: nothing to skip here.
            continue;
        };
        last = end;
        let resolved = match (r.provider, r.path) {
            ("env", None) => {
                if FORBIDDEN_ENV.contains(&r.key) {
                    return Err(fail(format!(
                        "{} is the control plane's credential, not a connector's",
                        r.key
                    )));
                }
                env(r.key).ok_or_else(|| {
                    fail(format!(
                        "environment variable {} is not set where connect-manager runs",
                        r.key
                    ))
                })?
            }
            ("env", Some(_)) => {
                return Err(fail(
                    "write ${env:VARIABLE}: the env provider takes no path".into(),
                ));
            }
            ("file", Some(path)) if !path.is_empty() => {
                let text = file(path).map_err(|e| fail(format!("cannot read {path}: {e}")))?;
                parse_properties(&text)
                    .remove(r.key)
                    .ok_or_else(|| fail(format!("{path} has no key {:?}", r.key)))?
            }
            ("file", _) => {
                return Err(fail(
                    "write ${file:/path/to/file.properties:key}: the file provider needs a path"
                        .into(),
                ));
            }
            // Another provider: left as it is.
            _ => value[start..end].to_string(),
        };
        out.push_str(&resolved);
    }
    out.push_str(&value[last..]);
    Ok(out)
}

/// Resolves every value of `config`: the config a connector runs with.
pub fn resolve(
    config: &BTreeMap<String, String>,
    env: impl Fn(&str) -> Option<String>,
    file: impl Fn(&str) -> Result<String, String>,
) -> Result<BTreeMap<String, String>, ProviderError> {
    config
        .iter()
        .map(|(k, v)| Ok((k.clone(), resolve_value(k, v, &env, &file)?)))
        .collect()
}

/// A Java properties file (what `FileConfigProvider` reads): `key=value`,
/// `key: value` or `key value`; `#` and `!` comments; a trailing `\` continues
/// the line; `\t`, `\n`, `\r`, `\f`, `\uXXXX` and escaped separators.
pub fn parse_properties(text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut logical = String::new();
    let mut lines = text.lines();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if logical.is_empty() && (trimmed.is_empty() || trimmed.starts_with(['#', '!'])) {
            continue;
        }
        // An odd number of trailing backslashes continues the line.
        let trailing = trimmed.bytes().rev().take_while(|b| *b == b'\\').count();
        if trailing % 2 == 1 {
            logical.push_str(&trimmed[..trimmed.len() - 1]);
            if lines.clone().next().is_some() {
                continue;
            }
        } else {
            logical.push_str(trimmed);
        }
        let (key, value) = split_property(&logical);
        out.insert(unescape(key), unescape(value));
        logical.clear();
    }
    out
}

/// Splits at the first unescaped `=`, `:` or whitespace (and the separator's
/// surrounding whitespace).
fn split_property(line: &str) -> (&str, &str) {
    let bytes = line.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 2,
            b'=' | b':' => return (&line[..i], line[i + 1..].trim_start()),
            b' ' | b'\t' | b'\x0c' => {
                let rest = line[i..].trim_start();
                let rest = rest.strip_prefix(['=', ':']).map_or(rest, str::trim_start);
                return (&line[..i], rest);
            }
            _ => i += 1,
        }
    }
    (line, "")
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('t') => out.push('\t'),
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some('f') => out.push('\x0c'),
            Some('u') => {
                let hex: String = chars.by_ref().take(4).collect();
                match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
                    Some(ch) => out.push(ch),
                    None => {
                        out.push_str("\\u");
                        out.push_str(&hex);
                    }
                }
            }
            Some(other) => out.push(other),
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(k: &str) -> Option<String> {
        (k == "PG_PASSWORD").then(|| "s3cret".to_string())
    }

    fn file(path: &str) -> Result<String, String> {
        match path {
            "/run/secrets/db.properties" => {
                Ok("# the database\nuser = etl\npassword=p@ss:word=1\n".to_string())
            }
            _ => Err("No such file or directory".into()),
        }
    }

    fn one(value: &str) -> Result<String, ProviderError> {
        resolve_value("k", value, &env, &file)
    }

    #[test]
    fn env_and_file_references_resolve() {
        assert_eq!(one("${env:PG_PASSWORD}").as_deref(), Ok("s3cret"));
        assert_eq!(
            one("${file:/run/secrets/db.properties:password}").as_deref(),
            Ok("p@ss:word=1")
        );
        assert_eq!(
            one("postgres://${file:/run/secrets/db.properties:user}:${env:PG_PASSWORD}@db/x")
                .as_deref(),
            Ok("postgres://etl:s3cret@db/x")
        );
    }

    #[test]
    fn other_text_is_left_alone() {
        for v in [
            "${topic}",
            "plain",
            "${vault:secret/x:key}",
            "${unterminated",
            "$x",
            "${ETL_PG_PASSWORD:-}",
        ] {
            assert_eq!(one(v).as_deref(), Ok(v), "{v}");
            assert!(!has_reference(v), "{v}");
        }
        assert!(has_reference("a ${env:X} b"));
    }

    #[test]
    fn failures_name_the_reference_but_no_value() {
        let err = one("${env:MISSING}").expect_err("unset").to_string();
        assert!(
            err.contains("${env:MISSING}") && err.contains("not set"),
            "{err}"
        );
        let err = one("${file:/nope.properties:password}")
            .expect_err("no file")
            .to_string();
        assert!(err.contains("cannot read /nope.properties"), "{err}");
        let err = one("${file:/run/secrets/db.properties:missing}")
            .expect_err("no key")
            .to_string();
        assert!(err.contains("no key \"missing\""), "{err}");
        assert!(!err.contains("p@ss"), "{err}");
        assert!(one("${file:key}").is_err());
        assert!(one("${env:/path:VAR}").is_err());
        let err = one("${env:ETL_API_TOKEN}")
            .expect_err("forbidden")
            .to_string();
        assert!(err.contains("control plane"), "{err}");
    }

    #[test]
    fn java_properties_are_read() {
        let p = parse_properties(
            "# comment\n! also\n\na=1\nb : 2\nc 3\nd\\=x=4\nlong = one \\\n    two\nu=\\u0041\\t\nempty=\n",
        );
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "2");
        assert_eq!(p["c"], "3");
        assert_eq!(p["d=x"], "4");
        assert_eq!(p["long"], "one two");
        assert_eq!(p["u"], "A\t");
        assert_eq!(p["empty"], "");
        assert_eq!(p.len(), 7);
    }
}
