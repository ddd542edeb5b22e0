//! Plate reading: what a string of plate characters means.
//!
//! For now this holds the display form of Vietnamese plates (Circular
//! 79/2024/TT-BCA); the full grammar (province codes, series, kinds,
//! colours, confusion correction) and multi-frame voting grow here.

/// The display form an officer writes: `51G12345` → `51G-123.45`,
/// `59H143727` → `59-H1 437.27`, `59KA19166` → `59-KA 191.66`,
/// `30A1234` → `30A-1234`. Strings that do not look like a plate are
/// returned unchanged.
pub fn display_text(chars: &str) -> String {
    let b = chars.as_bytes();
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    if b.len() < 7 || !digits(&b[..2]) || !b[2].is_ascii_uppercase() {
        return chars.to_string();
    }
    let province = &chars[..2];
    // The serial is the trailing 4 or 5 digits; what sits between the
    // province and the serial is the series.
    let serial_len = if b.len() >= 8 && digits(&b[b.len() - 5..]) {
        5
    } else {
        4
    };
    if !digits(&b[b.len() - serial_len..]) {
        return chars.to_string();
    }
    let series = &chars[2..chars.len() - serial_len];
    let serial = &chars[chars.len() - serial_len..];
    let serial = if serial_len == 5 {
        format!("{}.{}", &serial[..3], &serial[3..])
    } else {
        serial.to_string()
    };
    match series.len() {
        // Cars: one series letter, written against the province.
        1 => format!("{province}{series}-{serial}"),
        // Motorbikes: two-character series (letter+digit or two letters)
        // on the top line, the serial on the bottom line.
        2 if series.as_bytes()[0].is_ascii_uppercase() => format!("{province}-{series} {serial}"),
        _ => chars.to_string(),
    }
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
            ("ABC", "ABC"),
            ("", ""),
            ("5912345678", "5912345678"),
        ] {
            assert_eq!(display_text(chars), text, "{chars}");
        }
    }
}
