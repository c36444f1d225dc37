//! `Range: bytes=…` (RFC 9110 §14): one range is served as 206; several, or
//! a header this parser does not understand, get the whole file, as the RFC
//! allows; a range that starts past the end is 416.

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
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
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

#[cfg(test)]
mod tests {
    use super::RangeRequest::{Full, Partial, Unsatisfiable};
    use super::parse;

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
