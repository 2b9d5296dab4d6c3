//! Names for per-test databases and topics.

/// The longest prefix kept; with the suffix the name stays far below Postgres' 63-byte
/// identifier limit.
const MAX_PREFIX: usize = 40;

/// A fresh name `<prefix>_<12 hex digits>`, valid unquoted as a Postgres database or
/// table name and as a Kafka topic: only `[a-z0-9_]`, starting with a letter.
///
/// The prefix is lowercased and every other character becomes `_`, so a test name like
/// `sink::replays_are_idempotent` is a fine prefix. The suffix is random (not a counter)
/// so names stay unique across test processes sharing one persistent server.
pub fn unique_name(prefix: &str) -> String {
    let mut name: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '_') => c,
            _ => '_',
        })
        .take(MAX_PREFIX)
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_lowercase()) {
        name.insert(0, 't');
    }
    let random = uuid::Uuid::new_v4().simple().to_string();
    format!("{name}_{}", &random[..12])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_safe_and_unique() {
        let a = unique_name("Sink::Replays-Are idempotent");
        let b = unique_name("Sink::Replays-Are idempotent");
        assert_ne!(a, b);
        assert!(a.starts_with("sink__replays_are_idempotent_"), "{a}");
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        );
        assert!(unique_name("").starts_with("t_"));
        assert!(unique_name("9lives").starts_with("t9lives_"));
        assert!(unique_name(&"x".repeat(100)).len() <= 63);
    }
}
