//! Typed reads of a connector's flat string map, with errors that name the
//! option and say what was expected. Options nobody reads are reported once, so
//! a Kafka Connect config with keys we do not use still works.

use std::{cell::RefCell, collections::BTreeMap, collections::BTreeSet, str::FromStr};

use crate::Error;

/// Keys every connector may carry that only Kafka Connect itself uses.
const FRAMEWORK_KEYS: &[&str] = &[
    "name",
    "connector.class",
    "tasks.max",
    "key.converter",
    "value.converter",
    "key.converter.schemas.enable",
    "value.converter.schemas.enable",
    "header.converter",
    "confluent.topic.bootstrap.servers",
    "confluent.topic.replication.factor",
    "confluent.license",
];

/// A connector's options, remembering which ones were read.
pub(crate) struct Options<'a> {
    name: &'a str,
    map: &'a BTreeMap<String, String>,
    read: RefCell<BTreeSet<&'a str>>,
}

impl<'a> Options<'a> {
    pub(crate) fn new(name: &'a str, map: &'a BTreeMap<String, String>) -> Self {
        Self {
            name,
            map,
            read: RefCell::new(BTreeSet::new()),
        }
    }

    pub(crate) fn error(&self, message: impl Into<String>) -> Error {
        Error::config(self.name, message)
    }

    /// The trimmed value of `key`; an empty value counts as absent.
    pub(crate) fn get(&self, key: &'a str) -> Option<&'a str> {
        self.read.borrow_mut().insert(key);
        self.map
            .get(key)
            .map(|v| v.trim())
            .filter(|v| !v.is_empty())
    }

    /// The value of `key` as given (not trimmed), e.g. a password; empty when absent.
    pub(crate) fn raw(&self, key: &'a str) -> &'a str {
        self.read.borrow_mut().insert(key);
        self.map.get(key).map(String::as_str).unwrap_or("")
    }

    pub(crate) fn string(&self, key: &'a str, default: &str) -> String {
        self.get(key).unwrap_or(default).to_string()
    }

    pub(crate) fn required(&self, key: &'a str) -> Result<&'a str, Error> {
        self.get(key)
            .ok_or_else(|| self.error(format!("required option {key:?} is missing")))
    }

    /// A whole number within `min..=max`.
    pub(crate) fn number<T>(&self, key: &'a str, default: T, min: T, max: T) -> Result<T, Error>
    where
        T: FromStr + PartialOrd + Copy + std::fmt::Display,
    {
        let Some(v) = self.get(key) else {
            return Ok(default);
        };
        match v.parse::<T>() {
            Ok(n) if n >= min && n <= max => Ok(n),
            _ => Err(self.error(format!(
                "option {key:?} must be a whole number from {min} to {max}, got {v:?}"
            ))),
        }
    }

    pub(crate) fn boolean(&self, key: &'a str, default: bool) -> Result<bool, Error> {
        match self.get(key).map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(self.error(format!(
                "option {key:?} must be true or false, got {other:?}"
            ))),
        }
    }

    /// Logs (at debug) the keys that were never read: accepted and ignored, as
    /// Kafka Connect configs carry options for features we do not have.
    pub(crate) fn log_unused(&self) {
        let read = self.read.borrow();
        for key in self.map.keys() {
            if !read.contains(key.as_str()) && !FRAMEWORK_KEYS.contains(&key.as_str()) {
                tracing::debug!(connector = self.name, option = %key, "option not used by this connector; ignored");
            }
        }
    }
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
    fn typed_reads_name_the_option() {
        let m = map(&[("n", " 12 "), ("bad", "x"), ("b", "TRUE"), ("empty", "")]);
        let o = Options::new("c", &m);
        assert_eq!(o.number("n", 1u32, 1, 100).expect("n"), 12);
        assert_eq!(o.number("missing", 7u32, 1, 100).expect("default"), 7);
        let err = o.number("bad", 1u32, 1, 100).expect_err("bad").to_string();
        assert!(
            err.contains("\"bad\"") && err.contains("whole number"),
            "{err}"
        );
        let err = o.number("n", 1u32, 1, 10).expect_err("range").to_string();
        assert!(err.contains("from 1 to 10"), "{err}");
        assert!(o.boolean("b", false).expect("bool"));
        assert!(o.boolean("bad", false).is_err());
        assert_eq!(o.get("empty"), None);
        let err = o.required("empty").expect_err("required").to_string();
        assert!(err.contains("required option \"empty\""), "{err}");
    }
}
