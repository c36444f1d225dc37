//! `Range` header values and file sizes through `mediavault_api::parse_range`.
//!
//! Any header: no panic, and a `Partial` range is non-empty and inside the
//! file. Headers built from parts (`bytes=a-b`, `a-`, `-n`, with optional
//! blanks and leading zeros): the answer equals what RFC 9110 §14 and the
//! parser's documented choices say, computed from the parts, not by parsing.

#![no_main]

use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mediavault_api::{RangeRequest, parse_range};

// Input: `r`, the size as 8 little-endian bytes, then the header text; or
// any other first byte, then the parts of a header (see `built_header`).
fuzz_target!(|data: &[u8]| {
    match data.split_first() {
        Some((b'r', rest)) if rest.len() >= 8 => {
            let size = u64::from_le_bytes(rest[..8].try_into().expect("8 bytes"));
            if let Ok(header) = std::str::from_utf8(&rest[8..]) {
                assert_within_file(parse_range(Some(header), size), size);
            }
        }
        Some((_, rest)) => {
            let _ = check_built(&mut Unstructured::new(rest));
        }
        None => assert_eq!(parse_range(None, 0), RangeRequest::Full),
    }
});

fn check_built(u: &mut Unstructured) -> Result<()> {
    let size = file_size(u)?;
    let (header, expected) = built_header(u, size)?;
    let got = parse_range(Some(&header), size);
    assert_eq!(got, expected, "header {header:?}, size {size}");
    assert_within_file(got, size);
    Ok(())
}

/// Sizes near zero and near the ends of u64 are where off-by-ones live.
fn file_size(u: &mut Unstructured) -> Result<u64> {
    Ok(match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=16)?,
        1 => u64::MAX - u.int_in_range(0..=16)?,
        _ => u.arbitrary()?,
    })
}

fn assert_within_file(request: RangeRequest, size: u64) {
    if let RangeRequest::Partial(range) = request {
        assert!(
            range.start < range.end && range.end <= size,
            "range {range:?} for size {size}"
        );
    }
}

/// A number as the header writes it: usually near `size`, sometimes with
/// leading zeros, sometimes too long for u64 (`None`: the parser cannot
/// read it, so the header is not understood).
fn number(u: &mut Unstructured, size: u64) -> Result<(String, Option<u64>)> {
    let value: u64 = match u.int_in_range(0..=3u8)? {
        0 => u.int_in_range(0..=16)?,
        1 => size
            .saturating_add(u.int_in_range(0..=4)?)
            .saturating_sub(u.int_in_range(0..=4)?),
        _ => u.arbitrary()?,
    };
    let zeros = "0".repeat(u.int_in_range(0..=2)?);
    if u.ratio(1, 16)? {
        // At least 10^22: more than u64 holds.
        return Ok((format!("{zeros}{}0000000000000000000000", value.max(1)), None));
    }
    Ok((format!("{zeros}{value}"), Some(value)))
}

/// Blanks the parser tolerates around the parts.
fn blank(u: &mut Unstructured) -> Result<&'static str> {
    Ok(*u.choose(&["", "", "", " ", "\t", "  "])?)
}

/// A header from parts, and the answer those parts call for.
fn built_header(u: &mut Unstructured, size: u64) -> Result<(String, RangeRequest)> {
    use RangeRequest::{Full, Partial, Unsatisfiable};
    let (b0, b1, b2, b3) = (blank(u)?, blank(u)?, blank(u)?, blank(u)?);
    let form = u.int_in_range(0..=2u8)?;
    let (spec, expected) = match form {
        // bytes=a-b: inclusive; a > b is invalid and ignored (whole file);
        // a past the end is unsatisfiable; b past the end is clamped.
        0 => {
            let (a_text, a) = number(u, size)?;
            let (b_text, b) = number(u, size)?;
            let expected = match (a, b) {
                (Some(a), Some(b)) if a > b => Full,
                (Some(a), Some(_)) if a >= size => Unsatisfiable,
                (Some(a), Some(b)) => Partial(a..if b >= size { size } else { b + 1 }),
                _ => Full,
            };
            (format!("{a_text}{b1}-{b2}{b_text}"), expected)
        }
        // bytes=a-: from a to the end.
        1 => {
            let (a_text, a) = number(u, size)?;
            let expected = match a {
                Some(a) if a >= size => Unsatisfiable,
                Some(a) => Partial(a..size),
                None => Full,
            };
            (format!("{a_text}{b1}-{b2}"), expected)
        }
        // bytes=-n: the last n bytes; none of an empty file, nor zero bytes
        // of any file, can be served.
        _ => {
            let (n_text, n) = number(u, size)?;
            let expected = match n {
                Some(0) => Unsatisfiable,
                Some(_) if size == 0 => Unsatisfiable,
                Some(n) if n >= size => Partial(0..size),
                Some(n) => Partial(size - n..size),
                None => Full,
            };
            (format!("{b1}-{b2}{n_text}"), expected)
        }
    };
    Ok((format!("{b0}bytes={spec}{b3}"), expected))
}
