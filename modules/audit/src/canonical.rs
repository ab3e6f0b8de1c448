//! Canonical JSON: the JSON Canonicalization Scheme (RFC 8785, "JCS").
//!
//! The audit chain hashes and the checkpoint signatures are computed over
//! bytes, so the same JSON value must always give the same bytes, in Atlas
//! and in any other program that checks a chain. JCS is a published
//! standard with implementations in many languages:
//!
//! - no whitespace between tokens;
//! - object members sorted by their names compared as arrays of UTF-16 code
//!   units (for ASCII names, plain byte order);
//! - strings in double quotes, escaping only `"` as `\"`, `\` as `\\`, the
//!   controls U+0008, U+0009, U+000A, U+000C, U+000D as `\b \t \n \f \r`, and
//!   other controls below U+0020 as `\u00xx` (lowercase hex); every other
//!   character, non-ASCII included, as its UTF-8 bytes;
//! - numbers as ECMAScript's `Number.prototype.toString` writes them
//!   (`1`, `-0.5`, `1e+21`, `1e-7`).
//!
//! One note: JSON integers beyond ±2^53 (which JCS would round through a
//! double) are written exactly in decimal. Atlas events never carry any.

use serde_json::{Number, Value};

/// The canonical text of `value`.
pub fn to_canonical_string(value: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, value);
    out
}

fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => write_number(out, n),
        Value::String(s) => write_string(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut members: Vec<(&String, &Value)> = map.iter().collect();
            members.sort_by(|(a, _), (b, _)| {
                // For ASCII names UTF-16 order is byte order.
                if a.is_ascii() && b.is_ascii() {
                    a.as_bytes().cmp(b.as_bytes())
                } else {
                    a.encode_utf16().cmp(b.encode_utf16())
                }
            });
            out.push('{');
            for (i, (name, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_string(out, name);
                out.push(':');
                write_value(out, member);
            }
            out.push('}');
        }
    }
}

fn write_string(out: &mut String, s: &str) {
    out.push('"');
    // Runs of characters written as they are go in as one slice; only the
    // few that JCS escapes (all ASCII, so never inside a longer UTF-8
    // sequence) end a run.
    let mut start = 0;
    for (i, byte) in s.bytes().enumerate() {
        if byte >= 0x20 && byte != b'"' && byte != b'\\' {
            continue;
        }
        out.push_str(&s[start..i]);
        match byte {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x08 => out.push_str("\\b"),
            b'\t' => out.push_str("\\t"),
            b'\n' => out.push_str("\\n"),
            0x0c => out.push_str("\\f"),
            b'\r' => out.push_str("\\r"),
            control => out.push_str(&format!("\\u{control:04x}")),
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

fn write_number(out: &mut String, n: &Number) {
    if let Some(i) = n.as_i64() {
        out.push_str(&i.to_string());
    } else if let Some(u) = n.as_u64() {
        out.push_str(&u.to_string());
    } else if let Some(f) = n.as_f64() {
        out.push_str(&ecmascript_number(f));
    }
}

/// `Number.prototype.toString()` for a finite double (ECMA-262 §6.1.6.1.20).
fn ecmascript_number(x: f64) -> String {
    if x == 0.0 || !x.is_finite() {
        // JSON has no NaN or infinities; -0 is written as 0.
        return "0".into();
    }
    let sign = if x < 0.0 { "-" } else { "" };
    // Rust's `{:e}` gives the shortest digits that round-trip: "d.ddde±x".
    let sci = format!("{:e}", x.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((sci.as_str(), "0"));
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let k = digits.len() as i64;
    // x = 0.digits × 10^n
    let n = exponent.parse::<i64>().unwrap_or(0) + 1;
    let body = if k <= n && n <= 21 {
        format!("{digits}{}", "0".repeat((n - k) as usize))
    } else if 0 < n && n <= 21 {
        format!("{}.{}", &digits[..n as usize], &digits[n as usize..])
    } else if -6 < n && n <= 0 {
        format!("0.{}{digits}", "0".repeat((-n) as usize))
    } else {
        let e = n - 1;
        let e = if e >= 0 { format!("+{e}") } else { e.to_string() };
        if k == 1 {
            format!("{digits}e{e}")
        } else {
            format!("{}.{}e{e}", &digits[..1], &digits[1..])
        }
    };
    format!("{sign}{body}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn members_are_sorted_and_whitespace_is_gone() {
        let v = json!({"b": [1, {"z": null, "a": true}], "a": "x", "A": 1});
        assert_eq!(
            to_canonical_string(&v),
            r#"{"A":1,"a":"x","b":[1,{"a":true,"z":null}]}"#
        );
    }

    #[test]
    fn strings_escape_only_what_jcs_escapes() {
        let v = json!("q\"b\\ \n\t\u{1} é € 😀 \u{7f} </script>");
        assert_eq!(
            to_canonical_string(&v),
            "\"q\\\"b\\\\ \\n\\t\\u0001 é € 😀 \u{7f} </script>\""
        );
    }

    #[test]
    fn every_ascii_character_is_escaped_as_jcs_says() {
        // JCS escapes exactly what serde_json's writer escapes, the same way.
        for byte in 0u8..0x80 {
            let c = char::from(byte);
            for text in [format!("{c}"), format!("é{c}😀"), format!("{c}ab{c}")] {
                assert_eq!(
                    to_canonical_string(&json!(text)),
                    serde_json::to_string(&text).expect("serialize"),
                    "byte {byte:#04x} in {text:?}"
                );
            }
        }
    }

    #[test]
    fn members_sort_by_utf16_code_units() {
        // U+FF61 sorts before U+1F600 in UTF-8 byte order, after it in UTF-16.
        let v = json!({"\u{ff61}": 1, "\u{1f600}": 2});
        assert_eq!(to_canonical_string(&v), "{\"\u{1f600}\":2,\"\u{ff61}\":1}");
    }

    #[test]
    fn numbers_follow_ecmascript() {
        // Examples from RFC 8785 appendix B.
        let cases: &[(f64, &str)] = &[
            (1.0, "1"),
            (-1.5, "-1.5"),
            (0.1, "0.1"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1e-7, "1e-7"),
            (0.000001, "0.000001"),
            (123456789012345680000.0, "123456789012345680000"),
            (4.5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (-0.0, "0"),
            (333333333.3333333, "333333333.3333333"),
        ];
        for (x, want) in cases {
            assert_eq!(ecmascript_number(*x), *want, "{x}");
        }
        assert_eq!(to_canonical_string(&json!([42, -7, 1.25])), "[42,-7,1.25]");
    }
}
