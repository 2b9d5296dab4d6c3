//! Language detection: whatlang's answer, bit for bit, for under a quarter
//! of its CPU on Latin-script text, where almost all reviews are.
//!
//! whatlang (0.18) scores a Latin-script text against each candidate
//! language's profile — its 300 most frequent trigrams, ranked — by looking
//! every profile trigram up in a hash map of the text's trigrams: 300 lookups
//! per candidate, ten candidates by default. With the sorts around it, that
//! was about 85% of the extractor's CPU. [`Detector`] turns the lookup around:
//! an index from trigram to the (candidate, rank) pairs that hold it, built
//! once, so a text costs one lookup per trigram *it* has (about 150 in the
//! default 200 characters) however many candidates there are. The rest is
//! whatlang's computation step for step — lowercasing, trigram ranking,
//! alphabet scores, their weighting, the sorts (the same sorts of the same
//! element types in the same starting order, so ties come out in the same
//! order), the confidence formula — so the language and the confidence are
//! identical, not just close. An ASCII text, most reviews, is scanned
//! without a lowercased copy, its trigrams as 15-bit indices sorted by radix
//! (28% less CPU than the general path on the bench's reviews). Texts whose
//! main script is not Latin go to `whatlang::Detector`.
//!
//! The profiles and alphabets are copied from whatlang 0.18.0
//! (`language/latin_trigrams.txt`, `LATIN_ALPHABETS`; MIT licensed,
//! © Serhii Potapov), so this module is bound to that version: its tests
//! compare every intermediate score with whatlang's own (its `dev` API) and
//! every answer with `whatlang::Detector`, and fail on an upgrade that
//! changes them. `cargo bench -p extractor --bench transform -- detect`
//! measures both.

use std::{
    cell::RefCell,
    cmp::{Ordering, Reverse},
    collections::HashMap,
    hash::{BuildHasherDefault, Hasher},
    sync::LazyLock,
};

use whatlang::{Lang, Script};

/// whatlang's `MAX_TRIGRAM_DISTANCE`: what a profile trigram missing from the text costs.
const MAX_TRIGRAM_DISTANCE: u32 = 300;
/// whatlang's `MAX_TOTAL_DISTANCE`.
const MAX_TOTAL_DISTANCE: u32 = MAX_TRIGRAM_DISTANCE * MAX_TRIGRAM_DISTANCE;
/// whatlang's `TEXT_TRIGRAMS_SIZE`: how many of the text's trigrams are ranked.
const TEXT_TRIGRAMS_SIZE: usize = 600;
/// Candidate slots: whatlang knows 37 Latin-script languages.
const SLOTS: usize = 64;

/// A language detector that answers exactly as `whatlang::Detector` with the
/// same candidates does.
pub struct Detector {
    /// For texts whose main script is not Latin.
    whatlang: whatlang::Detector,
    latin: Latin,
}

impl std::fmt::Debug for Detector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Detector")
            .field("latin_candidates", &self.latin.langs)
            .finish_non_exhaustive()
    }
}

impl Detector {
    /// Chooses among `candidates`, or among every language whatlang knows
    /// with `None` (as `whatlang::Detector::with_allowlist` and `new` do).
    pub fn new(candidates: Option<Vec<Lang>>) -> Self {
        let allowed = |lang: &Lang| candidates.as_ref().is_none_or(|c| c.contains(lang));
        // In the order of the script's languages, as whatlang's filter leaves them.
        let latin = Latin::new(
            Script::Latin
                .langs()
                .iter()
                .copied()
                .filter(allowed)
                .collect(),
        );
        let whatlang = match candidates {
            Some(list) => whatlang::Detector::with_allowlist(list),
            None => whatlang::Detector::new(),
        };
        Self { whatlang, latin }
    }

    /// The language of `text` and the confidence (0–1), as whatlang's `detect` has them.
    pub fn detect(&self, text: &str) -> Option<(Lang, f64)> {
        let script = if mostly_ascii_letters(text) {
            Script::Latin
        } else {
            whatlang::detect_script(text)?
        };
        match script {
            Script::Latin => self.latin.detect(text),
            _ => self
                .whatlang
                .detect(text)
                .map(|info| (info.lang(), info.confidence())),
        }
    }
}

/// Whether ASCII letters outnumber the text's other non-stop characters.
/// whatlang's script detection counts each non-stop character for at most one
/// script, and ASCII letters for Latin only, so Latin then outnumbers every
/// other script: it is the main script, known without testing each character
/// against every script's ranges as `whatlang::detect_script` does.
fn mostly_ascii_letters(text: &str) -> bool {
    let (mut letters, mut others) = (0usize, 0usize);
    for &b in text.as_bytes() {
        if b.is_ascii_alphabetic() {
            letters += 1;
        } else if b >= 0xc0 || b == 0x7f {
            // The first byte of a non-ASCII character, or DEL: not stop characters.
            others += 1;
        }
    }
    letters > others
}

/// The Latin-script candidates, and the tables that score them.
struct Latin {
    /// The candidates in whatlang's order of the script's languages (the
    /// order its alphabet scores start in, which decides ties). A
    /// candidate's index here is its slot.
    langs: Vec<Lang>,
    /// The slot of each candidate, by `Lang as usize`.
    slot_of: Vec<u8>,
    /// (rank in the candidate's profile, slot) for every profile trigram,
    /// grouped by trigram.
    postings: Vec<(u16, u8)>,
    /// The `postings` of each trigram of spaces and a–z, by [`dense_index`]:
    /// start << 8 | length (0: in no profile). Most trigrams of most reviews
    /// are such, and an array beats hashing them.
    dense: Vec<u32>,
    /// The `postings` (start, length) of every other trigram.
    sparse: HashMap<u64, (u32, u32), BuildHasherDefault<TrigramHasher>>,
    /// The candidates (bit i: slot i) whose alphabet has each ASCII character.
    ascii_alphabet: [u64; 128],
    /// The same for the other characters of their alphabets, sorted.
    alphabet: Vec<(char, u64)>,
}

/// Buffers a thread reuses from one text to the next.
#[derive(Default)]
struct Scratch {
    trigrams: Vec<u64>,
    distinct: Vec<(u64, u32)>,
    /// The same two for an ASCII text's trigrams, as [`dense_index`]es.
    dense_trigrams: Vec<u16>,
    dense_distinct: Vec<(u16, u32)>,
    /// [`radix_sort`]'s buffer.
    radix: Vec<u16>,
    next_rank: Vec<u32>,
    alphabet_counts: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::default();
}

/// What one pass over a lowercased text finds.
struct Scan {
    /// Letters: characters other than stop characters.
    letters: usize,
    /// Per slot: twice the letters in the candidate's alphabet.
    alphabet_hits: [usize; SLOTS],
    /// How many of the text's trigrams are ranked (at most [`TEXT_TRIGRAMS_SIZE`]).
    trigram_count: usize,
    /// Per slot: the distance of the candidate's profile to the text's ranking.
    distances: [u32; SLOTS],
}

impl Latin {
    fn new(langs: Vec<Lang>) -> Self {
        assert!(langs.len() <= SLOTS, "more Latin candidates than slots");
        let mut slot_of = vec![u8::MAX; Lang::all().len()];
        let mut by_trigram: HashMap<u64, Vec<(u16, u8)>> = HashMap::new();
        let mut ascii_alphabet = [0u64; 128];
        let mut alphabet: Vec<(char, u64)> = Vec::new();
        for (slot, &lang) in langs.iter().enumerate() {
            slot_of[lang as usize] = slot as u8;
            let (_, profile) = LATIN_PROFILES
                .iter()
                .find(|(l, _)| *l == lang)
                .expect("whatlang has a profile for every Latin-script language");
            for (rank, &t) in profile.iter().enumerate() {
                by_trigram
                    .entry(t)
                    .or_default()
                    .push((rank as u16, slot as u8));
            }
            let (_, letters) = LATIN_ALPHABETS
                .iter()
                .find(|(l, _)| *l == lang)
                .expect("whatlang has an alphabet for every Latin-script language");
            for c in letters.chars() {
                if c.is_ascii() {
                    ascii_alphabet[c as usize] |= 1 << slot;
                } else {
                    match alphabet.iter_mut().find(|(a, _)| *a == c) {
                        Some((_, set)) => *set |= 1 << slot,
                        None => alphabet.push((c, 1 << slot)),
                    }
                }
            }
        }
        alphabet.sort_unstable_by_key(|(c, _)| *c);
        let mut postings = Vec::new();
        let mut dense = vec![0u32; 27 * 27 * 27];
        let mut sparse = HashMap::default();
        for (t, list) in by_trigram {
            let (start, len) = (postings.len() as u32, list.len() as u32);
            match dense_index(t) {
                Some(d) => dense[d] = start << 8 | len,
                None => {
                    sparse.insert(t, (start, len));
                }
            }
            postings.extend(list);
        }
        Self {
            langs,
            slot_of,
            postings,
            dense,
            sparse,
            ascii_alphabet,
            alphabet,
        }
    }

    /// combined::detect: the best candidate and how far it is ahead of the second.
    fn detect(&self, text: &str) -> Option<(Lang, f64)> {
        let (scores, trigram_count) = self.scores(text)?;
        let (lang, first) = scores[0];
        let confidence = match scores.get(1) {
            Some(&(_, second)) => confidence(first, second, trigram_count),
            None => 1.0,
        };
        Some((lang, confidence))
    }

    /// combined::raw_detect: every candidate's score, best first, and the
    /// number of ranked trigrams; `None` without candidates.
    fn scores(&self, text: &str) -> Option<(Vec<(Lang, f64)>, usize)> {
        if self.langs.is_empty() {
            return None;
        }
        let scan = SCRATCH.with_borrow_mut(|scratch| self.scan_text(text, scratch));
        // The longer the text, the less its alphabet weighs.
        let alphabet_weight =
            (-(scan.letters as f64 / 300.0) + 2.0 / 3.0).clamp(1.0 / 3.0, 2.0 / 3.0);
        let trigram_weight = 1.0 - alphabet_weight;
        let max_distance = scan.trigram_count as u32 * MAX_TRIGRAM_DISTANCE;
        let mut scores: Vec<(Lang, f64)> = self
            .alphabet_scores(&scan)
            .into_iter()
            .map(|(lang, raw)| {
                // alphabets::common and trigrams::detection::distance_to_raw_score
                let a = raw as f64 / scan.letters as f64;
                let distance = scan.distances[usize::from(self.slot_of[lang as usize])];
                let t = f64::from(max_distance - distance) / f64::from(max_distance);
                (lang, a * alphabet_weight + t * trigram_weight)
            })
            .collect();
        scores.sort_unstable_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(Ordering::Less));
        Some((scores, scan.trigram_count))
    }

    /// alphabets::common: per candidate, best first, its alphabet's letters
    /// in the text less the others.
    fn alphabet_scores(&self, scan: &Scan) -> Vec<(Lang, usize)> {
        let mut raw: Vec<(Lang, usize)> = self
            .langs
            .iter()
            .zip(&scan.alphabet_hits)
            .map(|(&lang, &hits)| (lang, hits.saturating_sub(scan.letters)))
            .collect();
        // Ties keep the order whatlang's sort leaves them in: it is the same
        // sort of the same (Lang, usize) pairs in the same starting order.
        raw.sort_unstable_by_key(|(_, score)| Reverse(*score));
        raw
    }

    /// [`Latin::scan`] of the lowercased text, through [`Latin::scan_ascii`]
    /// when the text is ASCII.
    fn scan_text(&self, text: &str, scratch: &mut Scratch) -> Scan {
        if text.is_ascii()
            && let Some(scan) = self.scan_ascii(text, scratch)
        {
            return scan;
        }
        self.scan(&text.to_lowercase(), scratch)
    }

    /// [`Latin::scan`] for an ASCII text, most reviews: lowercasing is ASCII's
    /// then (no other character lowercases into ASCII, as the Kelvin sign
    /// does), every character is a stop character or a letter a–z, and every
    /// trigram is one of the 27³ of spaces and a–z, so it is counted and
    /// ranked as its [`dense_index`] (which orders them as their characters
    /// do), no lowercased copy made. `None` for a text with DEL, the one ASCII
    /// character that is neither.
    fn scan_ascii(&self, text: &str, scratch: &mut Scratch) -> Option<Scan> {
        let mut letters = 0;
        let mut ascii_counts = [0u32; 128];
        let trigrams = &mut scratch.dense_trigrams;
        trigrams.clear();
        // As in `scan`: the place of each character among space, a–z.
        let (mut v1, mut v2) = (0u16, None);
        for &b in text.as_bytes().iter().chain(Some(&b' ')) {
            let v3 = match b {
                b'A'..=b'Z' | b'a'..=b'z' => {
                    let lower = b.to_ascii_lowercase();
                    letters += 1;
                    ascii_counts[usize::from(lower)] += 1;
                    u16::from(lower - b'a' + 1)
                }
                0x7f => return None,
                _ => 0,
            };
            if let Some(v2) = v2 {
                if !(v2 == 0 && (v1 == 0 || v3 == 0)) {
                    trigrams.push(v1 * 729 + v2 * 27 + v3);
                }
                v1 = v2;
            }
            v2 = Some(v3);
        }
        let alphabet_hits = self.alphabet_hits(&ascii_counts, &[]);
        radix_sort(trigrams, &mut scratch.radix);
        let (trigram_count, distances) = self.distances(
            trigrams,
            &mut scratch.dense_distinct,
            &mut scratch.next_rank,
            |d| self.dense_postings(usize::from(d)),
        );
        Some(Scan {
            letters,
            alphabet_hits,
            trigram_count,
            distances,
        })
    }

    /// One pass over the lowercased text for both scores — its letters by
    /// alphabet (alphabets::common) and its trigrams (trigrams::utils::count)
    /// — then the trigrams ranked and each profile's distance to the ranking
    /// (trigrams::detection::calculate_distance).
    fn scan(&self, lower: &str, scratch: &mut Scratch) -> Scan {
        let Scratch {
            trigrams,
            distinct,
            next_rank,
            alphabet_counts,
            ..
        } = scratch;
        let mut letters = 0;
        let mut ascii_counts = [0u32; 128];
        alphabet_counts.clear();
        alphabet_counts.resize(self.alphabet.len(), 0);
        trigrams.clear();
        // Stop characters become spaces, the text is framed by spaces, and
        // the trigrams of a lone space are skipped.
        let (mut c1, mut c2) = (' ', None);
        for c in lower.chars().chain(Some(' ')) {
            let c3 = if is_stop_char(c) {
                ' '
            } else {
                letters += 1;
                if c.is_ascii() {
                    ascii_counts[c as usize] += 1;
                } else if let Ok(i) = self.alphabet.binary_search_by_key(&c, |(a, _)| *a) {
                    alphabet_counts[i] += 1;
                }
                c
            };
            if let Some(c2) = c2 {
                if !(c2 == ' ' && (c1 == ' ' || c3 == ' ')) {
                    trigrams.push(trigram(c1, c2, c3));
                }
                c1 = c2;
            }
            c2 = Some(c3);
        }
        let alphabet_hits = self.alphabet_hits(&ascii_counts, alphabet_counts);
        trigrams.sort_unstable();
        let (trigram_count, distances) =
            self.distances(trigrams, distinct, next_rank, |t| self.postings_of(t));
        Scan {
            letters,
            alphabet_hits,
            trigram_count,
            distances,
        }
    }

    /// Per slot, twice the letters counted in the candidate's alphabet:
    /// `ascii` by character, `other` by place in [`Latin::alphabet`].
    fn alphabet_hits(&self, ascii: &[u32; 128], other: &[u32]) -> [usize; SLOTS] {
        let mut hits = [0usize; SLOTS];
        let ascii = self.ascii_alphabet.iter().zip(ascii);
        let other = self.alphabet.iter().map(|(_, set)| set).zip(other);
        for (&set, &n) in ascii.chain(other) {
            let mut set = if n == 0 { 0 } else { set };
            while set != 0 {
                hits[set.trailing_zeros() as usize] += 2 * n as usize;
                set &= set - 1;
            }
        }
        hits
    }

    /// Ranks a text's `trigrams`, sorted (in any form that orders as
    /// whatlang's `Trigram` does), and measures each profile's distance to the
    /// ranking: the number of ranked trigrams and the distance per slot.
    fn distances<'a, T: Copy + Ord>(
        &'a self,
        trigrams: &[T],
        distinct: &mut Vec<(T, u32)>,
        next_rank: &mut Vec<u32>,
        postings: impl Fn(T) -> &'a [(u16, u8)],
    ) -> (usize, [u32; SLOTS]) {
        // Rank: most frequent first, equally frequent ones by trigram,
        // descending (whatlang sorts the distinct (count, trigram) pairs
        // descending) and the first 600 only. Counted per frequency, the
        // distinct trigrams taken in descending order get their ranks.
        distinct.clear();
        distinct.extend(
            trigrams
                .chunk_by(|a, b| a == b)
                .map(|run| (run[0], run.len() as u32)),
        );
        let most = distinct.iter().map(|&(_, n)| n).max().unwrap_or(0);
        next_rank.clear();
        next_rank.resize(most as usize + 1, 0);
        for &(_, n) in distinct.iter() {
            next_rank[n as usize] += 1;
        }
        let mut ahead = 0;
        for first in next_rank.iter_mut().rev() {
            (*first, ahead) = (ahead, ahead + *first);
        }
        let trigram_count = distinct.len().min(TEXT_TRIGRAMS_SIZE);

        // A profile's distance is the sum over its trigrams of the difference
        // of their ranks in profile and text, or the maximum for a trigram
        // the text's ranking lacks: the maximum for every trigram, less what
        // each of the text's ranked trigrams saves in the profiles holding it.
        let mut saved = [0i64; SLOTS];
        for &(t, n) in distinct.iter().rev() {
            let rank = next_rank[n as usize];
            next_rank[n as usize] += 1;
            if rank as usize >= TEXT_TRIGRAMS_SIZE {
                continue;
            }
            for &(profile_rank, slot) in postings(t) {
                saved[usize::from(slot)] += i64::from(MAX_TRIGRAM_DISTANCE)
                    - (i64::from(rank) - i64::from(profile_rank)).abs();
            }
        }
        let mut distances = [0u32; SLOTS];
        for (distance, &saved) in distances.iter_mut().zip(&saved).take(self.langs.len()) {
            let mut total = (i64::from(MAX_TOTAL_DISTANCE) - saved) as u32;
            if MAX_TRIGRAM_DISTANCE > trigram_count as u32 {
                total -= (MAX_TRIGRAM_DISTANCE - trigram_count as u32) * MAX_TRIGRAM_DISTANCE;
            }
            *distance = total.min(MAX_TOTAL_DISTANCE);
        }
        (trigram_count, distances)
    }

    /// The (profile rank, slot) pairs of the trigram at [`dense_index`] `d`.
    fn dense_postings(&self, d: usize) -> &[(u16, u8)] {
        let (start, len) = (self.dense[d] >> 8, self.dense[d] & 0xff);
        &self.postings[start as usize..(start + len) as usize]
    }

    /// The (profile rank, slot) pairs of trigram `t`.
    fn postings_of(&self, t: u64) -> &[(u16, u8)] {
        if let Some(d) = dense_index(t) {
            return self.dense_postings(d);
        }
        match self.sparse.get(&t) {
            Some(&(start, len)) => &self.postings[start as usize..(start + len) as usize],
            None => &[],
        }
    }
}

/// Sorts `keys`: by their low byte, then stably by their high one. For the
/// ~200 trigrams of a text, two counting passes cost half of a comparison sort.
fn radix_sort(keys: &mut [u16], buffer: &mut Vec<u16>) {
    buffer.clear();
    buffer.resize(keys.len(), 0);
    for shift in [0, 8] {
        let mut counts = [0usize; 256];
        for &k in keys.iter() {
            counts[usize::from((k >> shift) as u8)] += 1;
        }
        let mut at = 0;
        for c in counts.iter_mut() {
            (*c, at) = (at, at + *c);
        }
        for &k in keys.iter() {
            let slot = &mut counts[usize::from((k >> shift) as u8)];
            buffer[*slot] = k;
            *slot += 1;
        }
        keys.copy_from_slice(buffer);
    }
}

/// whatlang's `calculate_confidence`: how far the best score is ahead of the second.
fn confidence(first: f64, second: f64, count: usize) -> f64 {
    if first == 0.0 {
        return 0.0;
    }
    if second == 0.0 {
        return first;
    }
    let confident_rate = (3.0 / count as f64) + 0.015;
    let rate = (first - second) / second;
    if rate > confident_rate {
        1.0
    } else {
        rate / confident_rate
    }
}

/// whatlang's `is_stop_char`: ASCII punctuation, digits and whitespace.
fn is_stop_char(ch: char) -> bool {
    matches!(ch, '\u{0000}'..='\u{0040}' | '\u{005B}'..='\u{0060}' | '\u{007B}'..='\u{007E}')
}

/// A trigram as one integer, which sorts as whatlang's `Trigram` does (by
/// first, then second, then third character: 21 bits each).
fn trigram(c1: char, c2: char, c3: char) -> u64 {
    (u64::from(c1) << 42) | (u64::from(c2) << 21) | u64::from(c3)
}

/// The place of a trigram of spaces and a–z among all 27³ of them.
fn dense_index(t: u64) -> Option<usize> {
    let d = |c: u64| match c {
        0x20 => Some(0),
        0x61..=0x7a => Some(c as usize - 0x60),
        _ => None,
    };
    Some(d(t >> 42)? * 729 + d((t >> 21) & 0x1f_ffff)? * 27 + d(t & 0x1f_ffff)?)
}

/// Multiply-shift hashing for the trigram index: its keys are no one's
/// choice, so SipHash's protection against chosen keys buys nothing.
#[derive(Default)]
struct TrigramHasher(u64);

impl Hasher for TrigramHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (n ^ (n >> 32)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }

    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 29)
    }
}

/// whatlang's Latin trigram profiles: per language, its 300 trigrams by rank.
static LATIN_PROFILES: LazyLock<Vec<(Lang, Vec<u64>)>> = LazyLock::new(|| {
    include_str!("language/latin_trigrams.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let (code, trigrams) = line
                .split_once('\t')
                .expect("latin_trigrams.txt: a line is CODE<TAB>TRIGRAMS");
            let lang = Lang::from_code(code).expect("latin_trigrams.txt: a whatlang language code");
            let profile = trigrams
                .split_terminator('|')
                .map(|t| match t.chars().collect::<Vec<_>>()[..] {
                    [c1, c2, c3] => trigram(c1, c2, c3),
                    _ => panic!("latin_trigrams.txt: {code}: {t:?} is no trigram"),
                })
                .collect();
            (lang, profile)
        })
        .collect()
});

/// whatlang's Latin alphabets (`src/alphabets/latin.rs`), for the alphabet scores.
const LATIN_ALPHABETS: &[(Lang, &str)] = &[
    (Lang::Afr, "abcdefghijklmnopqrstuvwxyzáèéêëíîïóôúû"),
    (Lang::Aka, "abdefghiklmnoprstuwyɔɛ"),
    (Lang::Aze, "abcdefghijklmnopqrstuvxyzçöüğışə̇"),
    (Lang::Cat, "abcdefghijklmnopqrstuvwxyz·àçèéíïòóúü"),
    (Lang::Ces, "abcdefghijklmnopqrstuvwxyzáéíóúýčďěňřšťůž"),
    (
        Lang::Cym,
        "abcdefghijklmnopqrstuvwxyzàáâäèéêëìíîïòóôöùúûüýÿŵŷẁẃẅỳ",
    ),
    (Lang::Dan, "abcdefghijklmnopqrstuvwxyzåæø"),
    (Lang::Deu, "abcdefghijklmnopqrstuvwxyzßäöü"),
    (Lang::Eng, "abcdefghijklmnopqrstuvwxyz"),
    (Lang::Epo, "abcdefghijklmnoprstuvzĉĝĥĵŝŭ"),
    (Lang::Est, "abcdefghijklmnopqrstuvwxyzäõöü"),
    (Lang::Fin, "abcdefghijklmnopqrstuvwxyzäöšž"),
    (Lang::Fra, "abcdefghijklmnopqrstuvwxyzàâçèéêëîïôùûüÿœ"),
    (Lang::Hrv, "abcdefghijklmnopqrstuvwxyzćčđšž"),
    (Lang::Hun, "abcdefghijklmnopqrstuvwxyzáéíóöúüőű"),
    (Lang::Ind, "abcdefghijklmnopqrstuvwxyz"),
    (Lang::Ita, "abcdefghijklmnopqrstuvwxyzàèéìòù"),
    (Lang::Jav, "abcdefghijklmnopqrstuvwxyzèé"),
    (Lang::Lat, "abcdefghijklmnopqrstuvwxyz"),
    (Lang::Lav, "abcdefghijklmnopqrstuvwxyzāčēģīķļņōŗšūž"),
    (Lang::Lit, "abcdefghijklmnopqrstuvwxyząčėęįšūųž"),
    (Lang::Nld, "abcdefghijklmnopqrstuvwxyzàèéëïĳ"),
    (Lang::Nob, "abcdefghijklmnopqrstuvwxyzåæø"),
    (Lang::Pol, "abcdefghijklmnopqrstuvwxyzóąćęłńśźż"),
    (Lang::Por, "abcdefghijklmnopqrstuvwxyzàáâãçéêíóôõú"),
    (Lang::Ron, "abcdefghijklmnopqrstuvwxyzâîăşţ"),
    (Lang::Slk, "abcdefghijklmnopqrstuvwxyzáäéíóôúýčďĺľňŕšťž"),
    (Lang::Slv, "abcdefghijklmnopqrstuvwxyzčšž"),
    (Lang::Sna, "abcdefghijklmnopqrstuvwxyz"),
    (Lang::Spa, "abcdefghijklmnopqrstuvwxyz¡¿áéíñóúü"),
    (Lang::Swe, "abcdefghijklmnopqrstuvwxyzäåö"),
    (Lang::Tgl, "abcdefghijklmnopqrstuvwxyzáéíñóú"),
    (Lang::Tuk, "abdefghijklmnoprstuwyzäçöüýňşž"),
    (Lang::Tur, "abcdefghijklmnopqrstuvwxyzçöüğış̇"),
    (Lang::Uzb, "abcdefghijklmnopqrstuvxyzʻ"),
    (
        Lang::Vie,
        "abcdefghijklmnopqrstuvwxyzàáâãèéêìíòóôõùúýăđĩũơưạảấầẩẫậắằẳẵặẹẻẽếềểễệỉịọỏốồổỗộớờởỡợụủứừửữựỳỵỷỹ",
    ),
    (Lang::Zul, "abcdefghijklmnopqrstuvwxyz"),
];

#[cfg(test)]
mod tests {
    use etl_core::review::LabelScheme;
    use proptest::prelude::*;
    use whatlang::dev::{RawLangInfo, raw_detect};

    use super::*;

    /// A language's profile trigrams from rank `from` to `to`, run together.
    fn profile_text(lang: Lang, from: usize, to: usize) -> String {
        let (_, profile) = LATIN_PROFILES
            .iter()
            .find(|(l, _)| *l == lang)
            .expect("a Latin language");
        profile[from..to]
            .iter()
            .flat_map(|&t| [t >> 42, (t >> 21) & 0x1f_ffff, t & 0x1f_ffff])
            .map(|c| char::from_u32(c as u32).expect("a char"))
            .collect()
    }

    /// Generated reviews (whole and cut), every Latin profile (whole, in
    /// parts, and mixed with the next language's), and awkward texts.
    fn corpus() -> Vec<String> {
        let mut texts = Vec::new();
        for r in crate::generate::generate_rows(1500, 3, LabelScheme::Polarity) {
            let text = format!("{} {}", r.title, r.body);
            texts.push(text.chars().take(40).collect());
            texts.push(text.chars().take(200).collect());
            texts.push(text);
        }
        let latin = Script::Latin.langs();
        for (i, &lang) in latin.iter().enumerate() {
            let next = latin[(i + 1) % latin.len()];
            texts.push(profile_text(lang, 0, 300));
            texts.push(profile_text(lang, 0, 20));
            texts.push(profile_text(lang, 150, 300));
            texts.push(profile_text(lang, 0, 40) + &profile_text(next, 0, 40));
            texts.push(profile_text(lang, 0, 200) + &profile_text(next, 0, 230));
        }
        for text in [
            "",
            " ",
            "a",
            "I",
            "ok",
            "1234 !!! 42",
            "İstanbul İzmir",
            "ΣΟΦΙΑ ΣΑΣ and Σ",
            "\u{7f}abc\u{7f}",
            "naïve café œuvre ĳs ß",
            "Ω Kelvin ℃ ™",
            "日本語 and English mixed 日本語",
            "Отличный товар, very good product",
            "the the the the the the the the the the the the the",
        ] {
            texts.push(text.to_string());
        }
        texts
    }

    fn whatlang_detect(detector: &whatlang::Detector, text: &str) -> Option<(Lang, u64)> {
        detector
            .detect(text)
            .map(|info| (info.lang(), info.confidence().to_bits()))
    }

    fn ours(detector: &Detector, text: &str) -> Option<(Lang, u64)> {
        detector
            .detect(text)
            .map(|(lang, confidence)| (lang, confidence.to_bits()))
    }

    #[test]
    fn every_intermediate_score_is_whatlangs() {
        let latin = Latin::new(Script::Latin.langs().to_vec());
        let mut compared = 0;
        for text in corpus() {
            if whatlang::detect_script(&text) != Some(Script::Latin) {
                continue;
            }
            let Some(RawLangInfo::MultiScript(theirs)) = raw_detect(&text).lang_info else {
                panic!("{text:?}: whatlang found no Latin-script scores");
            };
            let scan = SCRATCH.with_borrow_mut(|s| latin.scan_text(&text, s));
            // Alphabets: the same scores, in the same order.
            assert_eq!(scan.letters, theirs.alphabet_raw_outcome.count, "{text:?}");
            assert_eq!(
                latin.alphabet_scores(&scan),
                theirs.alphabet_raw_outcome.raw_scores,
                "{text:?}"
            );
            // Trigrams: the same distance to every profile.
            let trigrams = &theirs.trigram_raw_outcome;
            assert_eq!(scan.trigram_count, trigrams.trigrams_count, "{text:?}");
            let mut distances = trigrams.raw_distances.clone();
            distances.sort_by_key(|(lang, _)| latin.slot_of[*lang as usize]);
            let mine: Vec<(Lang, u32)> = latin.langs.iter().copied().zip(scan.distances).collect();
            assert_eq!(mine, distances, "{text:?}");
            // Combined: the same scores in the same order, ties included.
            let (scores, count) = latin.scores(&text).expect("candidates");
            assert_eq!(count, trigrams.trigrams_count);
            assert_eq!(scores, theirs.scores, "{text:?}");
            compared += 1;
        }
        assert!(compared > 4500, "{compared}");
    }

    /// The ASCII path counts what the general one counts on the lowercased
    /// text, on the corpus and on its texts made ASCII (accents dropped,
    /// upper case and DEL kept).
    #[test]
    fn the_ascii_scan_is_the_general_one() {
        let latin = Latin::new(Script::Latin.langs().to_vec());
        let summary = |s: &Scan| (s.letters, s.alphabet_hits, s.trigram_count, s.distances);
        let mut compared = 0;
        for text in corpus() {
            let ascii: String = text.chars().filter(char::is_ascii).collect();
            for text in [text, ascii.to_uppercase(), format!("{ascii}\u{7f}"), ascii] {
                if !text.is_ascii() {
                    continue;
                }
                let general = SCRATCH.with_borrow_mut(|s| latin.scan(&text.to_lowercase(), s));
                match SCRATCH.with_borrow_mut(|s| latin.scan_ascii(&text, s)) {
                    Some(fast) => {
                        assert_eq!(summary(&fast), summary(&general), "{text:?}");
                        compared += 1;
                    }
                    None => assert!(text.contains('\u{7f}'), "{text:?}"),
                }
            }
        }
        assert!(compared > 5000, "{compared}");
    }

    #[test]
    fn radix_sort_sorts() {
        let mut buffer = Vec::new();
        let mut state = 0x2545_f491_4f6c_dd1du64;
        for len in [0, 1, 2, 7, 200, 1000] {
            let mut keys: Vec<u16> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state % 19683) as u16
                })
                .collect();
            let mut expected = keys.clone();
            expected.sort_unstable();
            radix_sort(&mut keys, &mut buffer);
            assert_eq!(keys, expected);
        }
    }

    fn candidate_sets() -> Vec<Option<Vec<Lang>>> {
        let marketplace = crate::transform::MARKETPLACE_LANGUAGES
            .iter()
            .map(|code| {
                *Lang::all()
                    .iter()
                    .find(|l| crate::transform::iso639_1(**l) == *code)
                    .expect("known")
            })
            .collect();
        vec![
            None,
            Some(marketplace),
            Some(Script::Latin.langs().to_vec()),
            Some(vec![Lang::Eng]),
            Some(vec![Lang::Deu, Lang::Eng]),
            Some(vec![Lang::Nld, Lang::Swe, Lang::Afr]),
            Some(vec![Lang::Rus, Lang::Ukr, Lang::Cmn]),
            Some(vec![Lang::Jpn, Lang::Eng, Lang::Ara]),
            Some(vec![]),
        ]
    }

    #[test]
    fn answers_as_whatlang_does() {
        let texts = corpus();
        for candidates in candidate_sets() {
            let theirs = match &candidates {
                Some(list) => whatlang::Detector::with_allowlist(list.clone()),
                None => whatlang::Detector::new(),
            };
            let mine = Detector::new(candidates.clone());
            for text in &texts {
                assert_eq!(
                    ours(&mine, text),
                    whatlang_detect(&theirs, text),
                    "{text:?} among {candidates:?}"
                );
            }
        }
    }

    /// Text made of reviews' words, profile trigrams of any Latin language
    /// (close calls between languages), stop characters and any character.
    fn text() -> impl Strategy<Value = String> {
        let piece = prop_oneof![
            4 => prop::sample::select(vec![
                "the ", "and ", "product ", "nicht ", "sehr ", "très ", "déçu ", "niño ",
                "così ", "não ", "łódź ", "ışık ", "őszintén ", "người ", "ĳs ", "ŵ ",
                "Éclair ", "ÜBER ", "İ", "Σ", "товар ", "很好", "これは", "جيد ", "बहुत ",
            ])
            .prop_map(str::to_string),
            4 => (0..37usize, 0..300usize).prop_map(|(lang, rank)| {
                profile_text(Script::Latin.langs()[lang], rank, rank + 1)
            }),
            2 => prop::sample::select(vec![" ", ",", ". ", "'", "-", "\t", "1", "\u{7f}"])
                .prop_map(str::to_string),
            1 => any::<char>().prop_map(|c| c.to_string()),
        ];
        prop::collection::vec(piece, 0..120).prop_map(|pieces| pieces.concat())
    }

    fn candidates() -> impl Strategy<Value = Option<Vec<Lang>>> {
        prop_oneof![
            1 => Just(None),
            4 => prop::sample::subsequence(Lang::all().to_vec(), 0..=Lang::all().len())
                .prop_shuffle()
                .prop_map(Some),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn answers_as_whatlang_does_on_any_text(text in text(), candidates in candidates()) {
            let theirs = match &candidates {
                Some(list) => whatlang::Detector::with_allowlist(list.clone()),
                None => whatlang::Detector::new(),
            };
            let mine = Detector::new(candidates);
            prop_assert_eq!(ours(&mine, &text), whatlang_detect(&theirs, &text));
        }

        #[test]
        fn mostly_ascii_letters_means_latin_script(text in text()) {
            if mostly_ascii_letters(&text) {
                prop_assert_eq!(whatlang::detect_script(&text), Some(Script::Latin));
            }
        }
    }
}
