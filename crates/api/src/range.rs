//! `Range: bytes=…` (RFC 9110 §14): one range is served as 206; several, or
//! a header this parser does not understand, get the whole file, as the RFC
//! allows; a range that starts past the end is 416. `If-Range` (§13.1.5)
//! lets a range through only for the file it names.

use std::ops::Range;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeRequest {
    Full,
    Partial(Range<u64>),
    Unsatisfiable,
}

/// What a `Range` header value asks of a file of `size` bytes; a `Partial`
/// range is never empty and lies within the file.
pub fn parse(header: Option<&str>, size: u64) -> RangeRequest {
    // The unit is case-insensitive.
    let Some(spec) = header.and_then(|h| {
        let h = h.trim();
        h.get(..6)
            .filter(|unit| unit.eq_ignore_ascii_case("bytes="))
            .map(|_| &h[6..])
    }) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((first, last)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    // Digits beyond u64 still make a number: one larger than any file.
    let number = |s: &str| -> Option<u64> {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).then(|| s.parse().unwrap_or(u64::MAX))
    };
    match (first.trim().is_empty(), last.trim().is_empty()) {
        // bytes=-n: the last n bytes.
        (true, false) => match number(last) {
            Some(0) => RangeRequest::Unsatisfiable,
            Some(_) if size == 0 => RangeRequest::Unsatisfiable,
            Some(n) => RangeRequest::Partial(size.saturating_sub(n)..size),
            None => RangeRequest::Full,
        },
        // bytes=a-: from a to the end.
        (false, true) => match number(first) {
            Some(a) if a >= size => RangeRequest::Unsatisfiable,
            Some(a) => RangeRequest::Partial(a..size),
            None => RangeRequest::Full,
        },
        // bytes=a-b, inclusive.
        (false, false) => match (number(first), number(last)) {
            (Some(a), Some(b)) if a > b => RangeRequest::Full,
            (Some(a), Some(_)) if a >= size => RangeRequest::Unsatisfiable,
            (Some(a), Some(b)) => RangeRequest::Partial(a..b.saturating_add(1).min(size)),
            _ => RangeRequest::Full,
        },
        (true, true) => RangeRequest::Full,
    }
}

/// Whether a `Range` may be honoured, given the request's `If-Range`: with
/// none, yes; else only when it names this file exactly, by its ETag
/// compared strongly (a weak tag never matches) or by its Last-Modified
/// date to the byte. A client whose copy is of something else gets the
/// whole file, not a piece to splice into that copy.
pub fn if_range_holds(if_range: Option<&str>, etag: &str, last_modified: &str) -> bool {
    match if_range.map(str::trim) {
        None => true,
        Some(tag) if tag.starts_with('"') || tag.starts_with("W/") => tag == etag,
        Some(date) => date == last_modified,
    }
}

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Full, Partial, Unsatisfiable};
    use super::{if_range_holds, parse};

    #[test]
    fn if_range_lets_a_range_through_only_for_this_file() {
        let (etag, date) = ("\"abc\"", "Wed, 02 Dec 2026 12:00:00 GMT");
        assert!(if_range_holds(None, etag, date));
        assert!(if_range_holds(Some("\"abc\""), etag, date));
        assert!(if_range_holds(Some(date), etag, date));
        for other in ["\"other\"", "W/\"abc\"", "Wed, 02 Dec 2026 12:00:01 GMT", "", "*"] {
            assert!(!if_range_holds(Some(other), etag, date), "{other}");
        }
    }

    #[test]
    fn the_unit_is_case_insensitive() {
        assert_eq!(parse(Some("Bytes=0-0"), 10), Partial(0..1));
        assert_eq!(parse(Some("BYTES=-2"), 10), Partial(8..10));
        assert_eq!(parse(Some("byte=0-0"), 10), Full);
        assert_eq!(parse(Some("bytés=0-0"), 10), Full);
    }

    #[test]
    fn single_ranges() {
        assert_eq!(parse(Some("bytes=0-0"), 10), Partial(0..1));
        assert_eq!(parse(Some("bytes=2-5"), 10), Partial(2..6));
        assert_eq!(parse(Some("bytes=2-100"), 10), Partial(2..10));
        assert_eq!(parse(Some("bytes=7-"), 10), Partial(7..10));
        assert_eq!(parse(Some("bytes=-3"), 10), Partial(7..10));
        assert_eq!(parse(Some("bytes=-30"), 10), Partial(0..10));
        assert_eq!(parse(Some(" bytes= 1 - 2 "), 10), Partial(1..3));
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(parse(Some("bytes=10-"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=10-20"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=-0"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=18446744073709551616-"), 10), Unsatisfiable);
        assert_eq!(parse(Some("bytes=99999999999999999999999-"), 10), Unsatisfiable);
    }

    #[test]
    fn numbers_past_u64_reach_the_end_of_the_file() {
        assert_eq!(parse(Some("bytes=2-18446744073709551616"), 10), Partial(2..10));
        assert_eq!(parse(Some("bytes=-99999999999999999999999"), 10), Partial(0..10));
        assert_eq!(
            parse(Some("bytes=18446744073709551615-"), u64::MAX),
            Unsatisfiable
        );
    }

    #[test]
    fn what_is_not_understood_gets_the_whole_file() {
        for header in [
            None,
            Some("bytes=0-1,4-5"),
            Some("items=0-1"),
            Some("bytes=5-2"),
            Some("bytes=x-"),
            Some("bytes=-"),
            Some("bytes=--1"),
            Some("bytes=1"),
            Some("bytes=99999999999999999999999-5"),
            Some("bytes=+1-2"),
            Some("bytes=0x10-0x20"),
        ] {
            assert_eq!(parse(header, 10), Full, "{header:?}");
        }
    }
}
