//! The review data: Amazon-format input rows (`label,title,body`, no header), the
//! label schemes that turn a label into a `feedback_type`, and the output row of a
//! chunk file, in the column order of the design.

use std::{fmt, str::FromStr};

/// Columns of a chunk file, in order.
pub const CHUNK_COLUMNS: [&str; 6] = [
    "header",
    "body",
    "feedback_type",
    "source",
    "is_streaming",
    "language_code",
];

/// How a dataset encodes its labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LabelScheme {
    /// amazon_review_polarity: 1 negative, 2 positive.
    Polarity,
    /// amazon_review_full: 1–5 stars; >3 positive, 3 neutral, <3 negative.
    Stars,
}

impl FromStr for LabelScheme {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "polarity" => Ok(Self::Polarity),
            "stars" => Ok(Self::Stars),
            other => Err(format!(
                "unknown label scheme {other:?}: use \"polarity\" (1 negative, 2 positive) or \"stars\" (1-5)"
            )),
        }
    }
}

impl fmt::Display for LabelScheme {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Polarity => "polarity",
            Self::Stars => "stars",
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FeedbackType {
    Positive,
    Negative,
    Neutral,
}

impl FeedbackType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Positive => "positive",
            Self::Negative => "negative",
            Self::Neutral => "neutral",
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("label {label:?} is not part of the {scheme} scheme ({expected})")]
pub struct LabelError {
    pub label: String,
    pub scheme: LabelScheme,
    pub expected: &'static str,
}

/// Maps a raw label to its feedback type. A label outside the scheme is an error,
/// never a silent default: a wrong default would poison the training data.
/// fastText-style labels (`__label__2`) and surrounding spaces are accepted.
pub fn map_label(scheme: LabelScheme, raw: &str) -> Result<FeedbackType, LabelError> {
    let label = raw.trim();
    let label = label.strip_prefix("__label__").unwrap_or(label);
    let err = |expected| LabelError {
        label: raw.to_string(),
        scheme,
        expected,
    };
    match scheme {
        LabelScheme::Polarity => match label {
            "1" => Ok(FeedbackType::Negative),
            "2" => Ok(FeedbackType::Positive),
            _ => Err(err("1 or 2")),
        },
        LabelScheme::Stars => match label {
            "1" | "2" => Ok(FeedbackType::Negative),
            "3" => Ok(FeedbackType::Neutral),
            "4" | "5" => Ok(FeedbackType::Positive),
            _ => Err(err("1 to 5")),
        },
    }
}

/// One row of a chunk file, before it is written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OutputRow {
    pub header: String,
    pub body: String,
    pub feedback_type: FeedbackType,
    pub source: String,
    pub is_streaming: bool,
    pub language_code: String,
}

impl OutputRow {
    /// The fields in [`CHUNK_COLUMNS`] order, as written to the file. Booleans are
    /// written as `true`/`false`, the text type inference reads back as boolean.
    pub fn fields(&self) -> [&str; 6] {
        [
            &self.header,
            &self.body,
            self.feedback_type.as_str(),
            &self.source,
            if self.is_streaming { "true" } else { "false" },
            &self.language_code,
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use FeedbackType::*;

    #[test]
    fn polarity_scheme() {
        assert_eq!(map_label(LabelScheme::Polarity, "1"), Ok(Negative));
        assert_eq!(map_label(LabelScheme::Polarity, "2"), Ok(Positive));
        assert_eq!(map_label(LabelScheme::Polarity, "__label__2"), Ok(Positive));
        assert_eq!(map_label(LabelScheme::Polarity, " 1 "), Ok(Negative));
        for bad in ["0", "3", "", "positive", "1.0"] {
            let e = map_label(LabelScheme::Polarity, bad).expect_err(bad);
            assert!(e.to_string().contains("polarity"), "{e}");
        }
    }

    #[test]
    fn stars_scheme() {
        let got: Vec<_> = ["1", "2", "3", "4", "5"]
            .iter()
            .map(|l| map_label(LabelScheme::Stars, l).expect("valid"))
            .collect();
        assert_eq!(got, vec![Negative, Negative, Neutral, Positive, Positive]);
        assert!(map_label(LabelScheme::Stars, "6").is_err());
        assert!(map_label(LabelScheme::Stars, "0").is_err());
    }

    #[test]
    fn scheme_names_parse() {
        assert_eq!("stars".parse(), Ok(LabelScheme::Stars));
        assert_eq!("polarity".parse(), Ok(LabelScheme::Polarity));
        assert!("x".parse::<LabelScheme>().is_err());
    }

    #[test]
    fn output_fields_in_design_order() {
        let r = OutputRow {
            header: "t".into(),
            body: "b".into(),
            feedback_type: Neutral,
            source: "amazon".into(),
            is_streaming: false,
            language_code: "en".into(),
        };
        assert_eq!(r.fields(), ["t", "b", "neutral", "amazon", "false", "en"]);
    }
}
