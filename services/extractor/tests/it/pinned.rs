//! The transform's output, pinned: digests of every row's detected language
//! and confidence, and of every chunk file byte, on generated reviews and on a
//! mixed-script corpus, under several option sets. The digests were computed
//! with the plain `whatlang::Detector` before detection got its own index
//! (`extractor::language`), so a change to which rows are kept, their
//! `language_code` or any output byte fails here. A change that is meant to
//! alter the output updates the digests and says why.

use std::{path::Path, sync::Arc};

use etl_core::review::LabelScheme;
use etl_service::Shutdown;
use extractor::{
    Progress, RunOptions, SourceSpec,
    generate::generate_rows,
    transform::{Transform, TransformOptions},
};
use xxhash_rust::xxh3::Xxh3;

use crate::helpers::list;

/// Words of many languages and scripts, with the characters CSV and TSV
/// quoting are about, and a few that detection treats as stop characters.
const WORDS: &[&str] = &[
    // Latin script, several languages, diacritics.
    "the",
    "and",
    "product",
    "really",
    "works",
    "great",
    "would",
    "not",
    "buy",
    "again",
    "der",
    "die",
    "und",
    "nicht",
    "sehr",
    "gut",
    "Qualität",
    "größer",
    "Straße",
    "für",
    "le",
    "la",
    "est",
    "très",
    "déçu",
    "où",
    "garçon",
    "œuvre",
    "été",
    "naïf",
    "el",
    "producto",
    "llegó",
    "niño",
    "señor",
    "¿qué",
    "¡bien",
    "mañana",
    "está",
    "il",
    "prodotto",
    "perché",
    "così",
    "città",
    "è",
    "o",
    "não",
    "coração",
    "ação",
    "het",
    "een",
    "niet",
    "goed",
    "ĳs",
    "i",
    "nie",
    "jest",
    "źle",
    "łódź",
    "żółw",
    "och",
    "är",
    "inte",
    "bra",
    "çok",
    "güzel",
    "ışık",
    "değil",
    "şey",
    "ğ",
    "és",
    "nagyon",
    "jó",
    "őszintén",
    "ű",
    "že",
    "není",
    "příliš",
    "ďábel",
    "ů",
    "Tiếng",
    "Việt",
    "người",
    "đẹp",
    "ở",
    "ā",
    "ē",
    "ī",
    "ū",
    "ļoti",
    "ŝi",
    "ĉu",
    "ŵ",
    "ŷ",
    "ẃ",
    "ẅ",
    "ə",
    "ʻ",
    "ɔ",
    "ɛ",
    "ñ",
    "ß",
    "ø",
    "å",
    "æ",
    "ÿ",
    "ABC",
    "Éclair",
    "ÜBER",
    "İstanbul",
    "ÇA",
    "ŁÓDŹ",
    "ΣΟΦΙΑ",
    // Other scripts.
    "отличный",
    "товар",
    "очень",
    "доволен",
    "не",
    "рекомендую",
    "її",
    "ў",
    "ђ",
    "ѓ",
    "καλό",
    "προϊόν",
    "πολύ",
    "ωραίο",
    "τέλος",
    "σας",
    "很好",
    "质量",
    "不错",
    "推荐",
    "これは",
    "とても",
    "良い",
    "です",
    "カメラ",
    "ラーメン",
    "جيد",
    "جدا",
    "منتج",
    "خیلی",
    "خوب",
    "بہت",
    "עברית",
    "טוב",
    "מאוד",
    "גוט",
    "बहुत",
    "अच्छा",
    "उत्पाद",
    "आहे",
    "छ",
    "ดีมาก",
    "좋아요",
    "제품",
    "ভালো",
    "ತುಂಬಾ",
    "நல்ல",
    "ચાલો",
    "ਵਧੀਆ",
    "మంచి",
    "നല്ല",
    "ଭଲ",
    "ကောင်း",
    "හොඳ",
    "ល្អ",
    "ጥሩ",
    "კარგი",
    "լավ",
    // Digits, punctuation, symbols, emoji, quoting.
    "42",
    "3.5",
    "10/10",
    "!!!",
    "...",
    "-",
    "—",
    "@",
    "#1",
    "$20",
    "(ok)",
    "[x]",
    "{y}",
    "~",
    "`",
    "^",
    "_",
    "|",
    "\\",
    "😀",
    "👍🏽",
    "❤️",
    "★★★★★",
    "™",
    "©",
    "½",
    "\u{00a0}",
    "\u{200b}",
    "\u{feff}",
    "\"quoted\"",
    "it's",
    "a,b",
    "tab\there",
    "line\nbreak",
    "cr\rlf",
];

/// A small deterministic generator (xorshift64*), so the corpus needs no crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn words(&mut self, max: usize) -> String {
        // Mostly one script per text, sometimes mixed, as reviews are.
        let n = self.below(max + 1);
        let region = self.below(WORDS.len());
        let mut out = String::new();
        for _ in 0..n {
            let i = if self.below(4) == 0 {
                self.below(WORDS.len())
            } else {
                (region + self.below(24)) % WORDS.len()
            };
            if !out.is_empty() {
                out.push(if self.below(10) == 0 { '\t' } else { ' ' });
            }
            out.push_str(WORDS[i]);
        }
        out
    }
}

/// `(label, title, body)`: generated reviews (polarity labels), then the
/// mixed-script corpus (labels 1 and 2).
fn corpus() -> Vec<(String, String, String)> {
    let mut rows: Vec<_> = generate_rows(3000, 42, LabelScheme::Polarity)
        .map(|r| (r.label, r.title, r.body))
        .collect();
    let mut rng = Rng(0x5eed_1234_abcd_ef01);
    for i in 0..1500 {
        let title = rng.words(6);
        let body = match i % 5 {
            0 => rng.words(3),
            1 | 2 => rng.words(40),
            _ => rng.words(160),
        };
        rows.push((["1", "2"][i % 2].to_string(), title, body));
    }
    rows
}

fn write_csv(path: &Path, rows: &[(String, String, String)]) {
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_path(path)
        .expect("create input");
    for (label, title, body) in rows {
        out.write_record([label, title, body]).expect("write row");
    }
    out.flush().expect("flush");
}

/// The option sets the digests are pinned for: the default, stemming, whole
/// texts among more kept languages, every candidate language with a high
/// threshold, and short detection texts.
fn option_sets() -> Vec<(&'static str, TransformOptions)> {
    let langs = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    vec![
        ("default", TransformOptions::default()),
        (
            "stem",
            TransformOptions {
                stem: true,
                ..Default::default()
            },
        ),
        (
            "all_chars_six_languages",
            TransformOptions {
                detect_chars: 0,
                languages: langs(&["en", "de", "fr", "es", "ru", "ja"]),
                ..Default::default()
            },
        ),
        (
            "among_all_threshold_0.9",
            TransformOptions {
                detect_among: vec![],
                language_threshold: 0.9,
                languages: langs(&["en", "tl", "ca"]),
                ..Default::default()
            },
        ),
        (
            "few_candidates_40_chars",
            TransformOptions {
                detect_chars: 40,
                detect_among: langs(&["nl", "sv"]),
                languages: langs(&["en", "de"]),
                language_threshold: 0.0,
                ..Default::default()
            },
        ),
    ]
}

/// Every row's detection (code and confidence bits) under each option set.
#[test]
fn detected_languages_and_confidences_are_pinned() {
    let rows = corpus();
    let mut got = Vec::new();
    for (name, options) in option_sets() {
        let t = Transform::new(&options).expect("valid options");
        let mut h = Xxh3::new();
        for (_, title, body) in &rows {
            match t.detect(title, body) {
                Some((code, confidence)) => {
                    h.update(code.as_bytes());
                    h.update(&confidence.to_bits().to_le_bytes());
                }
                None => h.update(b"-"),
            }
        }
        got.push((name, h.digest()));
    }
    let want = [
        ("default", 0x52efdcabc7258249),
        ("stem", 0x52efdcabc7258249),
        ("all_chars_six_languages", 0x50f9ce1bb922e10d),
        ("among_all_threshold_0.9", 0x29bb7d3c536f8673),
        ("few_candidates_40_chars", 0x0bac38621e7ce14a),
    ];
    assert_eq!(got, want.to_vec());
}

/// Every chunk file (name and bytes) of a local run under each option set.
#[tokio::test]
async fn chunk_files_are_pinned() {
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("pinned.csv");
    write_csv(&input, &corpus());
    let mut got = Vec::new();
    for (name, transform) in option_sets() {
        let out = dir.path().join(name);
        let mut opts = RunOptions::new(vec![SourceSpec {
            name: "amazon".into(),
            path: input.clone(),
            labels: LabelScheme::Polarity,
        }]);
        opts.run_id = Some("run-pinned".into());
        opts.chunk_size = 500;
        opts.workers = 2;
        opts.transform = transform;
        opts.output_dir = Some(out.clone());
        let summary = extractor::extract(opts, Arc::new(Progress::new()), Shutdown::new())
            .await
            .expect("run");
        let mut h = Xxh3::new();
        for file in list(&out) {
            h.update(file.as_bytes());
            h.update(&std::fs::read(out.join(&file)).expect("read chunk"));
        }
        got.push((name, summary.rows_kept, h.digest()));
    }
    let want = [
        ("default", 2932, 0x6090fad5d376852b),
        ("stem", 2932, 0x70e8e219bd2ae90f),
        ("all_chars_six_languages", 3562, 0xd9948fdd488dc338),
        ("among_all_threshold_0.9", 2898, 0x4c396515e23ccc9c),
        ("few_candidates_40_chars", 3565, 0xb8e41ba84ecf1b37),
    ];
    assert_eq!(got, want.to_vec());
}
