//! How well the language filter does on generated reviews whose language is known.

use etl_core::review::LabelScheme;
use extractor::{
    generate::generate_rows,
    transform::{Transform, TransformOptions},
};

fn accuracy(detect_chars: usize, all_languages: bool) -> (f64, f64) {
    let mut options = TransformOptions {
        detect_chars,
        ..Default::default()
    };
    if all_languages {
        options.detect_among.clear();
    }
    let t = Transform::new(&options).expect("valid");
    let rows: Vec<_> = generate_rows(4000, 2024, LabelScheme::Polarity).collect();
    let mut right = 0;
    let mut filter_right = 0;
    for r in &rows {
        let detected = t.detect(&r.title, &r.body);
        if detected.map(|d| d.0) == Some(r.language) {
            right += 1;
        }
        let kept = detected.is_some_and(|(code, conf)| code == "en" && conf >= 0.5);
        if kept == (r.language == "en") {
            filter_right += 1;
        }
    }
    let n = rows.len() as f64;
    (right as f64 / n, filter_right as f64 / n)
}

#[test]
fn language_detection_is_accurate_on_a_multilingual_sample() {
    for (chars, all) in [
        (extractor::transform::DEFAULT_DETECT_CHARS, false),
        (300, false),
        (0, false),
        (120, false),
        (300, true),
        (0, true),
    ] {
        let (detect, filter) = accuracy(chars, all);
        println!(
            "language accuracy (first {} chars, among {}): detection {:.4}, keep/drop decision {:.4}",
            if chars == 0 {
                "all".to_string()
            } else {
                chars.to_string()
            },
            if all {
                "all languages"
            } else {
                "marketplace languages"
            },
            detect,
            filter
        );
        if chars != 120 {
            assert!(
                detect >= 0.95,
                "detection accuracy {detect} with {chars} chars"
            );
            assert!(
                filter >= 0.95,
                "filter accuracy {filter} with {chars} chars"
            );
        }
    }
}
