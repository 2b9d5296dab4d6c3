//! The sink's batch building (envelope decode, de-duplication, the binary
//! COPY data for the table it creates) for 2,000 records of generated
//! reviews, the sink's default `batch.size`.
//!
//! `cargo bench -p connect-manager --bench sink` — throughput in records/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl_core::{
    Field, Schema,
    envelope::Encoder,
    infer::{infer_columns, parse_value},
};

const RECORDS: usize = 2000;

fn records() -> Vec<(String, i64, Vec<u8>)> {
    let rows: Vec<Vec<String>> =
        etl_datagen::generate_rows(RECORDS as u64, 7, etl_core::review::LabelScheme::Polarity)
            .enumerate()
            .map(|(i, r)| {
                vec![
                    r.label,
                    r.title,
                    r.body,
                    (i % 2 == 0).to_string(),
                    r.language.to_string(),
                ]
            })
            .collect();
    let header = [
        "feedback_type",
        "title",
        "body",
        "is_streaming",
        "language_code",
    ];
    let types = infer_columns(header.len(), &rows);
    let schema = Schema {
        name: "review".into(),
        fields: header
            .iter()
            .zip(&types)
            .map(|(n, ty)| Field {
                name: n.to_string(),
                ty: *ty,
                optional: true,
            })
            .collect(),
    };
    let encoder = Encoder::new(&schema);
    rows.iter()
        .enumerate()
        .map(|(i, r)| {
            let values: Vec<_> = r
                .iter()
                .zip(&types)
                .map(|(s, ty)| parse_value(s, *ty).expect("fits"))
                .collect();
            (
                "bench__reviews__chunk_000000.csv".to_string(),
                i as i64 + 1,
                encoder.encode(&values),
            )
        })
        .collect()
}

fn build(c: &mut Criterion) {
    let records = records();
    let mut g = c.benchmark_group("sink_batch");
    g.throughput(Throughput::Elements(records.len() as u64));
    g.bench_function("decode + dedup + COPY data", |b| {
        b.iter(|| black_box(connect_manager::bench_api::build_copy_batch(&records).expect("batch")))
    });
    g.finish();
}

criterion_group!(benches, build);
criterion_main!(benches);
