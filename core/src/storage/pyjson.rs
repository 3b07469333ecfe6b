//! JSON text exactly as Python's `json.dumps` writes it with its default arguments: `", "`
//! and `": "` between items, every character outside printable ASCII escaped as `\uXXXX`
//! (lowercase hex, astral characters as surrogate pairs), and floats as `repr(float)` prints
//! them.

use std::io;

use serde::Serialize;
use serde_json::ser::Formatter;

/// Serializes `value` as Python's `json.dumps(value)` would write the same JSON value.
///
/// Floats that are not finite are written as `null` (serde_json's rule): Python would write
/// `NaN` or `Infinity`, which are not JSON.
pub(crate) fn to_string<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::with_capacity(256);
    let mut serializer = serde_json::Serializer::with_formatter(&mut out, PythonFormatter);
    value.serialize(&mut serializer)?;
    // The formatter writes ASCII only.
    String::from_utf8(out).map_err(<serde_json::Error as serde::ser::Error>::custom)
}

/// The `serde_json` formatter behind [`to_string`].
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PythonFormatter;

impl Formatter for PythonFormatter {
    fn write_f32<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f32) -> io::Result<()> {
        // The `f32`'s own shortest digits: what a reader of the text gets back is the `f32`.
        let digits = closest_shortest(
            format!("{value:e}"),
            |n| format!("{value:.n$e}"),
            |text| text.parse::<f32>().is_ok_and(|back| back == value),
        );
        writer.write_all(python_repr(&digits).as_bytes())
    }

    fn write_f64<W: ?Sized + io::Write>(&mut self, writer: &mut W, value: f64) -> io::Result<()> {
        writer.write_all(python_repr(&shortest_f64(value)).as_bytes())
    }

    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // serde_json has already escaped `"`, `\` and the control characters below 0x20 as
        // Python does; what remains is DEL and everything beyond ASCII.
        let mut start = 0;
        for (at, c) in fragment.char_indices() {
            if (' '..='~').contains(&c) {
                continue;
            }
            writer.write_all(&fragment.as_bytes()[start..at])?;
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                write!(writer, "\\u{unit:04x}")?;
            }
            start = at + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { writer.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, writer: &mut W) -> io::Result<()> {
        writer.write_all(b": ")
    }
}

/// The shortest digits that read back as `value`, in Rust's exponent form (`-1.25e3`), and
/// of those the closest to `value`, a tie going to the even digit, as Python's `repr` picks
/// them (Rust's `{:e}` picks the same shortest length but may round a tie up).
fn shortest_f64(value: f64) -> String {
    closest_shortest(
        format!("{value:e}"),
        |n| format!("{value:.n$e}"),
        |text| text.parse::<f64>().is_ok_and(|back| back.to_bits() == value.to_bits()),
    )
}

/// `shortest` (Rust's `{:e}`), or the correctly rounded text with as many digits
/// (`exact(digits after the point)`) when that one also reads back (`reads_back`).
fn closest_shortest(
    shortest: String,
    exact: impl FnOnce(usize) -> String,
    reads_back: impl FnOnce(&str) -> bool,
) -> String {
    let mantissa = shortest.split_once('e').map_or(shortest.as_str(), |(m, _)| m);
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    if digits < 2 {
        return shortest;
    }
    let closest = exact(digits - 1);
    if closest != shortest && reads_back(&closest) { closest } else { shortest }
}

/// Python's `repr` of a finite float, from Rust's shortest exponent form (`{:e}`, such as
/// `-1.25e3`): the same shortest round-trip digits, laid out as Python lays them out. With
/// the digits `d1 d2 .. dn` and the value `0.d1d2..dn × 10^p`, Python writes `d1.d2..dne±XX`
/// (at least two exponent digits, no `.0`) when `p <= -4` or `p > 16`, and positional
/// notation with at least one digit after the point otherwise.
fn python_repr(exp_form: &str) -> String {
    let (negative, body) = match exp_form.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, exp_form),
    };
    let (mantissa, exponent) = body.split_once('e').unwrap_or((body, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let digits: String = mantissa.chars().filter(char::is_ascii_digit).collect();
    let digits = match digits.trim_end_matches('0') {
        "" => "0",
        trimmed => trimmed,
    };
    let mut out = String::with_capacity(digits.len() + 8);
    if negative {
        out.push('-');
    }
    if digits.bytes().all(|d| d == b'0') {
        out.push_str("0.0");
        return out;
    }
    let point = exponent + 1; // the value is 0.digits × 10^point
    let n = i32::try_from(digits.len()).unwrap_or(i32::MAX);
    if point <= -4 || point > 16 {
        out.push_str(&digits[..1]);
        if digits.len() > 1 {
            out.push('.');
            out.push_str(&digits[1..]);
        }
        let sign = if exponent < 0 { '-' } else { '+' };
        out.push_str(&format!("e{sign}{:02}", exponent.unsigned_abs()));
    } else if point <= 0 {
        out.push_str("0.");
        out.extend(std::iter::repeat_n('0', point.unsigned_abs() as usize));
        out.push_str(digits);
    } else if point < n {
        let point = point.unsigned_abs() as usize;
        out.push_str(&digits[..point]);
        out.push('.');
        out.push_str(&digits[point..]);
    } else {
        out.push_str(digits);
        out.extend(std::iter::repeat_n('0', (point - n).unsigned_abs() as usize));
        out.push_str(".0");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn repr(value: f64) -> String {
        python_repr(&shortest_f64(value))
    }

    #[test]
    #[allow(clippy::excessive_precision)] // the exact doubles are the point
    fn floats_print_as_python_repr() {
        let cases: &[(f64, &str)] = &[
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1.0, "1.0"),
            (-2.5, "-2.5"),
            (0.1, "0.1"),
            (1764066000.25, "1764066000.25"),
            (1e15, "1000000000000000.0"),
            (1e16, "1e+16"),
            (1.5e16, "1.5e+16"),
            (123456789012345680.0, "1.2345678901234568e+17"),
            (0.0001, "0.0001"),
            (0.00012, "0.00012"),
            (1e-5, "1e-05"),
            (1e-7, "1e-07"),
            (-1.5e-7, "-1.5e-07"),
            (1e300, "1e+300"),
            (5e-324, "5e-324"),
            (f64::MAX, "1.7976931348623157e+308"),
            (100.0, "100.0"),
            (9007199254740993.0, "9007199254740992.0"),
            // A tie between two shortest candidates goes to the even digit, as in Python.
            (697446808919616.25, "697446808919616.2"),
        ];
        for (value, expected) in cases {
            assert_eq!(repr(*value), *expected, "{value:?}");
        }
        assert_eq!(python_repr(&format!("{:e}", 0.1f32)), "0.1");
    }

    #[test]
    fn text_is_python_json_dumps() {
        let value =
            serde_json::json!({"a": [1, 2.5, null, true], "b": "é\u{1F600}\u{7f}\"\\\n\u{1}/"});
        assert_eq!(
            to_string(&value).unwrap(),
            r#"{"a": [1, 2.5, null, true], "b": "\u00e9\ud83d\ude00\u007f\"\\\n\u0001/"}"#
        );
        assert_eq!(to_string(&f64::NAN).unwrap(), "null");
        assert_eq!(to_string(&serde_json::json!({})).unwrap(), "{}");
        assert_eq!(to_string(&serde_json::json!([])).unwrap(), "[]");
    }
}
