//! A download's preconditions (RFC 9110 §13): `If-Match`,
//! `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since`, in the
//! order §13.2.2 gives. A stored file never changes, so its validators are
//! fixed: the ETag (its quoted sha256) and Last-Modified (its upload, to
//! the second). `If-Range` belongs to the range, in `range.rs`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, HeaderName, header};

/// What a download's preconditions ask of it.
#[derive(Debug, PartialEq)]
pub enum Precondition {
    /// Go on to the range and the file.
    Holds,
    /// 304: the client's copy is current.
    NotModified,
    /// 412: the client asked for a file that is not this one.
    Failed,
}

/// Evaluates the preconditions of a GET or HEAD of the file whose ETag is
/// `etag` and whose Last-Modified is `modified_secs` (Unix seconds).
pub fn evaluate(headers: &HeaderMap, etag: &str, modified_secs: i64) -> Precondition {
    let modified = UNIX_EPOCH + Duration::from_secs(modified_secs.max(0).unsigned_abs());
    // §13.2.2 steps 1-2: a client that means to act on one version only.
    if let Some(tags) = members(headers, &header::IF_MATCH) {
        if !tags.iter().any(|t| *t == "*" || *t == etag) {
            return Precondition::Failed;
        }
    } else if let Some(date) = one_date(headers, &header::IF_UNMODIFIED_SINCE)
        && modified > date
    {
        return Precondition::Failed;
    }
    // Steps 3-4: a client that holds a copy already.
    if let Some(tags) = members(headers, &header::IF_NONE_MATCH) {
        if tags
            .iter()
            .any(|t| *t == "*" || t.trim_start_matches("W/") == etag)
        {
            return Precondition::NotModified;
        }
    } else if let Some(date) = one_date(headers, &header::IF_MODIFIED_SINCE)
        && modified <= date
    {
        return Precondition::NotModified;
    }
    Precondition::Holds
}

/// The comma-separated members of every `name` field, trimmed; `None`
/// when the request has no such field. A field that is not text has no
/// member, so it matches nothing.
fn members<'h>(headers: &'h HeaderMap, name: &HeaderName) -> Option<Vec<&'h str>> {
    let mut fields = headers.get_all(name).iter().peekable();
    fields.peek()?;
    Some(
        fields
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .collect(),
    )
}

/// The date of a date field, when the request has exactly one that is a
/// valid HTTP-date; otherwise the field is ignored (§13.1.3, §13.1.4).
fn one_date(headers: &HeaderMap, name: &HeaderName) -> Option<SystemTime> {
    let mut fields = headers.get_all(name).iter();
    let field = fields.next()?;
    if fields.next().is_some() {
        return None;
    }
    httpdate::parse_http_date(field.to_str().ok()?).ok()
}

#[cfg(test)]
mod tests {
    use axum::http::{HeaderMap, HeaderValue, header};

    use super::Precondition::{Failed, Holds, NotModified};
    use super::{Precondition, evaluate};

    const ETAG: &str = "\"abc\"";
    /// Sun, 06 Nov 1994 08:49:37 GMT
    const MODIFIED: i64 = 784_111_777;

    fn check(fields: &[(header::HeaderName, &str)]) -> Precondition {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(name, HeaderValue::from_str(value).unwrap());
        }
        evaluate(&headers, ETAG, MODIFIED)
    }

    #[test]
    fn without_preconditions_the_download_goes_on() {
        assert_eq!(check(&[]), Holds);
    }

    #[test]
    fn if_match_lets_through_only_this_file_compared_strongly() {
        use header::IF_MATCH as M;
        assert_eq!(check(&[(M, "\"abc\"")]), Holds);
        assert_eq!(check(&[(M, "*")]), Holds);
        assert_eq!(check(&[(M, "\"x\", \"abc\"")]), Holds);
        assert_eq!(check(&[(M, "\"x\""), (M, "\"abc\"")]), Holds);
        assert_eq!(check(&[(M, "\"x\"")]), Failed);
        assert_eq!(check(&[(M, "W/\"abc\"")]), Failed, "weak never matches");
        assert_eq!(check(&[(M, "")]), Failed);
    }

    #[test]
    fn if_unmodified_since_fails_for_a_file_newer_than_the_date() {
        use header::IF_UNMODIFIED_SINCE as U;
        assert_eq!(check(&[(U, "Sun, 06 Nov 1994 08:49:37 GMT")]), Holds);
        assert_eq!(check(&[(U, "Sun, 06 Nov 1994 08:49:36 GMT")]), Failed);
        // The other two forms an HTTP-date may take.
        assert_eq!(check(&[(U, "Sunday, 06-Nov-94 08:49:36 GMT")]), Failed);
        assert_eq!(check(&[(U, "Sun Nov  6 08:49:36 1994")]), Failed);
        // Not a date, or two of them: ignored.
        assert_eq!(check(&[(U, "yesterday")]), Holds);
        assert_eq!(
            check(&[
                (U, "Sun, 06 Nov 1994 08:49:36 GMT"),
                (U, "Sun, 06 Nov 1994 08:49:36 GMT")
            ]),
            Holds
        );
        // If-Match, when present, decides instead.
        assert_eq!(
            check(&[
                (header::IF_MATCH, "\"abc\""),
                (U, "Sun, 06 Nov 1994 08:49:36 GMT")
            ]),
            Holds
        );
    }

    #[test]
    fn if_none_match_is_a_weak_comparison_that_answers_not_modified() {
        use header::IF_NONE_MATCH as N;
        assert_eq!(check(&[(N, "\"abc\"")]), NotModified);
        assert_eq!(check(&[(N, "W/\"abc\"")]), NotModified);
        assert_eq!(check(&[(N, "\"x\",W/\"abc\"")]), NotModified);
        assert_eq!(check(&[(N, "*")]), NotModified);
        assert_eq!(check(&[(N, "\"x\"")]), Holds);
    }

    #[test]
    fn if_modified_since_answers_not_modified_unless_the_file_is_newer() {
        use header::IF_MODIFIED_SINCE as S;
        assert_eq!(check(&[(S, "Sun, 06 Nov 1994 08:49:37 GMT")]), NotModified);
        assert_eq!(check(&[(S, "Mon, 07 Nov 1994 00:00:00 GMT")]), NotModified);
        assert_eq!(check(&[(S, "Sun, 06 Nov 1994 08:49:36 GMT")]), Holds);
        assert_eq!(check(&[(S, "garbage")]), Holds);
        // If-None-Match, when present, decides instead.
        assert_eq!(
            check(&[
                (header::IF_NONE_MATCH, "\"x\""),
                (S, "Mon, 07 Nov 1994 00:00:00 GMT")
            ]),
            Holds
        );
    }

    #[test]
    fn a_failed_if_match_comes_before_a_current_copy() {
        assert_eq!(
            check(&[(header::IF_MATCH, "\"x\""), (header::IF_NONE_MATCH, "\"abc\"")]),
            Failed
        );
    }
}
