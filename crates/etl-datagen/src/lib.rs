//! Synthetic Amazon-style reviews for demos, tests and benchmarks:
//! deterministic per seed (ChaCha8), mostly English reviews made from
//! templates, about 7% German, French and Spanish reviews made of real
//! sentences (so a language detector recognises them), and the awkward
//! characters real dumps hold — commas, quotes, tabs and newlines — inside
//! some fields. Output is the Amazon CSV: `label,title,body`, no header,
//! fields quoted where needed.
//!
//! # Why a crate of its own
//! Two binaries write this data: `extractor generate` (and the extractor's tests and
//! benchmarks), and `etlctl demo`, which makes the demo's input. etlctl must not link the
//! extractor library (its SFTP client, gRPC server and language detector) for 300 lines of
//! sentence tables, and `etl-core`, which every service links, is the contract layer
//! (record model, chunk format, digests) and has no use for a random number generator.
//! So the generator sits beside both, depending on `etl-core` only for [`LabelScheme`].
//!
//! The output is pinned: the same rows, seed and scheme give the same bytes, release
//! after release (demo runs are identified by their input's content, and benchmarks
//! compare like with like). `tests::output_is_pinned` holds the digests.
//!
//! # Layout
//! - [`generate`]: the CSV bytes; [`generate_rows`]: the same rows as values, with
//!   their language ([`GeneratedRow`]).
//! - the private sentence tables: English templates and products, and real German,
//!   French and Spanish sentences.

use std::io::Write;

use etl_core::review::LabelScheme;
use rand::{Rng, SeedableRng, seq::IndexedRandom};
use rand_chacha::ChaCha8Rng;

/// One generated review, with the language it was written in (ISO 639-1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GeneratedRow {
    pub label: String,
    pub title: String,
    pub body: String,
    pub language: &'static str,
}

/// Share of rows written in German, French or Spanish.
pub const FOREIGN_SHARE: f64 = 0.07;

/// Writes `rows` reviews for `seed` as Amazon CSV to `writer`.
pub fn generate<W: Write>(
    rows: u64,
    seed: u64,
    labels: LabelScheme,
    writer: W,
) -> std::io::Result<()> {
    let mut out = csv::WriterBuilder::new()
        .has_headers(false)
        .quote_style(csv::QuoteStyle::Necessary)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_writer(writer);
    for row in generate_rows(rows, seed, labels) {
        out.write_record([&row.label, &row.title, &row.body])
            .map_err(std::io::Error::other)?;
    }
    out.flush()
}

/// The reviews [`generate`] writes, with their languages.
pub fn generate_rows(
    rows: u64,
    seed: u64,
    labels: LabelScheme,
) -> impl Iterator<Item = GeneratedRow> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..rows).map(move |_| one_row(&mut rng, labels))
}

#[derive(Clone, Copy, PartialEq)]
enum Mood {
    Positive,
    Negative,
    Neutral,
}

fn one_row(rng: &mut ChaCha8Rng, labels: LabelScheme) -> GeneratedRow {
    let (label, mood) = match labels {
        LabelScheme::Polarity => {
            if rng.random_bool(0.5) {
                ("2", Mood::Positive)
            } else {
                ("1", Mood::Negative)
            }
        }
        LabelScheme::Stars => {
            let stars = rng.random_range(1..=5u8);
            let mood = match stars {
                4 | 5 => Mood::Positive,
                3 => Mood::Neutral,
                _ => Mood::Negative,
            };
            (["1", "2", "3", "4", "5"][usize::from(stars - 1)], mood)
        }
    };
    let (title, mut body, language) = if rng.random_bool(FOREIGN_SHARE) {
        foreign(rng, mood)
    } else {
        english(rng, mood)
    };
    // The characters that break naive CSV/TSV handling, in about one row in ten.
    let title = match rng.random_range(0..40) {
        0 => format!("\"{title}\""),
        1 => format!("{title}, really"),
        _ => title,
    };
    match rng.random_range(0..30) {
        0 => body = body.replacen(". ", ".\n", 1),
        1 => body = body.replacen(". ", ".\t", 1),
        2 => body = format!("{body} My friend called it \"the best buy of the year\"."),
        3 => body = body.replacen(". ", ".\r\n\r\n", 1),
        _ => {}
    }
    GeneratedRow {
        label: label.to_string(),
        title,
        body,
        language,
    }
}

fn pick<'a>(rng: &mut ChaCha8Rng, items: &[&'a str]) -> &'a str {
    items.choose(rng).copied().unwrap_or_default()
}

fn english(rng: &mut ChaCha8Rng, mood: Mood) -> (String, String, &'static str) {
    let product = pick(rng, PRODUCTS);
    let (titles, sentences) = match mood {
        Mood::Positive => (EN_TITLES_POS, EN_POS),
        Mood::Negative => (EN_TITLES_NEG, EN_NEG),
        Mood::Neutral => (EN_TITLES_NEU, EN_NEU),
    };
    let title = pick(rng, titles).replace("{p}", product);
    let n = rng.random_range(2..=5);
    let mut body = Vec::with_capacity(n + 1);
    for i in 0..n {
        let pool = if i > 0 && rng.random_bool(0.3) {
            EN_FILLER
        } else {
            sentences
        };
        body.push(pick(rng, pool).replace("{p}", product));
    }
    (capitalize(&title), body.join(" "), "en")
}

fn foreign(rng: &mut ChaCha8Rng, mood: Mood) -> (String, String, &'static str) {
    let (code, titles, pos, neg) = match rng.random_range(0..3) {
        0 => ("de", DE_TITLES, DE_POS, DE_NEG),
        1 => ("fr", FR_TITLES, FR_POS, FR_NEG),
        _ => ("es", ES_TITLES, ES_POS, ES_NEG),
    };
    let sentences = if mood == Mood::Positive { pos } else { neg };
    let n = rng.random_range(2..=4);
    let body: Vec<&str> = (0..n).map(|_| pick(rng, sentences)).collect();
    (pick(rng, titles).to_string(), body.join(" "), code)
}

fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

const PRODUCTS: &[&str] = &[
    "blender",
    "phone case",
    "novel",
    "pair of headphones",
    "coffee maker",
    "backpack",
    "vacuum cleaner",
    "board game",
    "desk lamp",
    "pair of running shoes",
    "water bottle",
    "keyboard",
    "tent",
    "cookbook",
    "toothbrush",
    "kettle",
    "charger",
    "jacket",
    "mattress",
    "camera",
    "printer",
    "frying pan",
    "yoga mat",
    "watch",
    "album",
];

const EN_TITLES_POS: &[&str] = &[
    "great {p}",
    "exactly what I needed",
    "love this {p}",
    "works perfectly",
    "best purchase this year",
    "highly recommended",
    "five stars for this {p}",
    "excellent quality for the price",
    "my kids love it",
    "better than expected",
];
const EN_TITLES_NEG: &[&str] = &[
    "broke after a week",
    "do not buy this {p}",
    "very disappointed",
    "waste of money",
    "cheap and flimsy",
    "not as described",
    "returned it the next day",
    "the worst {p} I have owned",
    "stopped working",
    "poor customer service",
];
const EN_TITLES_NEU: &[&str] = &[
    "it is okay",
    "average {p}",
    "does the job",
    "fine for the price",
    "mixed feelings",
    "not bad, not great",
];

const EN_POS: &[&str] = &[
    "I bought this {p} for my daughter and she uses it every single day.",
    "The quality is much better than I expected for the price.",
    "It arrived quickly, was well packaged and worked right out of the box.",
    "After three months of daily use the {p} still looks and works like new.",
    "Setting it up took less than five minutes and the instructions were clear.",
    "This is the best {p} I have ever owned and I would buy it again.",
    "My husband was skeptical at first, but now he will not stop talking about it.",
    "The design is simple, sturdy and it looks great in our kitchen.",
    "Customer service answered my question within an hour and was very friendly.",
    "It does exactly what the description says, nothing more and nothing less.",
    "I have recommended this {p} to all of my friends and family.",
    "For this price you simply cannot find anything better on the market.",
    "The battery lasts for days and charging it is fast.",
    "It is light enough to carry around all day without noticing it.",
];
const EN_NEG: &[&str] = &[
    "The {p} stopped working after only two weeks of normal use.",
    "It feels cheap and the plastic cracked the first time I dropped it.",
    "The description promised much more than this product actually delivers.",
    "I contacted the seller twice and never received an answer.",
    "It arrived with a broken part and the box had clearly been opened before.",
    "The instructions were useless and the parts did not fit together.",
    "Save your money and buy something else, this {p} is not worth it.",
    "After a few days it started making a loud and annoying noise.",
    "The color looks nothing like the pictures on the website.",
    "I returned it and I am still waiting for my refund.",
    "It is much smaller than I expected and far too heavy to carry.",
    "Within a month the {p} was falling apart at the seams.",
    "The smell of chemicals was so strong that we had to leave it outside.",
];
const EN_NEU: &[&str] = &[
    "The {p} works, but there is nothing special about it.",
    "It is fine for occasional use, although I expected a little more.",
    "Some features are useful and others feel like an afterthought.",
    "Delivery took longer than promised, but the product itself is decent.",
    "For the price it is acceptable, just do not expect miracles.",
];
const EN_FILLER: &[&str] = &[
    "I ordered it on a Monday and it was at my door by Thursday.",
    "We have a small apartment, so size was important for us.",
    "I use it mostly on weekends when the whole family is at home.",
    "My previous {p} lasted about five years before it gave up.",
    "I read a lot of reviews before deciding on this one.",
];

const DE_TITLES: &[&str] = &[
    "Sehr gutes Produkt",
    "Leider enttäuscht",
    "Klare Kaufempfehlung",
    "Nicht zu empfehlen",
    "Funktioniert einwandfrei",
    "Schlechte Qualität",
];
const DE_POS: &[&str] = &[
    "Ich habe das Gerät letzte Woche gekauft und bin mit der Qualität sehr zufrieden.",
    "Die Lieferung war schnell und alles war ordentlich verpackt.",
    "Meine ganze Familie benutzt es jeden Tag und wir sind begeistert.",
    "Für diesen Preis bekommt man wirklich ein hervorragendes Produkt.",
    "Die Bedienung ist einfach und die Anleitung ist gut verständlich.",
];
const DE_NEG: &[&str] = &[
    "Nach zwei Wochen funktionierte das Gerät leider nicht mehr.",
    "Die Verarbeitung ist billig und das Material fühlt sich sehr schlecht an.",
    "Der Kundenservice hat auf meine Nachrichten überhaupt nicht reagiert.",
    "Ich habe es sofort zurückgeschickt und warte immer noch auf mein Geld.",
    "Die Beschreibung stimmt nicht mit dem Produkt überein, das ich bekommen habe.",
];
const FR_TITLES: &[&str] = &[
    "Très bon produit",
    "Très déçu",
    "Je recommande",
    "À éviter",
    "Parfait pour la maison",
    "Qualité médiocre",
];
const FR_POS: &[&str] = &[
    "J'ai acheté ce produit pour ma fille et elle l'utilise tous les jours.",
    "La livraison a été rapide et le colis était très bien emballé.",
    "La qualité est vraiment excellente pour un prix aussi raisonnable.",
    "Je suis très satisfait de mon achat et je le recommande à tout le monde.",
    "Il est facile à utiliser et les instructions sont très claires.",
];
const FR_NEG: &[&str] = &[
    "Le produit est arrivé cassé et le service client ne répond pas à mes messages.",
    "Après une semaine d'utilisation, il ne fonctionne déjà plus du tout.",
    "La qualité est vraiment mauvaise et le plastique semble très fragile.",
    "Je l'ai renvoyé tout de suite et j'attends toujours mon remboursement.",
    "Les photos sur le site ne correspondent pas du tout à la réalité.",
];
const ES_TITLES: &[&str] = &[
    "Muy buena compra",
    "Muy decepcionado",
    "Lo recomiendo",
    "No lo compren",
    "Funciona perfectamente",
    "Mala calidad",
];
const ES_POS: &[&str] = &[
    "El producto llegó a tiempo y funciona perfectamente, lo recomiendo a todos.",
    "La calidad es mucho mejor de lo que esperaba por este precio.",
    "Lo compré para mi madre y está encantada con él desde el primer día.",
    "Es muy fácil de usar y las instrucciones están muy bien explicadas.",
    "Estoy muy contento con esta compra y volvería a comprarlo sin dudarlo.",
];
const ES_NEG: &[&str] = &[
    "Dejó de funcionar a las dos semanas y el vendedor no contesta mis mensajes.",
    "La calidad es muy mala y el plástico se rompió el primer día.",
    "Lo devolví inmediatamente y todavía estoy esperando el reembolso.",
    "No se parece en nada a las fotos que aparecen en la página web.",
    "Es mucho más pequeño de lo que esperaba y además hace mucho ruido.",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_per_seed() {
        let run = |seed| {
            let mut out = Vec::new();
            generate(200, seed, LabelScheme::Polarity, &mut out).expect("writes");
            out
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    /// The bytes of four outputs, as the generator wrote them when it lived in the
    /// extractor (`services/extractor/src/generate.rs`, before it moved here): moving
    /// or editing the generator must not change what a seed gives.
    #[test]
    fn output_is_pinned() {
        let cases = [
            (
                LabelScheme::Polarity,
                1000,
                42,
                251_199,
                0x46a2_623f_7dcf_6c51,
            ),
            (LabelScheme::Polarity, 100, 7, 24_641, 0xfae5_9037_f797_c2a7),
            (LabelScheme::Stars, 1000, 42, 249_427, 0xee84_a297_56ba_8fe0),
            (LabelScheme::Stars, 100, 7, 24_137, 0xab43_6f16_f73d_6642),
        ];
        for (labels, rows, seed, len, digest) in cases {
            let mut out = Vec::new();
            generate(rows, seed, labels, &mut out).expect("writes");
            assert_eq!(
                (out.len(), xxhash_rust::xxh3::xxh3_64(&out)),
                (len, digest),
                "{labels:?}, {rows} rows, seed {seed}"
            );
        }
    }

    #[test]
    fn labels_follow_the_scheme() {
        let polarity: Vec<_> = generate_rows(500, 1, LabelScheme::Polarity).collect();
        assert!(polarity.iter().all(|r| r.label == "1" || r.label == "2"));
        let stars: Vec<_> = generate_rows(500, 1, LabelScheme::Stars).collect();
        for s in ["1", "2", "3", "4", "5"] {
            assert!(stars.iter().any(|r| r.label == s), "no {s}-star row");
        }
    }

    #[test]
    fn mixes_languages_and_awkward_characters() {
        let rows: Vec<_> = generate_rows(5000, 42, LabelScheme::Polarity).collect();
        let foreign = rows.iter().filter(|r| r.language != "en").count() as f64 / 5000.0;
        assert!((0.05..=0.10).contains(&foreign), "foreign share {foreign}");
        for lang in ["de", "fr", "es"] {
            assert!(rows.iter().any(|r| r.language == lang), "no {lang} row");
        }
        for needle in ["\n", "\t", "\"", ","] {
            assert!(
                rows.iter()
                    .any(|r| r.body.contains(needle) || r.title.contains(needle)),
                "no {needle:?} in any field"
            );
        }
    }

    #[test]
    fn output_is_amazon_csv_that_reads_back() {
        let mut out = Vec::new();
        generate(300, 3, LabelScheme::Stars, &mut out).expect("writes");
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(false)
            .from_reader(&out[..]);
        let read: Vec<csv::StringRecord> = reader.records().map(|r| r.expect("record")).collect();
        let want: Vec<_> = generate_rows(300, 3, LabelScheme::Stars).collect();
        assert_eq!(read.len(), 300);
        for (r, w) in read.iter().zip(&want) {
            assert_eq!(
                (&r[0], &r[1], &r[2]),
                (w.label.as_str(), w.title.as_str(), w.body.as_str())
            );
        }
    }
}
