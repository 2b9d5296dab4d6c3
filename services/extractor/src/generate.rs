//! Synthetic Amazon-style reviews (`extractor generate`, and the input of the tests and
//! benchmarks): the generator is `etl-datagen`, re-exported here under the names the
//! extractor has always had. It lives in its own crate so `etlctl demo` can write the
//! same input without linking the extractor.

pub use etl_datagen::{FOREIGN_SHARE, GeneratedRow, generate, generate_rows};
