//! The demo's input: N synthetic Amazon-format reviews (`label,title,body`, no
//! header) from `etl-datagen`, the generator behind `extractor generate`, so the demo
//! exercises exactly the input format the extractor reads. Written to a temporary name and renamed, so a
//! half-written file is never taken for input.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use etl_core::review::LabelScheme;

/// `<input dir>/demo-<rows>-<seed>.csv` (`-stars` added for the stars scheme, whose
/// rows differ).
pub fn input_path(input_dir: &Path, rows: u64, seed: u64, labels: LabelScheme) -> PathBuf {
    match labels {
        LabelScheme::Polarity => input_dir.join(format!("demo-{rows}-{seed}.csv")),
        LabelScheme::Stars => input_dir.join(format!("demo-{rows}-{seed}-stars.csv")),
    }
}

/// Generates `rows` rows with `seed` into `path`.
pub fn generate_input(
    path: &Path,
    rows: u64,
    seed: u64,
    labels: LabelScheme,
) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let tmp = path.with_extension("csv.tmp");
    let file = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut writer = BufWriter::new(file);
    write_rows(rows, seed, labels, &mut writer)
        .with_context(|| format!("cannot generate {}", path.display()))?;
    writer
        .into_inner()
        .map_err(|e| e.into_error())
        .and_then(|file| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot rename to {}", path.display()))?;
    Ok(())
}

/// The one call into the generator.
fn write_rows(
    rows: u64,
    seed: u64,
    labels: LabelScheme,
    writer: &mut impl Write,
) -> anyhow::Result<()> {
    etl_datagen::generate(rows, seed, labels, writer)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generates_the_same_rows_for_the_same_seed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let path = input_path(tmp.path(), 25, 7, LabelScheme::Polarity);
        assert!(path.ends_with("demo-25-7.csv"));
        generate_input(&path, 25, 7, LabelScheme::Polarity).expect("generate");
        let first = std::fs::read(&path).expect("read");
        let records = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(first.as_slice())
            .records()
            .count();
        assert_eq!(records, 25);
        generate_input(&path, 25, 7, LabelScheme::Polarity).expect("again");
        assert_eq!(std::fs::read(&path).expect("read"), first);
        assert!(!path.with_extension("csv.tmp").exists());
    }
}
