//! Python's `repr(str)` for key parts: quoting, escapes, and which characters Python considers
//! printable.

use std::fmt::Write as _;

/// Writes `s` as Python 3's `repr(str)` does: single quotes unless the text holds a single quote
/// and no double quote; backslash escapes for the quote, backslash, `\t`, `\n`, `\r`; `\xNN`,
/// `\uNNNN` or `\UNNNNNNNN` for characters Python does not consider printable; everything else
/// kept as it is.
pub(super) fn write_python_str(s: &str, out: &mut String) {
    let quote = if s.contains('\'') && !s.contains('"') { '"' } else { '\'' };
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if !is_python_printable(c) => {
                let code = u32::from(c);
                let _ = if code < 0x100 {
                    write!(out, "\\x{code:02x}")
                } else if code < 0x10000 {
                    write!(out, "\\u{code:04x}")
                } else {
                    write!(out, "\\U{code:08x}")
                };
            }
            c => out.push(c),
        }
    }
    out.push(quote);
}

/// Python's `str.isprintable()` for one character: false for the categories Cc, Cf, Co, Zl, Zp
/// and Zs (space excepted). Unassigned code points (Cn) are not tabulated here and count as
/// printable; Python escapes them, so keys holding unassigned code points may print differently.
fn is_python_printable(c: char) -> bool {
    let code = u32::from(c);
    if (0x20..0x7f).contains(&code) {
        return true;
    }
    // Noncharacters (U+FDD0..U+FDEF and the last two code points of every plane) are
    // permanently unassigned, so Python escapes them too.
    if (0xfdd0..=0xfdef).contains(&code) || code & 0xfffe == 0xfffe {
        return false;
    }
    !NON_PRINTABLE.iter().any(|&(lo, hi)| (lo..=hi).contains(&code))
}

/// Ranges of Cc, Cf, Co, Zl, Zp and Zs (without U+0020), from the Unicode character database.
const NON_PRINTABLE: &[(u32, u32)] = &[
    (0x0000, 0x001f),
    (0x007f, 0x00a0),
    (0x00ad, 0x00ad),
    (0x0600, 0x0605),
    (0x061c, 0x061c),
    (0x06dd, 0x06dd),
    (0x070f, 0x070f),
    (0x0890, 0x0891),
    (0x08e2, 0x08e2),
    (0x1680, 0x1680),
    (0x180e, 0x180e),
    (0x2000, 0x200f),
    (0x2028, 0x202f),
    (0x205f, 0x2064),
    (0x2066, 0x206f),
    (0x3000, 0x3000),
    (0xe000, 0xf8ff),
    (0xfeff, 0xfeff),
    (0xfff9, 0xfffb),
    (0x110bd, 0x110bd),
    (0x110cd, 0x110cd),
    (0x13430, 0x1343f),
    (0x1bca0, 0x1bca3),
    (0x1d173, 0x1d17a),
    (0xe0001, 0xe0001),
    (0xe0020, 0xe007f),
    (0xf0000, 0xffffd),
    (0x100000, 0x10fffd),
];
