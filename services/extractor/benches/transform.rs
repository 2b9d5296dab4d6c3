//! Per-row transform cost with language detection on: the label mapping,
//! language detection on title + body (cut to `detect_chars`), and the output
//! row; language detection alone, ours against `whatlang::Detector` (the same
//! answers); plus encoding a chunk (TSV + digests). Input: generated reviews,
//! so the mix of languages and lengths is the demo's.
//!
//! `cargo bench -p extractor` — throughput is reported in rows/s ("elem/s").

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl_core::review::LabelScheme;
use extractor::{
    chunk,
    generate::generate_rows,
    language::Detector,
    source::RawRecord,
    transform::{self, MARKETPLACE_LANGUAGES, Outcome, Transform, TransformOptions, iso639_1},
};
use whatlang::Lang;

const ROWS: usize = 2000;

fn records() -> Vec<RawRecord> {
    generate_rows(ROWS as u64, 7, LabelScheme::Polarity)
        .enumerate()
        .map(|(i, r)| RawRecord {
            line: i as u64 + 1,
            label: r.label,
            title: r.title,
            body: r.body,
        })
        .collect()
}

fn bench_transform(c: &mut Criterion) {
    let records = records();
    let mut group = c.benchmark_group("transform");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for (name, detect_chars, stem, all_languages) in [
        (
            "default_200_chars",
            extractor::transform::DEFAULT_DETECT_CHARS,
            false,
            false,
        ),
        ("marketplace_langs_300_chars", 300, false, false),
        ("marketplace_langs_all_chars", 0, false, false),
        ("marketplace_langs_300_chars_stem", 300, true, false),
        ("all_langs_300_chars", 300, false, true),
    ] {
        let mut options = TransformOptions {
            detect_chars,
            stem,
            ..Default::default()
        };
        if all_languages {
            options.detect_among.clear();
        }
        let t = Transform::new(&options).expect("valid options");
        group.bench_function(name, |b| {
            b.iter(|| {
                let mut kept = 0;
                for r in &records {
                    let row =
                        transform::label(LabelScheme::Polarity, r.clone()).expect("valid label");
                    if let Outcome::Keep(out) = t.apply(row, "amazon") {
                        kept += 1;
                        black_box(out);
                    }
                }
                black_box(kept)
            })
        });
    }
    group.finish();

    // Detection alone, on the default detection text (title + body, 200 chars).
    let texts: Vec<String> = records
        .iter()
        .map(|r| {
            format!("{} {}", r.title, r.body)
                .chars()
                .take(extractor::transform::DEFAULT_DETECT_CHARS)
                .collect()
        })
        .collect();
    let marketplace: Vec<Lang> = Lang::all()
        .iter()
        .copied()
        .filter(|l| MARKETPLACE_LANGUAGES.contains(&iso639_1(*l)))
        .collect();
    let mut group = c.benchmark_group("detect");
    group.throughput(Throughput::Elements(ROWS as u64));
    group.sample_size(20);
    for (name, candidates) in [
        ("marketplace_langs", Some(marketplace)),
        ("all_langs", None),
    ] {
        let ours = Detector::new(candidates.clone());
        group.bench_function(format!("indexed_{name}"), |b| {
            b.iter(|| {
                for text in &texts {
                    black_box(ours.detect(text));
                }
            })
        });
        let whatlang = match candidates {
            Some(list) => whatlang::Detector::with_allowlist(list),
            None => whatlang::Detector::new(),
        };
        group.bench_function(format!("whatlang_{name}"), |b| {
            b.iter(|| {
                for text in &texts {
                    black_box(whatlang.detect(text));
                }
            })
        });
    }
    group.finish();

    let t = Transform::new(&TransformOptions::default()).expect("valid");
    let rows: Vec<_> = records
        .iter()
        .filter_map(|r| {
            let row = transform::label(LabelScheme::Polarity, r.clone()).ok()?;
            match t.apply(row, "amazon") {
                Outcome::Keep(out) => Some(out),
                Outcome::Drop(_) => None,
            }
        })
        .collect();
    let mut group = c.benchmark_group("chunk");
    group.throughput(Throughput::Elements(rows.len() as u64));
    group.bench_function("encode_tsv_and_digests", |b| {
        b.iter(|| black_box(chunk::encode("run-bench", "bench", 0, &rows)))
    });
    group.finish();
}

criterion_group!(benches, bench_transform);
criterion_main!(benches);
