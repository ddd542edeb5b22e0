//! Plate reading: what a string of plate characters means.
//!
//! [`grammar`] holds the plate formats of Circular 79/2024/TT-BCA (kinds,
//! series, display forms) and the position-aware correction of OCR
//! confusions; [`provinces`] the locality codes and the names of their
//! provinces after the 2025 merger; [`colour`] the plate's background
//! colour, which says who owns the vehicle. Multi-frame voting grows here.

pub mod colour;
pub mod grammar;
pub mod provinces;
pub mod vote;

pub use colour::{PlateColour, plate_colour};
pub use grammar::{Candidate, Plate, PlateKind, correct, parse, readings};
pub use provinces::{Province, province};

/// The display form an officer writes: `51G12345` → `51G-123.45`,
/// `59H143727` → `59-H1 437.27`, `59KA19166` → `59-KA 191.66`,
/// `30A1234` → `30A-1234`, `29MĐ123456` → `29-MĐ1 234.56`, `AA1234` →
/// `AA-12-34`. Strings that are no valid plate are returned unchanged,
/// so that a misread never looks like a checked plate.
pub fn display_text(chars: &str) -> String {
    parse(chars).map_or_else(|| chars.to_string(), |p| p.display)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_forms() {
        for (chars, text) in [
            ("51G12345", "51G-123.45"),
            ("95A12345", "95A-123.45"),
            ("30A1234", "30A-1234"),
            ("59H143727", "59-H1 437.27"),
            ("59KA19166", "59-KA 191.66"),
            ("59X312345", "59-X3 123.45"),
            ("47AD15155", "47-AD 151.55"),
            ("59H14372", "59H-143.72"),
            ("59KA1916", "59-KA 1916"),
            ("29MĐ123456", "29-MĐ1 234.56"),
            ("51LD12345", "51LD-123.45"),
            ("51NG16633", "51-NG 166-33"),
            ("51R12345", "51R-123.45"),
            ("41291NG01", "41-291-NG-01"),
            ("AA1234", "AA-12-34"),
            // No valid plate: unchanged.
            ("ABC", "ABC"),
            ("", ""),
            ("5912345678", "5912345678"),
            ("13A12345", "13A12345"),
            ("51I12345", "51I12345"),
            ("29MD123456", "29MD123456"),
        ] {
            assert_eq!(display_text(chars), text, "{chars}");
        }
    }
}
