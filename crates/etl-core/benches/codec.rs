//! The source connector's hot path on one chunk file, and the codec both
//! connectors share: parsing a 1,000-row chunk, inferring its column types,
//! and encoding / decoding its rows as Kafka Connect envelopes.
//!
//! `cargo bench -p etl-core --bench codec` — throughput in rows/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl_core::{
    Field, Schema, Value,
    envelope::{self, Encoder},
    infer::{infer_columns, parse_value},
    table,
};

const ROWS: usize = 1000;

/// A chunk shaped like the extractor's: text columns of review length, a
/// boolean, an integer, a double and a language code, as TSV with a header.
/// (Made here: etl-datagen depends on etl-core, so a bench of etl-core
/// cannot use it.)
fn chunk() -> Vec<u8> {
    let words = [
        "great",
        "product",
        "would",
        "not",
        "buy",
        "again",
        "works",
        "as",
        "described",
        "«très» bien",
        "ça",
    ];
    let mut w = table::TableWriter::tsv(Vec::new());
    w.write_row([
        "feedback_type",
        "title",
        "body",
        "is_streaming",
        "n",
        "score",
        "language_code",
    ])
    .expect("write");
    for i in 0..ROWS {
        let text = |len: usize| -> String {
            (0..len)
                .map(|k| words[(i * 7 + k * 3) % words.len()])
                .collect::<Vec<_>>()
                .join(" ")
        };
        let row = [
            if i % 3 == 0 {
                "negative".to_string()
            } else {
                "positive".to_string()
            },
            text(5),
            text(60 + i % 40),
            (i % 2 == 0).to_string(),
            (i * 37).to_string(),
            format!("{}.{}", i % 5, i % 9 + 1),
            "en".to_string(),
        ];
        w.write_row(&row).expect("write");
    }
    w.into_inner().expect("flush")
}

fn codec(c: &mut Criterion) {
    let data = chunk();
    let mut g = c.benchmark_group("chunk");
    g.throughput(Throughput::Elements(ROWS as u64));
    g.bench_function("parse + infer (source)", |b| {
        b.iter(|| {
            let t = table::parse(&data, table::detect_delimiter(&data)).expect("parse");
            black_box(infer_columns(t.header.len(), &t.rows))
        })
    });
    let t = table::parse(&data, b'\t').expect("parse");
    let types = infer_columns(t.header.len(), &t.rows);
    let schema = Schema {
        name: "review".into(),
        fields: t
            .header
            .iter()
            .zip(&types)
            .map(|(n, ty)| Field {
                name: n.clone(),
                ty: *ty,
                optional: true,
            })
            .collect(),
    };
    let rows: Vec<Vec<Value>> = t
        .rows
        .iter()
        .map(|r| {
            r.iter()
                .zip(&types)
                .map(|(s, ty)| parse_value(s, *ty).expect("fits"))
                .collect()
        })
        .collect();
    let encoder = Encoder::new(&schema);
    g.bench_function("envelope encode", |b| {
        b.iter(|| {
            for r in &rows {
                black_box(encoder.encode(r));
            }
        })
    });
    let encoded: Vec<Vec<u8>> = rows.iter().map(|r| encoder.encode(r)).collect();
    g.bench_function("envelope decode", |b| {
        b.iter(|| {
            for e in &encoded {
                black_box(envelope::decode(e).expect("decodes"));
            }
        })
    });
    g.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
