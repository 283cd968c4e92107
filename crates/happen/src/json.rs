//! JSON written by hand where serde_json is slow for happen's shapes, byte for byte what
//! serde_json writes.
//!
//! serde_json looks up every byte of every string in its escape table (about nine
//! instructions a byte); an event on the wire is mostly strings that need no escape at all
//! (ids, node ids, the type, text payloads). Here a string is checked eight bytes at a time
//! and copied as it is when nothing in it needs escaping; a string that does is handed to
//! serde_json, so the output never differs from `serde_json::to_writer`'s.

use serde_json::Value;

/// Drops `v`. A null, a boolean or a number (what a unit handler answers, what a recycled
/// event's payload is reset to, a counter's payload) owns nothing, so it is dropped without
/// the out-of-line call to `Value`'s drop (~18 instructions, several times per event). A
/// number owns a string under serde_json's `arbitrary_precision` feature (which another
/// crate of the build may turn on): it is then dropped as usual.
#[inline(always)]
pub(crate) fn drop_value(v: Value) {
    let owns_nothing = match v {
        Value::Null | Value::Bool(_) => true,
        Value::Number(_) => !std::mem::needs_drop::<serde_json::Number>(),
        _ => false,
    };
    if owns_nothing {
        std::mem::forget(v);
    } else {
        drop(v);
    }
}

/// Appends `s` as a JSON string, as serde_json writes it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        escaped(out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends a string that needs escaping, through serde_json (which escapes `"`, `\` and the
/// control characters below U+0020, and nothing else).
#[cold]
fn escaped(out: &mut Vec<u8>, s: &str) {
    // writing a `str` into a `Vec` cannot fail
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Appends `v` as serde_json writes it (compact; an object's keys in its map's order).
pub(crate) fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        // integers and floats exactly as serde_json prints them (itoa, ryu)
        Value::Number(n) => {
            let _ = serde_json::to_writer(&mut *out, n);
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_value(out, item);
            }
            out.push(b']');
        }
        Value::Object(map) => {
            out.push(b'{');
            for (i, (k, item)) in map.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, k);
                out.push(b':');
                write_value(out, item);
            }
            out.push(b'}');
        }
    }
}

/// Appends `n` in decimal.
pub(crate) fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

/// Does any byte of `b` need an escape in a JSON string: `"`, `\` or below 0x20?
fn needs_escape(b: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    const QUOTE: u64 = u64::from_ne_bytes([b'"'; 8]);
    const BACKSLASH: u64 = u64::from_ne_bytes([b'\\'; 8]);
    const SPACE: u64 = u64::from_ne_bytes([0x20; 8]);
    // Per word: "some byte is zero" is `(x - 0x01..) & !x & 0x80..` != 0, and "some byte is
    // below n" (n <= 0x80) is `(x - n..) & !x & 0x80..` != 0. Both are exact as booleans
    // (a borrow only ever crosses from a byte that already matched); bytes of 0x80 and above
    // (UTF-8 beyond ASCII) never match.
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGH;
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_ne_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        if (x.wrapping_sub(SPACE) & !x & HIGH) | zero(x ^ QUOTE) | zero(x ^ BACKSLASH) != 0 {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&c| c < 0x20 || c == b'"' || c == b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn naive(b: &[u8]) -> bool {
        b.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\')
    }

    #[test]
    fn the_word_check_agrees_with_the_byte_check() {
        // every length up to three words, with each interesting byte at each position, over
        // backgrounds of plain ASCII and of bytes above 0x7f
        let interesting = [
            0x00, 0x01, 0x1f, 0x20, 0x21, 0x22, 0x23, 0x5b, 0x5c, 0x5d, 0x7e, 0x7f, 0x80, 0x9f,
            0xa2, 0xdc, 0xff,
        ];
        for background in [b'a', 0x80, 0xff, 0x21] {
            for len in 0..=24 {
                let mut b = vec![background; len];
                assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                for i in 0..len {
                    for &c in &interesting {
                        b[i] = c;
                        assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                        // and with a second one further on (a borrow from an earlier match)
                        for j in i + 1..len {
                            for &d in &interesting {
                                b[j] = d;
                                assert_eq!(needs_escape(&b), naive(&b), "{b:?}");
                            }
                            b[j] = background;
                        }
                    }
                    b[i] = background;
                }
            }
        }
    }

    #[test]
    fn strings_are_written_as_serde_json_writes_them() {
        let mut strings: Vec<String> = [
            "",
            "plain",
            "a\"quote",
            "back\\slash",
            "tab\tand\nnewline\r",
            "\u{0}\u{1}\u{1f} \u{7f}",
            "ünïcödé and emoji 🎉",
            "line\u{2028}separator",
            "exactly8",
            "sixteen bytes!!!",
        ]
        .map(String::from)
        .to_vec();
        strings.extend((0u8..0x80).map(|c| format!("abcdefg{}hijklmn", c as char)));
        for s in strings {
            let mut out = Vec::new();
            write_str(&mut out, &s);
            assert_eq!(out, serde_json::to_vec(&s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn values_are_written_as_serde_json_writes_them() {
        let values = [
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(-1),
            json!(u64::MAX),
            json!(i64::MIN),
            json!(1.5),
            json!(-0.0),
            json!(1e300),
            json!(0.1),
            json!("a".repeat(128)),
            json!([]),
            json!({}),
            json!([1, "two", [3.0, {"four": null}], {"a\"b": "c\\d", "é": [true]}]),
            json!({"z": 1, "a": {"nested": {"deeper": ["x\ny", 2, -3.25e-10]}}, "m": ""}),
        ];
        for v in values {
            let mut out = Vec::new();
            write_value(&mut out, &v);
            assert_eq!(out, serde_json::to_vec(&v).unwrap(), "{v}");
        }
    }

    #[test]
    fn numbers_in_decimal() {
        for n in [0, 9, 10, 12_345, u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(out, n.to_string().as_bytes());
        }
    }
}
