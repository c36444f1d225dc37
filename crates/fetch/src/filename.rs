//! The name of a fetched file: the response's `Content-Disposition`
//! (`filename*`, then `filename`), else the last segment of the URL it came
//! from, percent-decoded. Either way it is cleaned as an uploaded file's
//! name is, since it is only ever a label in a later `Content-Disposition`.

use percent_encoding::percent_decode_str;
use url::Url;

/// Longest filename kept, in bytes.
const FILENAME_LIMIT: usize = 255;

/// The file's name, if the response or its URL gives one.
pub(crate) fn of_response(content_disposition: Option<&[u8]>, url: &Url) -> Option<String> {
    let named = content_disposition.and_then(from_content_disposition);
    let raw = named.or_else(|| from_url(url))?;
    Some(clean_filename(&raw)).filter(|name| !name.is_empty())
}

/// The last path component, without control characters, at most 255
/// bytes, trimmed. Only ever a label in Content-Disposition, never a path.
/// The controls of text direction go too: with them a name shows other
/// than it reads (`photo\u{202E}gnp.exe` shows as `photoexe.png`).
pub fn clean_filename(raw: &str) -> String {
    let base = raw.rsplit(['/', '\\']).next().unwrap_or_default();
    let mut name: String = base
        .chars()
        .filter(|&c| !c.is_control() && !is_direction_control(c))
        .collect();
    if name.len() > FILENAME_LIMIT {
        let mut cut = FILENAME_LIMIT;
        while !name.is_char_boundary(cut) {
            cut -= 1;
        }
        name.truncate(cut);
    }
    name.trim().to_owned()
}

/// The Unicode marks and embeddings that change the order text shows in
/// (UAX #9): LRM, RLM, ALM, LRE to RLO, and LRI to PDI.
fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Whether a Content-Disposition value has a `filename` or `filename*`
/// parameter, whatever its value, readable or not: a form's part that has
/// one is a file (RFC 7578 §4.2).
pub fn names_a_file(content_disposition: &[u8]) -> bool {
    parameters(&header_text(content_disposition))
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("filename") || name.eq_ignore_ascii_case("filename*"))
}

/// A header value's text: header values are bytes, and senders put UTF-8
/// or Latin-1 in them.
fn header_text(value: &[u8]) -> String {
    match std::str::from_utf8(value) {
        Ok(text) => text.to_owned(),
        Err(_) => value.iter().map(|&b| char::from(b)).collect(),
    }
}

/// `filename*` (RFC 6266 / 8187) if it decodes, else `filename`.
fn from_content_disposition(value: &[u8]) -> Option<String> {
    let parameters = parameters(&header_text(value));
    let find = |name: &str| {
        parameters
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    find("filename*")
        .and_then(decode_extended)
        .or_else(|| find("filename").map(str::to_owned))
        .filter(|name| !name.is_empty())
}

/// The `name=value` parameters after the disposition type; quoted values
/// unquoted.
fn parameters(text: &str) -> Vec<(String, String)> {
    let mut parameters = Vec::new();
    let Some((_, mut rest)) = text.split_once(';') else {
        return parameters;
    };
    loop {
        rest = rest.trim_start_matches(|c: char| c == ';' || c.is_whitespace());
        if rest.is_empty() {
            return parameters;
        }
        let name_end = rest.find(['=', ';']).unwrap_or(rest.len());
        let name = rest[..name_end].trim().to_owned();
        rest = &rest[name_end..];
        let Some(after) = rest.strip_prefix('=') else {
            continue;
        };
        let after = after.trim_start();
        let value;
        if let Some(quoted) = after.strip_prefix('"') {
            let mut unquoted = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            unquoted.push(escaped);
                        }
                    }
                    '"' => {
                        end = i + 1;
                        break;
                    }
                    c => unquoted.push(c),
                }
            }
            value = unquoted;
            rest = &quoted[end..];
        } else {
            let end = after.find(';').unwrap_or(after.len());
            value = after[..end].trim().to_owned();
            rest = &after[end..];
        }
        parameters.push((name, value));
    }
}

/// `charset'language'percent-encoded` (RFC 8187), in UTF-8 or Latin-1.
fn decode_extended(value: &str) -> Option<String> {
    let mut parts = value.splitn(3, '\'');
    let (charset, _language, encoded) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes: Vec<u8> = percent_decode_str(encoded).collect();
    if charset.eq_ignore_ascii_case("utf-8") {
        String::from_utf8(bytes).ok()
    } else if charset.eq_ignore_ascii_case("iso-8859-1") {
        Some(bytes.iter().map(|&b| char::from(b)).collect())
    } else {
        None
    }
}

/// The last segment of the URL's path, percent-decoded; none if the path
/// ends in `/`.
fn from_url(url: &Url) -> Option<String> {
    let last = url.path_segments()?.next_back()?;
    Some(percent_decode_str(last).decode_utf8_lossy().into_owned()).filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(content_disposition: Option<&str>, url: &str) -> Option<String> {
        of_response(content_disposition.map(str::as_bytes), &Url::parse(url).unwrap())
    }

    #[test]
    fn the_extended_name_comes_first_then_the_plain_one_then_the_url() {
        let url = "https://cdn.example/files/from%20url.png?sig=1";
        let cases: &[(Option<&str>, Option<&str>)] = &[
            (
                Some("attachment; filename=\"plain.png\"; filename*=UTF-8''%C3%A9t%C3%A9%20photo.png"),
                Some("été photo.png"),
            ),
            (
                Some("attachment; filename*=utf-8'en'r%C3%A9sum%C3%A9.pdf; filename=resume.pdf"),
                Some("résumé.pdf"),
            ),
            (
                Some("attachment; filename*=ISO-8859-1''caf%E9.txt"),
                Some("café.txt"),
            ),
            (
                Some("inline; filename=\"holiday \\\"1\\\".png\""),
                Some("holiday \"1\".png"),
            ),
            (Some("attachment; filename=token.png"), Some("token.png")),
            (Some("attachment;filename=\"a;b.png\";size=3"), Some("a;b.png")),
            (Some("attachment; FILENAME=\"upper.png\""), Some("upper.png")),
            // A `filename*` that does not decode falls back to `filename`.
            (
                Some("attachment; filename*=UTF-8''%FF%FE.png; filename=\"fallback.png\""),
                Some("fallback.png"),
            ),
            (
                Some("attachment; filename*=KOI8-R''x.png; filename=\"fallback.png\""),
                Some("fallback.png"),
            ),
            // Paths and control characters go.
            (Some("attachment; filename=\"../../etc/passwd\""), Some("passwd")),
            (
                Some("attachment; filename*=UTF-8''..%2F..%2Fa%0D%0Ab.png"),
                Some("ab.png"),
            ),
            // No name in the header: the URL's last segment, decoded.
            (Some("attachment"), Some("from url.png")),
            (Some("attachment; filename=\"\""), Some("from url.png")),
            (None, Some("from url.png")),
        ];
        for (header, expected) in cases {
            assert_eq!(name(*header, url).as_deref(), *expected, "{header:?}");
        }
        assert_eq!(name(None, "https://cdn.example/dir/"), None);
        assert_eq!(name(None, "https://cdn.example"), None);
        assert_eq!(
            name(None, "https://cdn.example/a/b%2Fc%00.png"),
            Some("c.png".into())
        );
        let latin1 = b"attachment; filename=\"caf\xe9.txt\"";
        assert_eq!(
            of_response(Some(latin1), &Url::parse(url).unwrap()).as_deref(),
            Some("café.txt")
        );
    }

    #[test]
    fn a_filename_parameter_is_found_whatever_its_value() {
        for value in [
            &b"form-data; name=\"file\"; filename=\"a.png\""[..],
            b"form-data; name=\"file\"; filename=\"ph\xffoto.png\"",
            b"form-data; name=\"file\"; filename*=UTF-8''a.png",
            b"form-data; name=\"file\"; FileName = a.png",
            b"form-data; name=\"file\"; filename=\"\"",
            b"form-data; name=\"file\"; filename=\"unterminated",
            b"form-data; name=\"a;b\"; filename=\"c\\\"d\"",
        ] {
            let shown = String::from_utf8_lossy(value);
            assert!(names_a_file(value), "{shown}");
        }
        for value in [
            &b"form-data; name=\"file\""[..],
            b"form-data; name=\"file\"; filename",
            b"form-data; name=\"file\"; filenames=a.png",
            b"form-data; name=\"file\"; x=\"; filename=a.png\"",
            b"form-data; name=\"a\\\"; filename=b\"",
        ] {
            let shown = String::from_utf8_lossy(value);
            assert!(!names_a_file(value), "{shown}");
        }
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\me\\photo.png"), "photo.png");
        assert_eq!(clean_filename("a\r\nb.txt"), "ab.txt");
        assert_eq!(clean_filename("photo\u{202E}gnp.exe"), "photognp.exe");
        assert_eq!(clean_filename("\u{2067}a\u{200F}b\u{2069}.txt"), "ab.txt");
        assert_eq!(
            clean_filename("שלום.txt"),
            "שלום.txt",
            "right-to-left text itself stays"
        );
        assert_eq!(clean_filename(&"é".repeat(200)).len(), 254);
    }
}
