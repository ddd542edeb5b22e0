//! What a string of plate characters means, and which valid plate an OCR
//! read most probably was.
//!
//! The grammar is that of Circular 79/2024/TT-BCA (in force from 1 January
//! 2025), which keeps the plate formats of Circular 58/2020/TT-BCA, so
//! plates issued under either read the same way. Characters are written
//! without separators, as in the data: `59H143727`.
//!
//! | kind | characters | display |
//! |---|---|---|
//! | car | province, 1 series letter, 4 or 5 digits | `51G-123.45`, `30A-1234` |
//! | motorbike | province, letter + digit 1–9 or two letters, 4 or 5 digits | `59-H1 437.27`, `59-KA 191.66`, `59-H1 4372` |
//! | electric motorbike | province, `MĐ` + digit 1–9, 4 or 5 digits | `29-MĐ1 234.56` |
//! | special | province, `LD` `KT` `DA` `HC` `RM` `TĐ` `R`, 4 or 5 digits | `60LD-005.84`, `51R-123.45` |
//! | special (motorbike) | province, `CD`, or `MK` + digit 1–9, 4 or 5 digits | `29-CD 123.45`, `29-MK1 123.45` |
//! | foreign car | province, 3-digit country or organisation code, `NG` `QT` `NN` `CV`, 2 or 3 digits | `41-291-NG-01` |
//! | foreign motorbike | province, `NG` `QT` `NN` `CV`, 3-digit code, 2 or 3 digits | `51-NG 166-33` |
//! | military | unit letters (2), 4 digits | `AA-12-34` |
//!
//! Domestic series letters come from the 20 letters A–Z without I, J, O,
//! Q, R and W (I, J, O and Q pass for digits; R is kept for trailers, W is
//! not used), so a read with one of those letters in a series is a misread.
//!
//! One ambiguity is real and stays: eight characters such as `51G12345`
//! are a car with a five-digit serial (`51G-123.45`) or an older
//! motorbike with a four-digit serial (`51-G1 2345`); only the plate's
//! shape tells them apart. [`readings`] returns both, car first, and
//! [`parse`] takes the car reading.

use super::provinces::{Province, province};
use serde::Serialize;

/// What the plate is on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PlateKind {
    Car,
    Motorbike,
    /// A domestic plate with a special series (foreign-invested
    /// enterprises, military enterprises, trailers, tractors…).
    Special,
    /// Diplomatic missions, international organisations, foreigners.
    Foreign,
    Military,
}

/// A plate that validates against the grammar.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Plate {
    /// Canonical characters: A–Z, 0–9, and `Đ` in the `MĐ` and `TĐ`
    /// series.
    pub chars: String,
    /// The form an officer writes.
    pub display: String,
    pub kind: PlateKind,
    /// `None` for military plates, which carry a unit, not a province.
    pub province: Option<&'static Province>,
    /// `A`, `KA`, `X3`, `LD`, `MĐ1`, `NG`; the unit letters of a
    /// military plate.
    pub series: String,
    /// The registration number after the series.
    pub serial: String,
    /// The special series, when the plate has one: `LD`, `DA`, `KT`,
    /// `CD`, `HC`, `TĐ`, `R`, `RM`, `MK`, `MĐ`, `NG`, `QT`, `NN`, `CV`.
    pub special_series: Option<&'static str>,
    /// Foreign plates: the three-digit code of the country or
    /// international organisation.
    pub owner_code: Option<String>,
}

/// The 20 letters of ordinary domestic series.
const SERIES_LETTERS: &str = "ABCDEFGHKLMNPSTUVXYZ";

/// Two-letter special series, which take precedence over the ordinary
/// two-letter motorbike series with the same letters.
const SPECIAL_PAIRS: [&str; 7] = ["LD", "KT", "DA", "HC", "CD", "RM", "TĐ"];

/// Series that end in a digit 1–9 after two letters.
const SPECIAL_WITH_DIGIT: [&str; 2] = ["MĐ", "MK"];

/// The letters of foreign plates: diplomatic (NG), international
/// organisations (QT), other foreigners (NN), administrative and
/// technical staff of missions (CV).
const FOREIGN_SERIES: [&str; 4] = ["NG", "QT", "NN", "CV"];

/// The first letters of military unit codes (T: general departments, K:
/// military regions, A: army corps, Q: services, B: arms, H: academies
/// and schools, P: departments and institutes, V, C: defence companies).
const MILITARY_FIRST: &str = "ABCHKPQTV";
/// The second letter of a military unit code: any letter but I, J, O, W.
const MILITARY_SECOND: &str = "ABCDEFGHKLMNPQRSTUVXYZ";

/// The most probable plate `chars` can be (see [`readings`]).
pub fn parse(chars: &str) -> Option<Plate> {
    readings(chars).into_iter().next()
}

/// Every way `chars` validates, most usual first. Input may be lower case
/// and may carry the separators of the display form (`-`, `.`, space).
pub fn readings(chars: &str) -> Vec<Plate> {
    let c: Vec<char> = normalise(chars).chars().collect();
    let mut out = Vec::new();
    out.extend(military(&c));
    out.extend(foreign(&c));
    out.extend(domestic(&c, 5));
    out.extend(domestic(&c, 4));
    out
}

/// Whether [`readings`] of the canonical characters `c` would find any,
/// without building one.
fn is_valid(c: &[char]) -> bool {
    is_military(c)
        || foreign_parts(c).is_some()
        || domestic_parts(c, 5).is_some()
        || domestic_parts(c, 4).is_some()
}

fn normalise(chars: &str) -> String {
    chars
        .chars()
        .filter(|c| !matches!(c, '-' | '.' | ' '))
        .flat_map(char::to_uppercase)
        .collect()
}

fn all_digits(c: &[char]) -> bool {
    c.iter().all(char::is_ascii_digit)
}

fn text(c: &[char]) -> String {
    c.iter().collect()
}

fn same(c: &[char], s: &str) -> bool {
    c.iter().copied().eq(s.chars())
}

/// The province of two leading digits, if they are a code in use.
fn province_of(c: &[char]) -> Option<&'static Province> {
    let [tens, units] = *c.get(..2)? else {
        return None;
    };
    province(u8::try_from(tens.to_digit(10)? * 10 + units.to_digit(10)?).ok()?)
}

/// `12345` → `123.45`; four digits stay as they are.
fn format_serial(serial: &str) -> String {
    if serial.len() == 5 {
        format!("{}.{}", &serial[..3], &serial[3..])
    } else {
        serial.to_string()
    }
}

/// What kind of plate a domestic series makes, and its special series.
fn classify_series(series: &[char]) -> Option<(PlateKind, Option<&'static str>)> {
    let letter = |c: char| SERIES_LETTERS.contains(c);
    let nonzero = |c: char| matches!(c, '1'..='9');
    match *series {
        ['R'] => Some((PlateKind::Special, Some("R"))),
        [a] if letter(a) => Some((PlateKind::Car, None)),
        [a, b] if letter(a) && nonzero(b) => Some((PlateKind::Motorbike, None)),
        [_, _] => {
            if FOREIGN_SERIES.iter().any(|f| same(series, f)) {
                None // a foreign plate, or a misread one
            } else if let Some(special) = SPECIAL_PAIRS.iter().find(|p| same(series, p)) {
                Some((PlateKind::Special, Some(*special)))
            } else if series.iter().all(|&c| letter(c)) {
                Some((PlateKind::Motorbike, None))
            } else {
                None
            }
        }
        [_, _, d] if nonzero(d) => {
            let special = SPECIAL_WITH_DIGIT.iter().find(|p| same(&series[..2], p))?;
            let kind = if *special == "MĐ" {
                PlateKind::Motorbike
            } else {
                PlateKind::Special
            };
            Some((kind, Some(*special)))
        }
        _ => None,
    }
}

/// What makes `c` a domestic plate, found without building its strings:
/// validity is checked for every candidate of every plate read.
struct Domestic {
    province: &'static Province,
    series_len: usize,
    kind: PlateKind,
    special_series: Option<&'static str>,
}

/// Province, series, and a serial of `serial_len` digits.
fn domestic_parts(c: &[char], serial_len: usize) -> Option<Domestic> {
    let series_len = c.len().checked_sub(2 + serial_len)?;
    if !(1..=3).contains(&series_len) {
        return None;
    }
    let province = province_of(c)?;
    let (series, serial) = c[2..].split_at(series_len);
    if !all_digits(serial) {
        return None;
    }
    let (kind, special_series) = classify_series(series)?;
    Some(Domestic {
        province,
        series_len,
        kind,
        special_series,
    })
}

fn domestic(c: &[char], serial_len: usize) -> Option<Plate> {
    let Domestic {
        province,
        series_len,
        kind,
        special_series,
    } = domestic_parts(c, serial_len)?;
    let (series, serial) = c[2..].split_at(series_len);
    let (code, series, serial) = (text(&c[..2]), text(series), text(serial));
    // Cars, and the special series that are mostly on cars, write the
    // series against the province on one line (`60LD-005.84`);
    // motorbikes put province and series on the top line.
    let car_style = series_len == 1
        || (kind == PlateKind::Special && series_len == 2 && special_series != Some("CD"));
    let display = if car_style {
        format!("{code}{series}-{}", format_serial(&serial))
    } else {
        format!("{code}-{series} {}", format_serial(&serial))
    };
    Some(Plate {
        chars: text(c),
        display,
        kind,
        province: Some(province),
        series,
        serial,
        special_series,
        owner_code: None,
    })
}

/// Foreign plates: province, owner code, NG/QT/NN/CV, 2 or 3 digits on
/// cars (`41291NG01`, `41-291-NG-01`); province, NG/QT/NN/CV, owner code,
/// 2 or 3 digits on motorbikes (`51NG16633`, `51-NG 166-33`).
fn foreign(c: &[char]) -> Option<Plate> {
    let Foreign {
        province,
        series_at,
        owner_at,
        car,
        special,
    } = foreign_parts(c)?;
    let series = text(&c[series_at..series_at + 2]);
    let (code, owner, serial) = (
        text(&c[..2]),
        text(&c[owner_at..owner_at + 3]),
        text(&c[7..]),
    );
    let display = if car {
        format!("{code}-{owner}-{series}-{serial}")
    } else {
        format!("{code}-{series} {owner}-{serial}")
    };
    Some(Plate {
        chars: text(c),
        display,
        kind: PlateKind::Foreign,
        province: Some(province),
        series,
        serial,
        special_series: Some(special),
        owner_code: Some(owner),
    })
}

/// Where the parts of a foreign plate lie in `c` (see [`Domestic`]).
struct Foreign {
    province: &'static Province,
    series_at: usize,
    owner_at: usize,
    car: bool,
    special: &'static str,
}

fn foreign_parts(c: &[char]) -> Option<Foreign> {
    if !(9..=10).contains(&c.len()) {
        return None;
    }
    let province = province_of(c)?;
    let (series_at, owner_at, car) = if all_digits(&c[2..5]) {
        (5, 2, true)
    } else {
        (2, 4, false)
    };
    let special = *FOREIGN_SERIES
        .iter()
        .find(|s| same(&c[series_at..series_at + 2], s))?;
    if !all_digits(&c[owner_at..owner_at + 3]) || !all_digits(&c[7..]) {
        return None;
    }
    Some(Foreign {
        province,
        series_at,
        owner_at,
        car,
        special,
    })
}

/// `AA1234`: unit letters and four digits.
fn is_military(c: &[char]) -> bool {
    c.len() == 6
        && MILITARY_FIRST.contains(c[0])
        && MILITARY_SECOND.contains(c[1])
        && all_digits(&c[2..])
}

fn military(c: &[char]) -> Option<Plate> {
    if !is_military(c) {
        return None;
    }
    let (series, serial) = (text(&c[..2]), text(&c[2..]));
    Some(Plate {
        chars: text(c),
        display: format!("{series}-{}-{}", &serial[..2], &serial[2..]),
        kind: PlateKind::Military,
        province: None,
        series,
        serial,
        special_series: None,
        owner_code: None,
    })
}

/// A valid plate an OCR read may have been, with how probable it is.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Candidate {
    pub chars: String,
    /// Ranks candidates: the read's confidence times the factor of every
    /// substitution.
    pub score: f32,
    /// How far the candidate rests on guesses: the product of the factors
    /// of the substitutions that replaced a character its position allows
    /// (a `3` read where the province code needs some other digit), 1 when
    /// every change was one the grammar forced (an `O` where only a digit
    /// may stand). A forced change has one natural answer; a guessed one
    /// is one of several plates the read may have been.
    pub certainty: f32,
}

/// The factor for a confusion OCR models make all the time (`0`/`O`,
/// `8`/`B`), for one they make now and then (`1`/`T`, `3`/`B`), for one
/// digit read as another, and for `D` where the plate has `Đ`, which the
/// OCR alphabet lacks, so `D` there is no mistake at all.
const STRONG: f32 = 0.5;
const WEAK: f32 = 0.3;
const DIGIT_FOR_DIGIT: f32 = 0.25;
const NO_DIACRITIC: f32 = 0.9;

/// Confusable characters: (read, meant, factor, both ways).
const CONFUSIONS: &[(char, char, f32, bool)] = &[
    ('0', 'O', STRONG, true),
    ('0', 'D', STRONG, true),
    ('0', 'Q', STRONG, true),
    ('0', 'U', WEAK, true),
    ('1', 'I', STRONG, true),
    ('1', 'T', WEAK, true),
    ('1', 'L', WEAK, true),
    ('1', 'J', WEAK, true),
    ('2', 'Z', STRONG, true),
    ('3', 'B', WEAK, true),
    ('4', 'A', STRONG, true),
    ('5', 'S', STRONG, true),
    ('6', 'G', STRONG, true),
    ('7', 'T', STRONG, true),
    ('8', 'B', STRONG, true),
    ('8', 'S', WEAK, true),
    ('3', '8', DIGIT_FOR_DIGIT, true),
    ('1', '7', DIGIT_FOR_DIGIT, true),
    ('0', '8', DIGIT_FOR_DIGIT, true),
    ('5', '6', DIGIT_FOR_DIGIT, true),
    ('6', '8', DIGIT_FOR_DIGIT, true),
    ('D', 'Đ', NO_DIACRITIC, false),
    // The reader's `Đ` began as a copy of its `D`.
    ('Đ', 'D', STRONG, false),
    ('0', 'Đ', STRONG, false),
    ('O', 'Đ', WEAK, false),
    ('O', 'D', STRONG, false),
    ('Q', 'D', WEAK, false),
    ('U', 'V', WEAK, true),
    ('W', 'V', WEAK, false),
    ('I', 'T', WEAK, false),
    ('I', 'L', WEAK, false),
    ('E', 'F', WEAK, true),
    ('P', 'R', WEAK, true),
    ('K', 'X', WEAK, true),
];

/// What `read` may have meant, with the factor for each substitution.
fn confusions(read: char) -> impl Iterator<Item = (char, f32)> {
    CONFUSIONS.iter().filter_map(move |&(a, b, f, both)| {
        if a == read {
            Some((b, f))
        } else if both && b == read {
            Some((a, f))
        } else {
            None
        }
    })
}

/// The characters each position of one plate shape allows.
type Shape = &'static [&'static str];

const D: &str = "0123456789";
const N: &str = "123456789";
const L: &str = "ABCDEFGHKLMNPRSTUVXYZ";

/// Every shape of [`readings`], each with a 4- and a 5-digit serial
/// where it has one. Shapes only say which characters may stand where;
/// [`parse`] decides validity (province codes, special series).
const SHAPES: &[Shape] = &[
    &[D, D, L, D, D, D, D, D],
    &[D, D, L, D, D, D, D],
    &[D, D, L, N, D, D, D, D, D],
    &[D, D, L, N, D, D, D, D],
    &[D, D, L, L, D, D, D, D, D],
    &[D, D, L, L, D, D, D, D],
    &[D, D, "T", "Đ", D, D, D, D, D],
    &[D, D, "T", "Đ", D, D, D, D],
    &[D, D, "M", "ĐK", N, D, D, D, D, D],
    &[D, D, "M", "ĐK", N, D, D, D, D],
    &[D, D, D, D, D, "NQC", "GTNV", D, D],
    &[D, D, D, D, D, "NQC", "GTNV", D, D, D],
    &[D, D, "NQC", "GTNV", D, D, D, D, D],
    &[D, D, "NQC", "GTNV", D, D, D, D, D, D],
    &[MILITARY_FIRST, MILITARY_SECOND, D, D, D, D],
];

/// How many partial strings each shape keeps while it is filled in;
/// enough that the joint checks (province code, series) done at the end
/// never lose a candidate to pruning in practice.
const BEAM: usize = 64;

/// Position-aware correction of OCR confusions: digits where the grammar
/// wants digits, letters where it wants letters, `Đ` where only `Đ`
/// makes a valid plate.
///
/// Returns up to `k` valid candidates, best first. A candidate's score is
/// the product over characters of the read's confidence, times a penalty
/// factor (0.9 for `D`→`Đ`, 0.5 for common confusions, less for rare
/// ones) where the character was substituted. `probs` holds the
/// confidence of each character of `raw`; if its length does not match,
/// every character counts as certain. Separators in `raw` are dropped.
/// A read with a character too many or too few yields nothing.
pub fn correct(raw: &str, probs: &[f32], k: usize) -> Vec<Candidate> {
    let raw_chars: Vec<char> = raw.chars().collect();
    let (read, conf): (Vec<char>, Vec<f32>) = raw_chars
        .iter()
        .enumerate()
        .filter(|&(_, &c)| !matches!(c, '-' | '.' | ' '))
        .map(|(i, &c)| {
            let p = if probs.len() == raw_chars.len() {
                probs[i]
            } else {
                1.0
            };
            let p = if p.is_nan() { 0.0 } else { p.clamp(0.0, 1.0) };
            (c.to_uppercase().next().unwrap_or(c), p)
        })
        .unzip();
    let mut found: Vec<Candidate> = Vec::new();
    let mut beams = Beams::default();
    for shape in SHAPES.iter().filter(|s| s.len() == read.len()) {
        beams.fill(shape, &read, &conf);
        for &(ref chars, score, certainty) in &beams.beam {
            let chars = chars.as_slice();
            if !is_valid(chars) {
                continue;
            }
            match found.iter_mut().find(|c| same(chars, &c.chars)) {
                Some(c) if c.score >= score => {}
                Some(c) => (c.score, c.certainty) = (score, certainty),
                None => found.push(Candidate {
                    chars: chars.iter().collect(),
                    score,
                    certainty,
                }),
            }
        }
    }
    // Stable: equal scores keep the order of SHAPES (cars first).
    found.sort_by(|a, b| b.score.total_cmp(&a.score));
    found.truncate(k);
    found
}

/// A partial plate in the beam: fixed-size, so that filling the shapes
/// of every read allocates nothing once the beam buffers have grown.
#[derive(Clone, Copy)]
struct Partial {
    chars: [char; MAX_CHARS],
    len: usize,
}

/// The longest shape.
const MAX_CHARS: usize = 10;

impl Partial {
    fn as_slice(&self) -> &[char] {
        &self.chars[..self.len]
    }

    fn with(mut self, c: char) -> Self {
        self.chars[self.len] = c;
        self.len += 1;
        self
    }
}

/// The buffers of the beam search, reused from shape to shape.
#[derive(Default)]
struct Beams {
    /// The best ways to fill the shape so far, with their scores and
    /// certainties (see [`Candidate`]).
    beam: Vec<(Partial, f32, f32)>,
    next: Vec<(Partial, f32, f32)>,
    /// The characters one position may take, with their scores and
    /// certainties.
    options: Vec<(char, f32, f32)>,
}

impl Beams {
    /// Leaves in `beam` the best ways to fill `shape` from the read.
    fn fill(&mut self, shape: Shape, read: &[char], conf: &[f32]) {
        self.beam.clear();
        self.beam.push((
            Partial {
                chars: ['\0'; MAX_CHARS],
                len: 0,
            },
            1.0,
            1.0,
        ));
        for ((allowed, &r), &p) in shape.iter().zip(read).zip(conf) {
            let guess = |f: f32| if allowed.contains(r) { f } else { 1.0 };
            self.options.clear();
            self.options.extend(
                std::iter::once((r, 1.0, 1.0))
                    .chain(confusions(r).map(|(c, f)| (c, f, guess(f))))
                    .filter(|&(c, _, _)| allowed.contains(c))
                    .map(|(c, f, g)| (c, p * f, g)),
            );
            if self.options.is_empty() {
                self.beam.clear();
                return;
            }
            self.next.clear();
            for &(prefix, score, certainty) in &self.beam {
                for &(c, s, g) in &self.options {
                    self.next.push((prefix.with(c), score * s, certainty * g));
                }
            }
            // Stable: equal scores keep the order they were made in.
            self.next.sort_by(|a, b| b.1.total_cmp(&a.1));
            self.next.truncate(BEAM);
            std::mem::swap(&mut self.beam, &mut self.next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use PlateKind::*;

    #[test]
    #[rustfmt::skip]
    fn valid_plates() {
        // (input, chars, display, kind, series, serial, special, province)
        for (input, chars, display, kind, series, serial, special, code) in [
            ("51G12345", "51G12345", "51G-123.45", Car, "G", "12345", None, Some(51)),
            ("95A12345", "95A12345", "95A-123.45", Car, "A", "12345", None, Some(95)),
            ("30A1234", "30A1234", "30A-1234", Car, "A", "1234", None, Some(30)),
            ("80A12345", "80A12345", "80A-123.45", Car, "A", "12345", None, Some(80)),
            ("11Z00001", "11Z00001", "11Z-000.01", Car, "Z", "00001", None, Some(11)),
            ("59H14372", "59H14372", "59H-143.72", Car, "H", "14372", None, Some(59)),
            ("59H143727", "59H143727", "59-H1 437.27", Motorbike, "H1", "43727", None, Some(59)),
            ("59X312345", "59X312345", "59-X3 123.45", Motorbike, "X3", "12345", None, Some(59)),
            ("99Y91234", "99Y91234", "99Y-912.34", Car, "Y", "91234", None, Some(99)),
            ("59KA19166", "59KA19166", "59-KA 191.66", Motorbike, "KA", "19166", None, Some(59)),
            ("59KA1916", "59KA1916", "59-KA 1916", Motorbike, "KA", "1916", None, Some(59)),
            ("47AD15155", "47AD15155", "47-AD 151.55", Motorbike, "AD", "15155", None, Some(47)),
            ("29MĐ123456", "29MĐ123456", "29-MĐ1 234.56", Motorbike, "MĐ1", "23456", Some("MĐ"), Some(29)),
            ("29MĐ12345", "29MĐ12345", "29-MĐ1 2345", Motorbike, "MĐ1", "2345", Some("MĐ"), Some(29)),
            ("29MK112345", "29MK112345", "29-MK1 123.45", Special, "MK1", "12345", Some("MK"), Some(29)),
            ("51LD12345", "51LD12345", "51LD-123.45", Special, "LD", "12345", Some("LD"), Some(51)),
            ("51DA1234", "51DA1234", "51DA-1234", Special, "DA", "1234", Some("DA"), Some(51)),
            ("29KT12345", "29KT12345", "29KT-123.45", Special, "KT", "12345", Some("KT"), Some(29)),
            ("30HC12345", "30HC12345", "30HC-123.45", Special, "HC", "12345", Some("HC"), Some(30)),
            ("29CD12345", "29CD12345", "29-CD 123.45", Special, "CD", "12345", Some("CD"), Some(29)),
            ("51R12345", "51R12345", "51R-123.45", Special, "R", "12345", Some("R"), Some(51)),
            ("51RM12345", "51RM12345", "51RM-123.45", Special, "RM", "12345", Some("RM"), Some(51)),
            ("30TĐ12345", "30TĐ12345", "30TĐ-123.45", Special, "TĐ", "12345", Some("TĐ"), Some(30)),
            ("41291NG01", "41291NG01", "41-291-NG-01", Foreign, "NG", "01", Some("NG"), Some(41)),
            ("80011NG123", "80011NG123", "80-011-NG-123", Foreign, "NG", "123", Some("NG"), Some(80)),
            ("51123QT45", "51123QT45", "51-123-QT-45", Foreign, "QT", "45", Some("QT"), Some(51)),
            ("29456NN78", "29456NN78", "29-456-NN-78", Foreign, "NN", "78", Some("NN"), Some(29)),
            ("80012CV01", "80012CV01", "80-012-CV-01", Foreign, "CV", "01", Some("CV"), Some(80)),
            ("51NG16633", "51NG16633", "51-NG 166-33", Foreign, "NG", "33", Some("NG"), Some(51)),
            ("29QT123456", "29QT123456", "29-QT 123-456", Foreign, "QT", "456", Some("QT"), Some(29)),
            ("60LD00584", "60LD00584", "60LD-005.84", Special, "LD", "00584", Some("LD"), Some(60)),
            ("60LD4379", "60LD4379", "60LD-4379", Special, "LD", "4379", Some("LD"), Some(60)),
            ("AA1234", "AA1234", "AA-12-34", Military, "AA", "1234", None, None),
            ("TM0001", "TM0001", "TM-00-01", Military, "TM", "0001", None, None),
            ("HQ1234", "HQ1234", "HQ-12-34", Military, "HQ", "1234", None, None),
            ("KT5678", "KT5678", "KT-56-78", Military, "KT", "5678", None, None),
            ("VT1010", "VT1010", "VT-10-10", Military, "VT", "1010", None, None),
            // Lower case and display separators are accepted.
            ("51g12345", "51G12345", "51G-123.45", Car, "G", "12345", None, Some(51)),
            ("51G-123.45", "51G12345", "51G-123.45", Car, "G", "12345", None, Some(51)),
            ("59-h1 437.27", "59H143727", "59-H1 437.27", Motorbike, "H1", "43727", None, Some(59)),
            ("29-mđ1 234.56", "29MĐ123456", "29-MĐ1 234.56", Motorbike, "MĐ1", "23456", Some("MĐ"), Some(29)),
            ("aa-12-34", "AA1234", "AA-12-34", Military, "AA", "1234", None, None),
        ] {
            let p = parse(input).unwrap_or_else(|| panic!("{input} should parse"));
            assert_eq!(p.chars, chars, "{input}");
            assert_eq!(p.display, display, "{input}");
            assert_eq!(p.kind, kind, "{input}");
            assert_eq!(p.series, series, "{input}");
            assert_eq!(p.serial, serial, "{input}");
            assert_eq!(p.special_series, special, "{input}");
            assert_eq!(p.province.map(|p| p.code), code, "{input}");
            // The canonical characters and the display form parse back
            // to the same plate.
            assert_eq!(parse(&p.chars).as_ref(), Some(&p), "{input}");
            assert_eq!(parse(&p.display).as_ref(), Some(&p), "{input}");
        }
    }

    #[test]
    fn foreign_owner_code() {
        let p = parse("41291NG01").unwrap();
        assert_eq!(p.owner_code.as_deref(), Some("291"));
        assert_eq!(p.province.unwrap().name, "TP. Hồ Chí Minh");
        assert_eq!(parse("51G12345").unwrap().owner_code, None);
        let p = parse("51NG16633").unwrap();
        assert_eq!(p.owner_code.as_deref(), Some("166"));
        assert_eq!(p.serial, "33");
    }

    #[test]
    fn province_names_come_with_the_plate() {
        for (chars, name, former) in [
            ("95A12345", "Cần Thơ", Some("Hậu Giang")),
            ("65A12345", "Cần Thơ", None),
            ("61A12345", "TP. Hồ Chí Minh", Some("Bình Dương")),
            ("23B12345", "Tuyên Quang", Some("Hà Giang")),
            ("29A12345", "Hà Nội", None),
        ] {
            let p = parse(chars).unwrap().province.unwrap();
            assert_eq!((p.name, p.former_name), (name, former), "{chars}");
        }
    }

    #[test]
    fn invalid_plates() {
        for input in [
            "",
            "ABC",
            "51",
            "51A",
            "5912345678",
            "12345678",
            // Province codes nobody uses.
            "00A12345",
            "10A12345",
            "13A12345",
            "42A12345",
            "44A12345",
            "45A12345",
            "46A12345",
            "87A12345",
            "91A12345",
            "96A12345",
            "13KA12345",
            "96291NG01",
            // I J O Q W never stand in a domestic series; nor does Đ alone.
            "51I12345",
            "51J12345",
            "51O12345",
            "51Q12345",
            "51W12345",
            "51Đ12345",
            "59IA12345",
            "59AO12345",
            "59QA1234",
            "59AW1234",
            "59J112345",
            "59Q11234",
            // A series digit is 1-9; R only stands alone or in RM.
            "59H012345",
            "59R112345",
            "59RA12345",
            // Đ only in MĐ and TĐ; MĐ wants its digit; OCR's MD is no plate
            // until correct() makes it one.
            "29MD123456",
            "29MĐ023456",
            "29ĐA12345",
            "29MĐA12345",
            "29AĐ12345",
            "29XK112345",
            // Wrong lengths.
            "51A123",
            "51A1234567",
            "51AB123",
            "51AB123456",
            "59H1437271",
            "29MĐ1234567",
            "29MĐ1234",
            // Non-digits in the serial or province.
            "51G1234A",
            "5AG12345",
            "A1G12345",
            "51G12.3A5",
            // Foreign plates.
            "41291NX01",
            "41291GN01",
            "41291NG1",
            "41291NG0123",
            "4129NG01",
            "412911NG01",
            "41A91NG01",
            "51NG1663",
            "51NG1663345",
            "51NGX6633",
            "51NG16A33",
            "13NG16633",
            // Military plates.
            "AA123",
            "AA12345",
            "AI1234",
            "AO1234",
            "XA1234",
            "DA1234",
            "1A1234",
            "A11234",
            "AA12B4",
            // Not plate text.
            "51G+12345",
            "٥١G12345",
        ] {
            assert_eq!(parse(input), None, "{input}");
            assert!(readings(input).is_empty(), "{input}");
        }
    }

    #[test]
    fn ambiguous_readings() {
        for (input, expected) in [
            (
                "51G12345",
                vec![(Car, "51G-123.45"), (Motorbike, "51-G1 2345")],
            ),
            (
                "59H14372",
                vec![(Car, "59H-143.72"), (Motorbike, "59-H1 4372")],
            ),
            ("59H143727", vec![(Motorbike, "59-H1 437.27")]),
            ("30A1234", vec![(Car, "30A-1234")]),
            ("51LD1234", vec![(Special, "51LD-1234")]),
            ("51NG16633", vec![(Foreign, "51-NG 166-33")]),
            ("29MĐ12345", vec![(Motorbike, "29-MĐ1 2345")]),
            ("51TD12345", vec![(Motorbike, "51-TD 123.45")]),
            ("AA1234", vec![(Military, "AA-12-34")]),
            ("41291NG01", vec![(Foreign, "41-291-NG-01")]),
        ] {
            let got: Vec<_> = readings(input)
                .into_iter()
                .map(|p| (p.kind, p.display))
                .collect();
            let expected: Vec<_> = expected
                .into_iter()
                .map(|(k, d)| (k, d.to_string()))
                .collect();
            assert_eq!(got, expected, "{input}");
        }
    }

    #[test]
    fn serialises_kind_lowercase() {
        let p = parse("29MĐ123456").unwrap();
        let json = serde_json::to_value(&p).unwrap();
        assert_eq!(json["kind"], "motorbike");
        assert_eq!(json["display"], "29-MĐ1 234.56");
        assert_eq!(json["province"]["name"], "Hà Nội");
        for (kind, name) in [
            (Car, "car"),
            (Motorbike, "motorbike"),
            (Special, "special"),
            (Foreign, "foreign"),
            (Military, "military"),
        ] {
            assert_eq!(serde_json::to_value(kind).unwrap(), name);
        }
    }

    fn ones(raw: &str) -> Vec<f32> {
        vec![1.0; raw.chars().count()]
    }

    fn top(raw: &str) -> Option<Candidate> {
        correct(raw, &ones(raw), 5).into_iter().next()
    }

    #[test]
    fn corrections() {
        // (read, best valid plate, its score when every read is certain)
        for (raw, best, score) in [
            ("51A60216", "51A60216", 1.0),
            ("5IA60216", "51A60216", 0.5),
            ("S1A6O216", "51A60216", 0.25),
            ("51A6O2I6", "51A60216", 0.25),
            ("59KA1916G", "59KA19166", 0.5),
            ("59H1437Z7", "59H143727", 0.5),
            ("598123456", "59B123456", 0.5),
            ("596123456", "59G123456", 0.5),
            ("594123456", "59A123456", 0.5),
            ("597123456", "59T123456", 0.5),
            ("592123456", "59Z123456", 0.5),
            ("595123456", "59S123456", 0.5),
            ("590123456", "59D123456", 0.5),
            ("59O123456", "59D123456", 0.5),
            ("59HI43727", "59H143727", 0.5),
            ("59H1437L7", "59H143717", 0.3),
            ("5BHI43727", "58H143727", 0.25),
            ("3OA1234", "30A1234", 0.5),
            ("30A12B4", "30A1284", 0.5),
            ("30AI2B4", "30A1284", 0.25),
            ("5IG-123.45", "51G12345", 0.5),
            ("51g12345", "51G12345", 1.0),
            ("29MD123456", "29MĐ123456", 0.9),
            ("29-MD1 234.56", "29MĐ123456", 0.9),
            ("29M0131100", "29MĐ131100", 0.5),
            ("29MO131100", "29MĐ131100", 0.3),
            ("30TD12345", "30TD12345", 1.0),
            ("29MK112345", "29MK112345", 1.0),
            ("51LO12345", "51LD12345", 0.5),
            ("41291N601", "41291NG01", 0.5),
            ("41291NGO1", "41291NG01", 0.5),
            ("51NGI6633", "51NG16633", 0.5),
            ("4I29INGOI", "41291NG01", 0.5f32.powi(4)),
            ("A41234", "AA1234", 0.5),
            ("AAI234", "AA1234", 0.5),
            ("8A1234", "BA1234", 0.5),
            ("7M0001", "TM0001", 0.5),
        ] {
            let c = top(raw).unwrap_or_else(|| panic!("{raw}: no candidate"));
            assert_eq!(c.chars, best, "{raw}");
            assert!((c.score - score).abs() < 1e-6, "{raw}: {}", c.score);
        }
    }

    #[test]
    fn no_correction() {
        for raw in [
            "",
            "51",
            "MMMMMMMM",
            "51A12345678",
            "51A123",
            "XXX123456",
            "2912345678",
            "29MD1234567",
        ] {
            assert_eq!(correct(raw, &ones(raw), 5), vec![], "{raw}");
        }
    }

    #[test]
    fn the_d_variant_is_offered_beside_a_valid_plain_d() {
        // 29MD12345 is valid as it is (series MD, an ordinary two-letter
        // series); MĐ1 with a 4-digit serial is the next best reading.
        let got = correct("29MD12345", &ones("29MD12345"), 5);
        let chars: Vec<_> = got.iter().map(|c| c.chars.as_str()).collect();
        assert_eq!(&chars[..2], ["29MD12345", "29MĐ12345"]);
        assert_eq!(got[0].score, 1.0);
        assert!((got[1].score - 0.9).abs() < 1e-6);
        let got = correct("30TD12345", &ones("30TD12345"), 5);
        let chars: Vec<_> = got.iter().map(|c| c.chars.as_str()).collect();
        assert_eq!(&chars[..2], ["30TD12345", "30TĐ12345"]);
    }

    #[test]
    fn truly_ambiguous_positions_keep_several_candidates() {
        // A 1 where a series letter must stand is T or L as much as
        // either (I and J are not series letters).
        let got = correct("511123456", &ones("511123456"), 3);
        assert_eq!(got.len(), 3);
        assert!((got[0].score - 0.3).abs() < 1e-6);
        assert!((got[1].score - 0.3).abs() < 1e-6);
        let mut best: Vec<_> = got[..2].iter().map(|c| c.chars.as_str()).collect();
        best.sort();
        assert_eq!(best, ["51L123456", "51T123456"]);
        assert!(got[2].score < 0.3);
        // An unknown province code has several near neighbours.
        let got = correct("13A12345", &ones("13A12345"), 10);
        let chars: Vec<_> = got.iter().map(|c| c.chars.as_str()).collect();
        assert!(chars.contains(&"18A12345"), "{chars:?}");
        assert!(chars.contains(&"73A12345"), "{chars:?}");
        assert!(!chars.contains(&"13A12345"), "{chars:?}");
        // Both rest on a digit read as another: guesses.
        assert!(
            got.iter().all(|c| c.certainty <= DIGIT_FOR_DIGIT),
            "{got:?}"
        );
        // A character the position cannot hold is no guess to replace.
        let got = correct("51A6O216", &ones("51A6O216"), 1);
        assert_eq!((got[0].chars.as_str(), got[0].certainty), ("51A60216", 1.0));
        let got = correct("47AĐ15155", &ones("47AĐ15155"), 1);
        assert_eq!(
            got[0].chars, "47AD15155",
            "the reader's Đ where D must stand"
        );
    }

    #[test]
    fn the_quick_validity_check_agrees_with_readings() {
        // Plate-like strings from every shape, with noise: a character from
        // anywhere, one too many or too few.
        let noise: Vec<char> = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZĐ".chars().collect();
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = |n: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % n as u64) as usize
        };
        let (mut valid, mut invalid) = (0, 0);
        for _ in 0..20_000 {
            let shape = SHAPES[next(SHAPES.len())];
            assert!(shape.len() <= MAX_CHARS);
            let mut c: Vec<char> = shape
                .iter()
                .map(|allowed| {
                    let allowed: Vec<char> = allowed.chars().collect();
                    if next(10) == 0 {
                        noise[next(noise.len())]
                    } else {
                        allowed[next(allowed.len())]
                    }
                })
                .collect();
            match next(20) {
                0 => c.push(noise[next(noise.len())]),
                1 => drop(c.pop()),
                _ => {}
            }
            let text: String = c.iter().collect();
            let expected = !readings(&text).is_empty();
            assert_eq!(is_valid(&c), expected, "{text}");
            if expected { valid += 1 } else { invalid += 1 }
        }
        assert!(
            valid > 2_000 && invalid > 2_000,
            "{valid} valid, {invalid} invalid"
        );
    }

    #[test]
    fn candidates_are_valid_distinct_sorted_and_at_most_k() {
        for raw in [
            "51A60216",
            "S1A6O216",
            "59KA1916G",
            "511123456",
            "13A12345",
            "29MD12345",
            "29MD123456",
            "88888888",
            "00000000",
            "BBBBBBBBB",
            "8B1234",
            "41291NG01",
            "5555555555",
        ] {
            for k in [0, 1, 2, 3, 10, 100] {
                let got = correct(raw, &ones(raw), k);
                assert!(got.len() <= k, "{raw} {k}");
                for c in &got {
                    assert_eq!(parse(&c.chars).map(|p| p.chars), Some(c.chars.clone()));
                    assert!(c.score > 0.0 && c.score <= 1.0, "{raw}: {c:?}");
                }
                assert!(got.windows(2).all(|w| w[0].score >= w[1].score), "{raw}");
                let mut chars: Vec<_> = got.iter().map(|c| &c.chars).collect();
                chars.sort();
                chars.dedup();
                assert_eq!(chars.len(), got.len(), "{raw}");
                // A smaller k is a prefix of a larger one.
                let all = correct(raw, &ones(raw), 100);
                assert_eq!(got[..], all[..got.len()], "{raw} {k}");
            }
        }
    }

    #[test]
    fn probabilities_scale_scores() {
        let raw = "5IA60216";
        let mut probs = ones(raw);
        probs[1] = 0.8;
        probs[7] = 0.5;
        let got = correct(raw, &probs, 1);
        assert_eq!(got[0].chars, "51A60216");
        assert!((got[0].score - 0.8 * 0.5 * 0.5).abs() < 1e-6);
        // Probabilities that do not match the read are ignored.
        let got = correct(raw, &[0.1, 0.1], 1);
        assert!((got[0].score - 0.5).abs() < 1e-6);
        // Separators carry their own (ignored) probability.
        let raw = "51A-602.16";
        let probs = [1.0, 1.0, 1.0, 0.0, 0.5, 1.0, 1.0, 0.0, 1.0, 1.0];
        let got = correct(raw, &probs, 1);
        assert_eq!(got[0].chars, "51A60216");
        assert!((got[0].score - 0.5).abs() < 1e-6);
        // Out-of-range and NaN probabilities are clamped.
        let raw = "51A60216";
        let probs = [2.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, f32::NAN];
        assert_eq!(correct(raw, &probs, 1)[0].score, 0.0);
    }

    /// The OCR labels in the shared data set: every read that parses is
    /// its own best correction, and correction turns some that do not
    /// parse into plates. Skipped where the data set is absent.
    #[test]
    fn shared_ocr_labels() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../shared/data/vn_plate_crops_ocr/strings.csv");
        let Ok(csv) = std::fs::read_to_string(&path) else {
            eprintln!("skipped: no {}", path.display());
            return;
        };
        let (mut rows, mut valid, mut corrected) = (0, 0, 0);
        for line in csv.lines().skip(1) {
            let Some(text) = line.split(',').nth(4) else {
                continue;
            };
            rows += 1;
            if parse(text).is_some() {
                valid += 1;
                assert_eq!(top(text).unwrap().chars, parse(text).unwrap().chars);
            } else if top(text).is_some() {
                corrected += 1;
            }
        }
        eprintln!("{rows} reads: {valid} valid, {corrected} more after correction");
        assert!(rows > 1900);
        assert!(valid * 100 > rows * 80, "{valid} of {rows}");
        assert!(corrected > 0);
    }
}
