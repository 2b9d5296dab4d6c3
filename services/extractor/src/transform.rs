//! The review transform: label → `feedback_type` (the label scheme), language
//! detection and filter, optional stemming, and the output row.
//!
//! Labels are mapped while reading ([`label`]), because an unknown label is
//! bad input that `--strict` must stop at in reading order; the rest runs on
//! the transform workers ([`Transform::apply`]).

use etl_core::review::{FeedbackType, LabelScheme, OutputRow, map_label};
use rust_stemmers::{Algorithm, Stemmer};
use whatlang::Lang;

use crate::{
    Error,
    language::Detector,
    source::{BadKind, BadRow, RawRecord},
};

/// A record whose label is known.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Labeled {
    pub line: u64,
    pub feedback_type: FeedbackType,
    pub title: String,
    pub body: String,
}

/// Maps the record's label with `scheme`; a label outside it is a bad row.
pub fn label(scheme: LabelScheme, record: RawRecord) -> Result<Labeled, BadRow> {
    match map_label(scheme, &record.label) {
        Ok(feedback_type) => Ok(Labeled {
            line: record.line,
            feedback_type,
            title: record.title,
            body: record.body,
        }),
        Err(e) => Err(BadRow {
            line: record.line,
            kind: BadKind::UnknownLabel,
            reason: e.to_string(),
        }),
    }
}

/// How rows are transformed; the same for every source of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct TransformOptions {
    /// ISO 639-1 codes of the languages to keep.
    pub languages: Vec<String>,
    /// Minimum detection confidence (0–1) for a row to be kept.
    pub language_threshold: f64,
    /// Lowercase, strip non-alphanumerics and Snowball-stem header and body.
    pub stem: bool,
    /// Detect the language on at most this many characters of title + body
    /// (0 = all). Detection cost grows with the text; a few hundred
    /// characters decide the language as well as the whole review does.
    pub detect_chars: usize,
    /// ISO 639-1 codes of the languages the detector chooses among (the kept
    /// languages are always added); empty = every language it knows. The
    /// default is the languages of Amazon's marketplaces
    /// ([`MARKETPLACE_LANGUAGES`]) rather than all 69: fewer near neighbours
    /// to mistake English for (keep/drop right 0.9998 against 0.9955 on the
    /// language test) and a little cheaper (all 69 cost ~25% more CPU per
    /// row). A review in a language outside the list is counted under the
    /// nearest candidate (or as undetected when its script has none).
    pub detect_among: Vec<String>,
}

/// Default of [`TransformOptions::detect_among`]: the languages of Amazon's
/// marketplaces.
pub const MARKETPLACE_LANGUAGES: &[&str] = &[
    "en", "de", "fr", "es", "it", "pt", "nl", "pl", "sv", "tr", "ja", "zh", "hi", "ar", "ru",
];

impl Default for TransformOptions {
    fn default() -> Self {
        Self {
            languages: vec!["en".into()],
            language_threshold: 0.5,
            stem: false,
            detect_chars: DEFAULT_DETECT_CHARS,
            detect_among: MARKETPLACE_LANGUAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Default of [`TransformOptions::detect_chars`]. Detection ranks the text's
/// trigrams by sorting them, so its cost grows with the text: 200 characters
/// keep the accuracy of 300 on the language test (tests/it/language.rs) for
/// ~20% less CPU (100k rows, release build, 2 cores: 0.69 against 0.82 CPU s,
/// 0.44 against 0.50 s).
pub const DEFAULT_DETECT_CHARS: usize = 200;

/// Why the language filter dropped a row.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// Detected with enough confidence, but not a kept language.
    Language(&'static str),
    /// A kept language, detected with less than the threshold's confidence.
    LowConfidence(&'static str),
    /// No language could be detected (no letters, unsupported script).
    Undetected,
}

impl DropReason {
    /// The key the summary counts this reason under: `de`, `en (low confidence)`, `undetected`.
    pub fn key(&self) -> String {
        match self {
            Self::Language(code) => (*code).to_string(),
            Self::LowConfidence(code) => format!("{code} (low confidence)"),
            Self::Undetected => "undetected".to_string(),
        }
    }
}

/// What became of one row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Keep(OutputRow),
    Drop(DropReason),
}

/// A validated transform, shared by the workers.
pub struct Transform {
    detector: Detector,
    languages: Vec<&'static str>,
    threshold: f64,
    stemmer: Option<Stemmer>,
    detect_chars: usize,
}

impl std::fmt::Debug for Transform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transform")
            .field("languages", &self.languages)
            .field("threshold", &self.threshold)
            .field("stem", &self.stemmer.is_some())
            .field("detect_chars", &self.detect_chars)
            .finish()
    }
}

impl Transform {
    pub fn new(options: &TransformOptions) -> Result<Self, Error> {
        if options.languages.is_empty() {
            return Err(Error::Config(
                "--languages is empty: name at least one ISO 639-1 code, e.g. en".into(),
            ));
        }
        let languages = options
            .languages
            .iter()
            .map(|code| lang_of(code, "--languages"))
            .collect::<Result<Vec<_>, _>>()?;
        let detector = if options.detect_among.is_empty() {
            Detector::new(None)
        } else {
            let mut among = options
                .detect_among
                .iter()
                .map(|code| lang_of(code, "--detect-among"))
                .collect::<Result<Vec<_>, _>>()?;
            among.extend(languages.iter().copied());
            among.sort_by_key(|l| iso639_1(*l));
            among.dedup();
            Detector::new(Some(among))
        };
        let languages = languages.into_iter().map(iso639_1).collect();
        if !(0.0..=1.0).contains(&options.language_threshold) {
            return Err(Error::Config(format!(
                "--language-threshold {} must be between 0 and 1",
                options.language_threshold
            )));
        }
        Ok(Self {
            detector,
            languages,
            threshold: options.language_threshold,
            stemmer: options.stem.then(|| Stemmer::create(Algorithm::English)),
            detect_chars: options.detect_chars,
        })
    }

    /// The language of a review (ISO 639-1) and the detector's confidence.
    pub fn detect(&self, title: &str, body: &str) -> Option<(&'static str, f64)> {
        let text = detection_text(title, body, self.detect_chars);
        self.detector
            .detect(&text)
            .map(|(lang, confidence)| (iso639_1(lang), confidence))
    }

    /// Filters and shapes one row of source `source`.
    pub fn apply(&self, row: Labeled, source: &str) -> Outcome {
        let (code, confidence) = match self.detect(&row.title, &row.body) {
            Some(d) => d,
            None => return Outcome::Drop(DropReason::Undetected),
        };
        if !self.languages.contains(&code) {
            return Outcome::Drop(DropReason::Language(code));
        }
        if confidence < self.threshold {
            return Outcome::Drop(DropReason::LowConfidence(code));
        }
        let (header, body) = match &self.stemmer {
            Some(stemmer) => (
                stem_text(stemmer, &row.title),
                stem_text(stemmer, &row.body),
            ),
            None => (row.title, row.body),
        };
        Outcome::Keep(OutputRow {
            header,
            body,
            feedback_type: row.feedback_type,
            source: source.to_string(),
            is_streaming: false,
            language_code: code.to_string(),
        })
    }
}

/// Title and body joined by a space, cut to `max_chars` characters (0 = all).
fn detection_text(title: &str, body: &str, max_chars: usize) -> String {
    if max_chars == 0 {
        return [title, body].join(" ");
    }
    let (title, taken) = first_chars(title, max_chars);
    let mut text =
        String::with_capacity(title.len() + 1 + body.len().min(max_chars.saturating_mul(4)));
    text.push_str(title);
    if taken < max_chars {
        text.push(' ');
        text.push_str(first_chars(body, max_chars - taken - 1).0);
    }
    text
}

/// The first `n` characters of `s` (all of it when shorter) and how many that is.
fn first_chars(s: &str, n: usize) -> (&str, usize) {
    if s.len() <= n {
        return (s, s.chars().count());
    }
    if s.as_bytes()[..n].is_ascii() {
        return (&s[..n], n);
    }
    match s.char_indices().nth(n) {
        Some((end, _)) => (&s[..end], n),
        None => (s, s.chars().count()),
    }
}

/// Lowercases, strips everything but letters, digits and whitespace, splits
/// on whitespace and stems each token; tokens are joined by one space.
pub fn stem_text(stemmer: &Stemmer, text: &str) -> String {
    let lower = text.to_lowercase();
    let mut out = String::with_capacity(lower.len());
    let mut token = String::new();
    for word in lower.split_whitespace() {
        token.clear();
        token.extend(word.chars().filter(|c| c.is_alphanumeric()));
        if token.is_empty() {
            continue;
        }
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&stemmer.stem(&token));
    }
    out
}

/// The detector's language for an ISO 639-1 code; `flag` names the option in errors.
fn lang_of(code: &str, flag: &str) -> Result<Lang, Error> {
    let code = code.trim().to_ascii_lowercase();
    Lang::all()
        .iter()
        .copied()
        .find(|l| iso639_1(*l) == code)
        .ok_or_else(|| {
            Error::Config(format!(
                "{flag}: {code:?} is not an ISO 639-1 code the detector knows (e.g. en, de, fr, es)"
            ))
        })
}

/// The ISO 639-1 code of a language the detector knows (whatlang speaks ISO 639-3).
pub fn iso639_1(lang: Lang) -> &'static str {
    match lang {
        Lang::Epo => "eo",
        Lang::Eng => "en",
        Lang::Rus => "ru",
        Lang::Cmn => "zh",
        Lang::Spa => "es",
        Lang::Por => "pt",
        Lang::Ita => "it",
        Lang::Ben => "bn",
        Lang::Fra => "fr",
        Lang::Deu => "de",
        Lang::Ukr => "uk",
        Lang::Kat => "ka",
        Lang::Ara => "ar",
        Lang::Hin => "hi",
        Lang::Jpn => "ja",
        Lang::Heb => "he",
        Lang::Yid => "yi",
        Lang::Pol => "pl",
        Lang::Amh => "am",
        Lang::Jav => "jv",
        Lang::Kor => "ko",
        Lang::Nob => "nb",
        Lang::Dan => "da",
        Lang::Swe => "sv",
        Lang::Fin => "fi",
        Lang::Tur => "tr",
        Lang::Nld => "nl",
        Lang::Hun => "hu",
        Lang::Ces => "cs",
        Lang::Ell => "el",
        Lang::Bul => "bg",
        Lang::Bel => "be",
        Lang::Mar => "mr",
        Lang::Kan => "kn",
        Lang::Ron => "ro",
        Lang::Slv => "sl",
        Lang::Hrv => "hr",
        Lang::Srp => "sr",
        Lang::Mkd => "mk",
        Lang::Lit => "lt",
        Lang::Lav => "lv",
        Lang::Est => "et",
        Lang::Tam => "ta",
        Lang::Vie => "vi",
        Lang::Urd => "ur",
        Lang::Tha => "th",
        Lang::Guj => "gu",
        Lang::Uzb => "uz",
        Lang::Pan => "pa",
        Lang::Aze => "az",
        Lang::Ind => "id",
        Lang::Tel => "te",
        Lang::Pes => "fa",
        Lang::Mal => "ml",
        Lang::Ori => "or",
        Lang::Mya => "my",
        Lang::Nep => "ne",
        Lang::Sin => "si",
        Lang::Khm => "km",
        Lang::Tuk => "tk",
        Lang::Aka => "ak",
        Lang::Zul => "zu",
        Lang::Sna => "sn",
        Lang::Afr => "af",
        Lang::Lat => "la",
        Lang::Slk => "sk",
        Lang::Cat => "ca",
        Lang::Tgl => "tl",
        Lang::Hye => "hy",
        Lang::Cym => "cy",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FeedbackType::*;

    fn raw(label: &str) -> RawRecord {
        RawRecord {
            line: 7,
            label: label.into(),
            title: "Great product".into(),
            body: "I bought this for my daughter and she uses it every day. Works well.".into(),
        }
    }

    fn labeled(title: &str, body: &str) -> Labeled {
        Labeled {
            line: 1,
            feedback_type: Positive,
            title: title.into(),
            body: body.into(),
        }
    }

    fn transform(opts: TransformOptions) -> Transform {
        Transform::new(&opts).expect("valid options")
    }

    #[test]
    fn polarity_labels() {
        let l = |s| label(LabelScheme::Polarity, raw(s)).map(|r| r.feedback_type);
        assert_eq!(l("1"), Ok(Negative));
        assert_eq!(l("2"), Ok(Positive));
        let bad = l("3").expect_err("3 is no polarity label");
        assert_eq!(bad.line, 7);
        assert_eq!(bad.kind, BadKind::UnknownLabel);
        assert!(bad.reason.contains("polarity"), "{}", bad.reason);
    }

    #[test]
    fn star_labels() {
        let l = |s| label(LabelScheme::Stars, raw(s)).map(|r| r.feedback_type);
        assert_eq!(l("1"), Ok(Negative));
        assert_eq!(l("2"), Ok(Negative));
        assert_eq!(l("3"), Ok(Neutral));
        assert_eq!(l("4"), Ok(Positive));
        assert_eq!(l("5"), Ok(Positive));
        for bad in ["0", "6", "", "five"] {
            assert_eq!(l(bad).expect_err(bad).kind, BadKind::UnknownLabel);
        }
    }

    #[test]
    fn keeps_english_and_fills_every_column() {
        let t = transform(TransformOptions::default());
        let out = t.apply(
            labeled(
                "Works as described",
                "The battery lasts all day and the screen is bright enough to read outside.",
            ),
            "amazon",
        );
        assert_eq!(
            out,
            Outcome::Keep(OutputRow {
                header: "Works as described".into(),
                body: "The battery lasts all day and the screen is bright enough to read outside."
                    .into(),
                feedback_type: Positive,
                source: "amazon".into(),
                is_streaming: false,
                language_code: "en".into(),
            })
        );
    }

    #[test]
    fn drops_other_languages_by_detected_code() {
        let t = transform(TransformOptions::default());
        let de = t.apply(
            labeled(
                "Sehr gutes Produkt",
                "Ich habe das Gerät letzte Woche gekauft und bin mit der Qualität sehr zufrieden.",
            ),
            "amazon",
        );
        assert_eq!(de, Outcome::Drop(DropReason::Language("de")));
        let fr = t.apply(
            labeled(
                "Très déçu",
                "Le produit est arrivé cassé et le service client ne répond pas à mes messages.",
            ),
            "amazon",
        );
        assert_eq!(fr, Outcome::Drop(DropReason::Language("fr")));
        assert_eq!(
            t.apply(labeled("1234", "!!! 42"), "amazon"),
            Outcome::Drop(DropReason::Undetected)
        );
    }

    #[test]
    fn keeps_several_languages_when_asked() {
        let t = transform(TransformOptions {
            languages: vec!["en".into(), "es".into()],
            ..Default::default()
        });
        let es = t.apply(
            labeled(
                "Muy buena compra",
                "El producto llegó a tiempo y funciona perfectamente, lo recomiendo a todos.",
            ),
            "amazon",
        );
        match es {
            Outcome::Keep(row) => assert_eq!(row.language_code, "es"),
            other => panic!("expected keep, got {other:?}"),
        }
    }

    #[test]
    fn threshold_drops_unsure_rows() {
        let t = transform(TransformOptions {
            language_threshold: 1.0,
            ..Default::default()
        });
        // Two words: detected as English, but not with full confidence.
        let out = t.apply(labeled("ok", "fine thing"), "amazon");
        assert!(
            matches!(
                out,
                Outcome::Drop(DropReason::LowConfidence(_))
                    | Outcome::Drop(DropReason::Language(_))
            ),
            "{out:?}"
        );
        let t = transform(TransformOptions {
            language_threshold: 0.0,
            ..Default::default()
        });
        assert!(matches!(
            t.apply(
                labeled(
                    "Good",
                    "This is a really nice and useful product for the kitchen."
                ),
                "amazon"
            ),
            Outcome::Keep(_)
        ));
    }

    #[test]
    fn stemming_lowercases_strips_and_stems() {
        let t = transform(TransformOptions {
            stem: true,
            ..Default::default()
        });
        let out = t.apply(
            labeled(
                "Running SHOES, amazing!!",
                "I've been running daily; these shoes are\tperfectly comfortable.",
            ),
            "amazon",
        );
        let Outcome::Keep(row) = out else {
            panic!("kept expected: {out:?}")
        };
        assert_eq!(row.header, "run shoe amaz");
        assert_eq!(
            row.body,
            "ive been run daili these shoe are perfect comfort"
        );
        assert_eq!(row.language_code, "en");
    }

    #[test]
    fn detection_text_is_cut_on_char_boundaries() {
        assert_eq!(detection_text("äöü", "body", 5), "äöü b");
        assert_eq!(detection_text("äöü", "body", 4), "äöü ");
        assert_eq!(detection_text("äöü", "body", 3), "äöü");
        assert_eq!(detection_text("äöü", "body", 2), "äö");
        assert_eq!(detection_text("", "bödy", 3), " bö");
        assert_eq!(detection_text("t", "b", 0), "t b");
        assert_eq!(detection_text("t", "b", 3), "t b");
        assert_eq!(detection_text("t", "b", 9), "t b");
    }

    #[test]
    fn unknown_language_codes_are_refused() {
        for bad in ["xx", "eng", ""] {
            let e = Transform::new(&TransformOptions {
                languages: vec![bad.into()],
                ..Default::default()
            })
            .expect_err(bad);
            assert!(e.to_string().contains("--languages"), "{e}");
        }
        assert!(
            Transform::new(&TransformOptions {
                language_threshold: 1.5,
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn candidates_limit_what_is_detected_and_kept_languages_are_candidates() {
        let catalan = labeled(
            "Molt bon producte",
            "El vaig comprar per a la meva filla i l'utilitza cada dia, estem molt contents.",
        );
        let all = transform(TransformOptions {
            detect_among: vec![],
            languages: vec!["ca".into()],
            ..Default::default()
        });
        assert!(matches!(all.apply(catalan.clone(), "a"), Outcome::Keep(_)));
        // Not a candidate by default, but kept languages always are.
        let kept = transform(TransformOptions {
            languages: vec!["ca".into()],
            ..Default::default()
        });
        assert!(matches!(kept.apply(catalan.clone(), "a"), Outcome::Keep(_)));
        let default = transform(TransformOptions::default());
        match default.apply(catalan, "a") {
            Outcome::Drop(DropReason::Language(code)) => assert_ne!(code, "ca"),
            other => panic!("{other:?}"),
        }
        assert!(
            Transform::new(&TransformOptions {
                detect_among: vec!["klingon".into()],
                ..Default::default()
            })
            .is_err()
        );
    }

    #[test]
    fn every_detectable_language_has_a_distinct_code() {
        let mut codes: Vec<_> = Lang::all().iter().map(|l| iso639_1(*l)).collect();
        let n = codes.len();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), n);
    }
}
