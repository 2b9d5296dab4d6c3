//! Reading the Amazon CSV: the extractor's own parser ([`AmazonCsv`], which
//! reports physical line numbers and empty lines) against the `csv` crate
//! reading the same bytes into `ByteRecord`s (which reports neither). The
//! figure behind the comment on [`AmazonCsv`]: the reports it needs cost
//! nothing measurable next to what `csv` would give.
//!
//! `cargo bench -p extractor --bench source` — throughput in bytes/s.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use etl_core::review::LabelScheme;
use extractor::source::{AmazonCsv, Item, Source};

fn input() -> Vec<u8> {
    let mut out = Vec::new();
    etl_datagen::generate(20_000, 7, LabelScheme::Polarity, &mut out).expect("generate");
    out
}

fn read(c: &mut Criterion) {
    let data = input();
    let mut g = c.benchmark_group("read_amazon_csv");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("AmazonCsv (lines and empty lines)", |b| {
        b.iter(|| {
            let mut src = AmazonCsv::from_reader(data.as_slice(), "bench");
            let mut n = 0u64;
            while let Some(item) = src.next_item().expect("read") {
                if let Item::Record(r) = item {
                    n += r.body.len() as u64;
                }
            }
            black_box(n)
        })
    });
    g.bench_function("csv::ByteRecord + UTF-8 (no line reports)", |b| {
        b.iter(|| {
            let mut rdr = csv::ReaderBuilder::new()
                .has_headers(false)
                .flexible(true)
                .from_reader(data.as_slice());
            let mut rec = csv::ByteRecord::new();
            let mut n = 0u64;
            while rdr.read_byte_record(&mut rec).expect("read") {
                let fields: Vec<String> = rec
                    .iter()
                    .map(|f| String::from_utf8(f.to_vec()).expect("utf8"))
                    .collect();
                n += fields.last().map_or(0, |f| f.len() as u64);
            }
            black_box(n)
        })
    });
    g.finish();
}

criterion_group!(benches, read);
criterion_main!(benches);
