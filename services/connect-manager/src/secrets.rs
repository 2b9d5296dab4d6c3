//! Secrets in connector configs: what counts as one, how configs are shown
//! without them, and how every message the service emits is cleaned of them,
//! as Kafka Connect's `PASSWORD` type does (`[hidden]`).
//!
//! - [`is_secret_key`]: `*.password`, `*.passphrase`, `*secret*`, `*.token`,
//!   private keys, credentials, JAAS configs, licenses.
//! - [`masked`]: a config as the APIs show it: secret values `[hidden]`, and
//!   the password inside any URL (`connection.url`'s `user:pass@` or
//!   `password=`) too. The store keeps the real config (or, better, its
//!   `${env:…}` / `${file:…}` references: `etl_core::config_provider`).
//! - [`Scrubber`]: the secret values of one connector (as written and as
//!   resolved); [`Scrubber::scrub`] takes them out of an error message or a
//!   status before it reaches a response or a log line.

use std::{collections::BTreeMap, fmt, sync::Arc};

/// What a secret value is shown as.
pub(crate) const HIDDEN: &str = "[hidden]";

/// Whether the option `key` holds a secret.
pub(crate) fn is_secret_key(key: &str) -> bool {
    let k = key.trim().to_ascii_lowercase();
    let words = [
        "password",
        "passphrase",
        "secret",
        "credential",
        "jaas.config",
    ];
    words.iter().any(|w| k.contains(w))
        || k == "token"
        || k.ends_with(".token")
        || k.ends_with("_token")
        || k.contains("private.key")
        || k.ends_with("api.key")
        || k.ends_with("apikey")
        || k.ends_with("license")
}

/// A config as the APIs show it.
pub(crate) fn masked(config: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    config
        .iter()
        .map(|(k, v)| (k.clone(), masked_value(k, v)))
        .collect()
}

/// One value as the APIs show it.
pub(crate) fn masked_value(key: &str, value: &str) -> String {
    if is_secret_key(key) && !value.is_empty() {
        HIDDEN.to_string()
    } else {
        mask_url_passwords(value)
    }
}

/// Replaces the passwords of URLs in `text`: `scheme://user:PASSWORD@host`
/// and `password=PASSWORD` (JDBC's parameter).
pub(crate) fn mask_url_passwords(text: &str) -> String {
    let text = mask_userinfo(text);
    mask_password_params(&text)
}

fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '&' | '"' | '\'' | ';' | ')' | '}' | ']' | ',' | '>')
}

fn mask_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority: up to the path, query, fragment or the end of the URL.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#') || ends_value(c))
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, pass)) if !pass.is_empty() => {
                        out.push_str(user);
                        out.push(':');
                        out.push_str(HIDDEN);
                        out.push_str(&authority[at..]);
                    }
                    _ => out.push_str(authority),
                }
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

fn mask_password_params(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find("password=") {
        let value_start = from + found + "password=".len();
        let value_end = text[value_start..]
            .find(ends_value)
            .map_or(text.len(), |e| value_start + e);
        if value_end > value_start {
            out.push_str(&text[last..value_start]);
            out.push_str(HIDDEN);
            last = value_end;
        }
        from = value_end.max(value_start);
    }
    out.push_str(&text[last..]);
    out
}

/// The passwords inside a URL value, as written and percent-decoded.
fn url_passwords(value: &str) -> Vec<String> {
    let mut found = Vec::new();
    if let Some((_, after)) = value.split_once("://") {
        let authority = after.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@')
            && let Some((_, pass)) = userinfo.split_once(':')
        {
            found.push(pass.to_string());
        }
    }
    if let Some((_, query)) = value.split_once('?') {
        for pair in query.split('&') {
            if let Some((k, v)) = pair.split_once('=')
                && k.eq_ignore_ascii_case("password")
            {
                found.push(v.to_string());
            }
        }
    }
    let decoded: Vec<String> = found.iter().filter_map(|p| percent_decode(p)).collect();
    found.extend(decoded);
    found
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Values shorter than this are only replaced where they stand alone (not
/// inside a word): replacing a three-letter password everywhere would mangle
/// every message ("review-etl"), and such a value is found by the URL and
/// option rules anyway.
const SHORT: usize = 4;

/// The secret values of one connector, to take out of messages.
#[derive(Clone, Default)]
pub(crate) struct Scrubber {
    values: Arc<Vec<String>>,
}

impl fmt::Debug for Scrubber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Scrubber({} values)", self.values.len())
    }
}

impl Scrubber {
    /// The secrets of `configs` (the config as written, and as resolved).
    pub(crate) fn new<'a>(configs: impl IntoIterator<Item = &'a BTreeMap<String, String>>) -> Self {
        let mut values: Vec<String> = Vec::new();
        for config in configs {
            for (k, v) in config {
                // A reference (`${env:…}`, `${file:…}`) names a secret, it is
                // none: error messages may show it. Its value is in the
                // resolved config.
                if etl_core::config_provider::has_reference(v) {
                    continue;
                }
                if is_secret_key(k) && !v.trim().is_empty() {
                    values.push(v.clone());
                    values.push(v.trim().to_string());
                }
                values.extend(url_passwords(v));
            }
        }
        values.retain(|v| !v.is_empty() && v != HIDDEN);
        // Longest first: a value that contains another goes whole.
        values.sort_by_key(|v| std::cmp::Reverse(v.len()));
        values.dedup();
        Self {
            values: Arc::new(values),
        }
    }

    /// `text` without any of the secrets, and without URL passwords.
    pub(crate) fn scrub(&self, text: &str) -> String {
        let mut out = mask_url_passwords(text);
        for v in self.values.iter() {
            out = if v.chars().count() >= SHORT {
                out.replace(v.as_str(), HIDDEN)
            } else {
                replace_standalone(&out, v)
            };
        }
        out
    }
}

/// Replaces `needle` where neither neighbour continues a word.
fn replace_standalone(text: &str, needle: &str) -> String {
    let word = |c: char| c.is_alphanumeric() || matches!(c, '_' | '-' | '.');
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (i, _) in text.match_indices(needle) {
        if i < last {
            continue;
        }
        let before = text[..i].chars().next_back();
        let after = text[i + needle.len()..].chars().next();
        if before.is_some_and(word) || after.is_some_and(word) {
            continue;
        }
        out.push_str(&text[last..i]);
        out.push_str(HIDDEN);
        last = i + needle.len();
    }
    out.push_str(&text[last..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn secret_keys_are_recognised() {
        for k in [
            "connection.password",
            "sftp.password",
            "tls.passphrase",
            "ssl.key.password",
            "sasl.jaas.config",
            "tls.private.key",
            "aws.secret.access.key",
            "confluent.license",
            "etl.gateway.token",
            "PASSWORD",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in [
            "connection.user",
            "key.converter",
            "sftp.username",
            "topics",
        ] {
            assert!(!is_secret_key(k), "{k}");
        }
    }

    #[test]
    fn configs_are_shown_without_secrets() {
        let shown = masked(&map(&[
            ("connection.password", "pw1"),
            (
                "connection.url",
                "jdbc:postgresql://u:pw2@db:5432/x?password=pw3&ssl=false",
            ),
            ("sftp.password", ""),
            ("topics", "t"),
            ("tls.passphrase", "${env:PASSPHRASE}"),
        ]));
        assert_eq!(shown["connection.password"], HIDDEN);
        assert_eq!(
            shown["connection.url"],
            "jdbc:postgresql://u:[hidden]@db:5432/x?password=[hidden]&ssl=false"
        );
        assert_eq!(shown["sftp.password"], "");
        assert_eq!(shown["topics"], "t");
        assert_eq!(shown["tls.passphrase"], HIDDEN);
    }

    #[test]
    fn messages_lose_every_secret() {
        let raw = map(&[
            ("connection.url", "postgres://u:p%zz@h/db"),
            ("sftp.password", "etl"),
            ("connection.password", "${env:PG}"),
        ]);
        let resolved = map(&[("connection.password", "hunter22")]);
        let s = Scrubber::new([&raw, &resolved]);
        let msg = s.scrub(
            "connection.url is not a Postgres URL (bad percent escape in \"p%zz\"); login \"etl\" failed for hunter22 on review-etl, postgres://x:y@h",
        );
        for secret in ["p%zz", "hunter22", "\"etl\"", ":y@"] {
            assert!(!msg.contains(secret), "{secret} in {msg}");
        }
        assert!(msg.contains("review-etl"), "{msg}");
        assert!(msg.contains("postgres://x:[hidden]@h"), "{msg}");
    }
}
