//! A tiny 5×7 bitmap font for the test pattern's burned-in text.
//!
//! Only the characters the pattern draws are defined: digits, `: . - #`, space and the letters of
//! `UTC` and `FRAME`. Each glyph is 7 rows, top first; in each row bit 4 is the leftmost of the
//! 5 columns. Glyphs are laid out in 6×8 cells (one blank column and one blank row of spacing).

/// Glyph width in font pixels.
pub const GLYPH_WIDTH: usize = 5;
/// Glyph height in font pixels.
pub const GLYPH_HEIGHT: usize = 7;
/// Horizontal advance per character in font pixels (glyph plus one column of spacing).
pub const CELL_WIDTH: usize = GLYPH_WIDTH + 1;
/// Vertical advance per line in font pixels (glyph plus one row of spacing).
pub const CELL_HEIGHT: usize = GLYPH_HEIGHT + 1;

/// One glyph: 7 rows of 5 bits, bit 4 = leftmost column.
pub type Glyph = [u8; GLYPH_HEIGHT];

const BLANK: Glyph = [0; GLYPH_HEIGHT];
/// Drawn for characters the font lacks, so a missing glyph is visible rather than silent.
const TOFU: Glyph = [0x1F, 0x11, 0x11, 0x11, 0x11, 0x11, 0x1F];

/// The glyph for `c`; a hollow box for characters the font does not have.
pub fn glyph(c: char) -> &'static Glyph {
    match c {
        '0' => &[0x0E, 0x11, 0x13, 0x15, 0x19, 0x11, 0x0E],
        '1' => &[0x04, 0x0C, 0x04, 0x04, 0x04, 0x04, 0x0E],
        '2' => &[0x0E, 0x11, 0x01, 0x02, 0x04, 0x08, 0x1F],
        '3' => &[0x1F, 0x02, 0x04, 0x02, 0x01, 0x11, 0x0E],
        '4' => &[0x02, 0x06, 0x0A, 0x12, 0x1F, 0x02, 0x02],
        '5' => &[0x1F, 0x10, 0x1E, 0x01, 0x01, 0x11, 0x0E],
        '6' => &[0x06, 0x08, 0x10, 0x1E, 0x11, 0x11, 0x0E],
        '7' => &[0x1F, 0x01, 0x02, 0x04, 0x08, 0x08, 0x08],
        '8' => &[0x0E, 0x11, 0x11, 0x0E, 0x11, 0x11, 0x0E],
        '9' => &[0x0E, 0x11, 0x11, 0x0F, 0x01, 0x02, 0x0C],
        ':' => &[0x00, 0x0C, 0x0C, 0x00, 0x0C, 0x0C, 0x00],
        '.' => &[0x00, 0x00, 0x00, 0x00, 0x00, 0x0C, 0x0C],
        '-' => &[0x00, 0x00, 0x00, 0x1F, 0x00, 0x00, 0x00],
        '#' => &[0x0A, 0x0A, 0x1F, 0x0A, 0x1F, 0x0A, 0x0A],
        ' ' => &BLANK,
        'A' => &[0x0E, 0x11, 0x11, 0x11, 0x1F, 0x11, 0x11],
        'C' => &[0x0E, 0x11, 0x10, 0x10, 0x10, 0x11, 0x0E],
        'E' => &[0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F],
        'F' => &[0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x10],
        'M' => &[0x11, 0x1B, 0x15, 0x15, 0x11, 0x11, 0x11],
        'R' => &[0x1E, 0x11, 0x11, 0x1E, 0x14, 0x12, 0x11],
        'T' => &[0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04],
        'U' => &[0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E],
        _ => &TOFU,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every glyph must fit in 5 columns, or drawing would spill into the next character.
    #[test]
    fn glyphs_fit_in_five_columns() {
        for c in "0123456789:.-# ACEFMRTU?".chars() {
            assert!(glyph(c).iter().all(|row| row & !0x1F == 0), "{c:?}");
        }
    }

    /// Digits must be told apart by eye, so no two may share a bitmap.
    #[test]
    fn digits_are_distinct() {
        let digits: Vec<_> = ('0'..='9').map(glyph).collect();
        for (i, a) in digits.iter().enumerate() {
            for b in &digits[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn unknown_characters_draw_a_visible_box() {
        assert_eq!(glyph('?'), &TOFU);
        assert_eq!(glyph(' '), &BLANK);
    }
}
