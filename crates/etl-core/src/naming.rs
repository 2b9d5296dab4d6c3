//! File names. Chunk files are `{run_id}__{input_stem}__chunk_{n:06}.csv`: the run id
//! makes them unique across runs, the stem says where the rows came from, and the
//! zero-padded number sorts in file order.

/// The name of chunk `n` (0-based) of `input_stem` in run `run_id`.
pub fn chunk_file_name(run_id: &str, input_stem: &str, n: u64) -> String {
    format!("{run_id}__{}__chunk_{n:06}.csv", sanitize(input_stem))
}

/// The parts of a chunk file name: (run id, input stem, chunk number).
pub fn parse_chunk_file_name(name: &str) -> Option<(&str, &str, u64)> {
    let base = name.strip_suffix(".csv")?;
    let (rest, n) = base.rsplit_once("__chunk_")?;
    let (run, stem) = rest.split_once("__")?;
    Some((run, stem, n.parse().ok()?))
}

/// Keeps names portable across file systems and SFTP servers: anything but
/// ASCII letters, digits, `-`, `_` and `.` becomes `_`; `__` (our separator) too.
pub fn sanitize(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    while out.contains("__") {
        out = out.replace("__", "_");
    }
    if out.is_empty() {
        "input".to_string()
    } else {
        out
    }
}

/// A name (a connector's, a worker's) as one visible path segment, for a
/// directory or file named after it: anything but ASCII letters, digits, `-`,
/// `_` and `.` becomes `_`, and so does a leading `.` (a hidden name would be
/// skipped as an upload in progress); empty becomes `_`.
pub fn path_segment(name: &str) -> String {
    let safe: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    match safe.strip_prefix('.') {
        Some(rest) => format!("_{rest}"),
        None if safe.is_empty() => "_".to_string(),
        None => safe,
    }
}

/// Hidden names (leading '.') are in-progress uploads; nobody processes them.
pub fn is_hidden(name: &str) -> bool {
    name.starts_with('.')
}

/// The temporary name an upload is written under before it is renamed to `name`.
pub fn temp_name(name: &str) -> String {
    format!(".{name}.part")
}

/// The name of the reason file written beside a rejected file in `error/`.
pub fn error_reason_name(name: &str) -> String {
    format!("{name}.error.txt")
}

/// The name of a file without directory.
pub fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The stem of an input path: its base name without the last extension.
pub fn input_stem(path: &str) -> String {
    let base = base_name(path);
    let stem = match base.rsplit_once('.') {
        Some((s, _)) if !s.is_empty() => s,
        _ => base,
    };
    sanitize(stem)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_names_round_trip() {
        let n = chunk_file_name("run-1", "amazon reviews", 7);
        assert_eq!(n, "run-1__amazon_reviews__chunk_000007.csv");
        assert_eq!(
            parse_chunk_file_name(&n),
            Some(("run-1", "amazon_reviews", 7))
        );
        assert_eq!(parse_chunk_file_name("other.csv"), None);
    }

    #[test]
    fn stems_cannot_forge_separators() {
        assert_eq!(sanitize("a__b"), "a_b");
        assert_eq!(sanitize(""), "input");
        assert_eq!(input_stem("/data/train.ft.csv"), "train.ft");
        assert_eq!(input_stem("noext"), "noext");
        let n = chunk_file_name("r", "x__chunk_000001", 2);
        assert_eq!(parse_chunk_file_name(&n), Some(("r", "x_chunk_000001", 2)));
    }

    #[test]
    fn hidden_and_temp_names() {
        assert!(is_hidden(&temp_name("a.csv")));
        assert!(!is_hidden("a.csv"));
        assert_eq!(error_reason_name("a.csv"), "a.csv.error.txt");
        assert_eq!(base_name("input/a.csv"), "a.csv");
    }
}
