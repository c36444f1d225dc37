//! What each part of a request is read from, and what is refused there:
//! the token headers, the multipart form, the app and media ids in the
//! path, and the `Range` header.

use axum::http::{Method, StatusCode};

use super::*;
use crate::error::{AUTH_FAILED, MEDIA_NOT_FOUND};

// ---------------------------------------------------------------------------
// Token headers.

/// Header lines as sent: name and raw value.
type HeaderLines = Vec<(&'static str, Vec<u8>)>;

/// Every wrong way to present a token, given this app's token and another app's.
fn wrong_token_headers(token: &str, other_apps: &str) -> Vec<(&'static str, HeaderLines)> {
    let mut chopped = token.to_owned();
    chopped.pop();
    let bytes = |s: String| s.into_bytes();
    vec![
        ("no token", vec![]),
        ("empty token header", vec![("token", b"".to_vec())]),
        ("blank token header", vec![("token", b"   \t ".to_vec())]),
        ("Bearer with nothing", vec![("authorization", b"Bearer".to_vec())]),
        (
            "Bearer and spaces",
            vec![("authorization", b"Bearer    ".to_vec())],
        ),
        (
            "Basic with the token",
            vec![("authorization", bytes(format!("Basic {token}")))],
        ),
        (
            "Basic credentials",
            vec![("authorization", b"Basic dXNlcjpwYXNz".to_vec())],
        ),
        (
            "another scheme",
            vec![("authorization", bytes(format!("Token {token}")))],
        ),
        (
            "Bearer twice",
            vec![("authorization", bytes(format!("Bearer Bearer {token}")))],
        ),
        (
            "wrong token, then the right one",
            vec![
                ("token", b"mv_wrong".to_vec()),
                ("token", bytes(token.to_owned())),
            ],
        ),
        (
            "wrong token header beside a right Authorization",
            vec![
                ("token", b"mv_wrong".to_vec()),
                ("authorization", bytes(format!("Bearer {token}"))),
            ],
        ),
        (
            "token of another app",
            vec![("token", bytes(other_apps.to_owned()))],
        ),
        ("token cut short", vec![("token", bytes(chopped))]),
        (
            "token in upper case",
            vec![("token", bytes(token.to_uppercase()))],
        ),
        (
            "token with non-ASCII bytes",
            vec![("token", [token.as_bytes(), b"\xc3\xa9\xff"].concat())],
        ),
        ("token of 100 KiB", vec![("token", vec![b't'; 100 * 1024])]),
    ]
}

/// Every right way, however written.
fn right_token_headers(token: &str) -> Vec<(&'static str, &'static str, String)> {
    vec![
        ("token header", "token", token.to_owned()),
        ("bare Authorization", "authorization", token.to_owned()),
        ("Bearer", "authorization", format!("Bearer {token}")),
        ("lower-case bearer", "authorization", format!("bearer {token}")),
        ("upper-case BEARER", "authorization", format!("BEARER {token}")),
        ("spaces around the token", "token", format!("    {token}   ")),
        (
            "Bearer and extra spaces",
            "authorization",
            format!("Bearer    {token}  "),
        ),
    ]
}

/// Each wrong token header is 401 on every route. Each route has an app of
/// its own, so that no app sees enough failures to lock the client out.
#[tokio::test]
async fn every_wrong_token_header_is_401_on_every_route() {
    let s = Service::new().await;
    let other = s.capi_app().await;
    let routes: Vec<(Method, &str)> = vec![
        (Method::POST, ""),
        (Method::GET, "/x"),
        (Method::HEAD, "/x"),
        (Method::GET, "/x/info"),
        (Method::DELETE, "/x"),
    ];
    for (method, tail) in routes {
        let app = s.capi_app().await;
        for (case, headers) in wrong_token_headers(&app.token, &other.token) {
            let mut call = Call::new(method.clone(), media_uri(&app.id, tail));
            for (name, value) in headers {
                call = call.header(name, value);
            }
            if method == Method::POST {
                call = call.multipart(valid_form());
            }
            let reply = s.send(call).await;
            let case = format!("{method} {tail}: {case}");
            if method == Method::HEAD {
                assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{case}");
            } else {
                reply.assert_error(&case, StatusCode::UNAUTHORIZED, AUTH_FAILED);
            }
        }
    }
    assert_eq!(s.stored().await, 0);
}

#[tokio::test]
async fn every_right_token_header_is_taken_on_uploads_and_reads() {
    let s = Service::new().await;
    let app = &s.app;
    let id = s.upload(&png_bytes(100)).await;
    let forms = right_token_headers(&app.token);
    for (case, name, value) in &forms {
        let upload = Call::new(Method::POST, media_uri(&app.id, ""))
            .header(name, value)
            .multipart(valid_form());
        let reply = s.send(upload).await;
        assert_eq!(reply.status, StatusCode::OK, "upload, {case}: {}", reply.text());
        let download = Call::new(Method::GET, media_uri(&app.id, &format!("/{id}"))).header(name, value);
        let reply = s.send(download).await;
        assert_eq!(reply.status, StatusCode::OK, "download, {case}: {}", reply.text());
        assert!(reply.body == png_bytes(100), "{case}");
    }
    assert_eq!(s.stored().await, 1 + forms.len());
}

// ---------------------------------------------------------------------------
// The multipart form.

/// A malformed upload: what it is, its content type (none: no header), its
/// body, how the message of its 400 starts, and words of which it names one.
type MalformedCase<'a> = (&'a str, Option<String>, Vec<u8>, String, &'a [&'a str]);

/// Broken framing, nesting, sizes and encodings: each a 400 whose message
/// starts as expected and names one of the hints.
#[tokio::test]
async fn malformed_multipart_bodies_are_400() {
    let s = Service::new().await;
    let ct = form_content_type();
    const TYPE_LIST: &str = "Param file must be a file with one of the following types";
    let mut ten_thousand_parts: Vec<Vec<u8>> = vec![text("file_type", b"image/png")];
    ten_thousand_parts.extend((0..10_000).map(|i| text(&format!("f{i}"), b"x")));
    ten_thousand_parts.push(file(&png_bytes(100)));
    ten_thousand_parts.push(end());
    let inner = b"--in\r\nContent-Type: text/plain\r\n\r\nimage/png\r\n--in--\r\n";
    let mut nested_png = b"--in\r\nContent-Type: image/png\r\n\r\n\x89PNG\r\n\x1a\n\r\n--in--\r\n".to_vec();
    nested_png.extend(png_bytes(1000));
    let without_close = {
        let mut b = [text("file_type", b"image/png"), file(&png_bytes(5000))].concat();
        b.truncate(b.len() - 2);
        b
    };
    let cut_in_file = {
        let mut b = [text("file_type", b"image/png"), file(&png_bytes(200_000))].concat();
        b.truncate(150_000);
        b
    };
    let cut_after_6_mib = {
        let mut b = [text("file_type", b"image/png"), file(&png_bytes(6 * 1024 * 1024))].concat();
        b.truncate(b.len() - 100);
        b
    };
    let mut too_many_headers = b"Content-Disposition: form-data; name=\"file_type\"".to_vec();
    for i in 0..40 {
        too_many_headers.extend_from_slice(format!("\r\nX-H{i}: v").as_bytes());
    }
    let png_part = |headers: &[u8]| part(headers, &png_bytes(100));

    let cases: Vec<MalformedCase> = vec![
        (
            "no content type",
            None,
            b"hello".to_vec(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "no boundary parameter",
            Some("multipart/form-data".into()),
            valid_form(),
            MALFORMED.into(),
            &["boundary"],
        ),
        (
            "empty boundary parameter",
            Some("multipart/form-data; boundary=".into()),
            valid_form(),
            MALFORMED.into(),
            &["boundary", "multipart"],
        ),
        (
            "wrong boundary",
            Some("multipart/form-data; boundary=AbC".into()),
            valid_form(),
            MALFORMED.into(),
            &["multipart"],
        ),
        ("no closing delimiter", Some(ct.clone()), without_close, MALFORMED.into(), &["multipart"]),
        (
            "garbage preamble only",
            Some(ct.clone()),
            b"this is not multipart at all\r\n\x00\xff\xfe".to_vec(),
            MALFORMED.into(),
            &["multipart"],
        ),
        ("empty body", Some(ct.clone()), Vec::new(), MALFORMED.into(), &["multipart"]),
        ("boundary only, no parts", Some(ct.clone()), end(), TYPE_LIST.into(), &["Param file"]),
        (
            "LF line endings",
            Some(ct.clone()),
            String::from_utf8(valid_form())
                .unwrap_or_default()
                .replace("\r\n", "\n")
                .into_bytes(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "multipart/mixed, not form-data",
            Some(format!("multipart/mixed; boundary={BOUNDARY}")),
            valid_form(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "text/plain content type over a multipart body",
            Some("text/plain".into()),
            valid_form(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "nested multipart/mixed as file_type",
            Some(ct.clone()),
            [
                part(
                    b"Content-Disposition: form-data; name=\"file_type\"\r\nContent-Type: multipart/mixed; boundary=in",
                    inner,
                ),
                file(&png_bytes(100)),
                end(),
            ]
            .concat(),
            TYPE_LIST.into(),
            &[TYPE_LIST],
        ),
        (
            "nested multipart/mixed as the file",
            Some(ct.clone()),
            [
                text("file_type", b"image/png"),
                part(
                    b"Content-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\nContent-Type: multipart/mixed; boundary=in",
                    &nested_png,
                ),
                end(),
            ]
            .concat(),
            "Param file content is 'unrecognised data', which does not match file_type 'image/png'.".into(),
            &["does not match"],
        ),
        ("10,000 parts", Some(ct.clone()), ten_thousand_parts.concat(), format!("{MALFORMED}more than 16 parts"), &["parts"]),
        (
            "file_type of 1 MiB",
            Some(ct.clone()),
            [text("file_type", &vec![b'a'; 1 << 20]), file(&png_bytes(100)), end()].concat(),
            format!("{MALFORMED}file_type is longer than 4096 bytes"),
            &["longer than"],
        ),
        (
            "file_type of 10,000 bytes",
            Some(ct.clone()),
            [text("file_type", &vec![b'x'; 10_000]), file(&png_bytes(10)), end()].concat(),
            format!("{MALFORMED}file_type is longer than 4096 bytes"),
            &["longer than"],
        ),
        (
            "extra field of 1 MiB",
            Some(ct.clone()),
            [
                text("file_type", b"image/png"),
                text("caption", &vec![b'a'; 1 << 20]),
                file(&png_bytes(100)),
                end(),
            ]
            .concat(),
            format!("{MALFORMED}form field is longer than 4096 bytes"),
            &["longer than"],
        ),
        (
            "field name of 64 KiB",
            Some(ct.clone()),
            [text(&"n".repeat(64 * 1024), b"x"), valid_form()].concat(),
            format!("{MALFORMED}a part name is longer than 256 bytes"),
            &["longer than"],
        ),
        (
            "part header name of 64 KiB",
            Some(ct.clone()),
            [
                part(
                    format!(
                        "Content-Disposition: form-data; name=\"file_type\"\r\n{}: x",
                        "H".repeat(64 * 1024)
                    )
                    .as_bytes(),
                    b"image/png",
                ),
                file(&png_bytes(100)),
                end(),
            ]
            .concat(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "40 headers in one part",
            Some(ct.clone()),
            [part(&too_many_headers, b"image/png"), file(&png_bytes(100)), end()].concat(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "part header line without a colon",
            Some(ct.clone()),
            [
                part(
                    b"Content-Disposition: form-data; name=\"file_type\"\r\nno colon here",
                    b"image/png",
                ),
                file(&png_bytes(100)),
                end(),
            ]
            .concat(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "part headers never end",
            Some(ct.clone()),
            format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a\"\r\n")
                .into_bytes(),
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "invalid UTF-8 in file_type",
            Some(ct.clone()),
            [text("file_type", b"image/\xff\xfepng"), file(&png_bytes(100)), end()].concat(),
            format!("{MALFORMED}file_type is not valid UTF-8"),
            &["UTF-8"],
        ),
        (
            "NUL in the filename",
            Some(ct.clone()),
            [
                text("file_type", b"image/png"),
                png_part(
                    b"Content-Disposition: form-data; name=\"file\"; filename=\"a\x00.png\"\r\nContent-Type: image/png",
                ),
                end(),
            ]
            .concat(),
            MALFORMED.into(),
            &["headers"],
        ),
        (
            "file_type sent twice",
            Some(ct.clone()),
            [
                text("file_type", b"image/png"),
                text("file_type", b"image/png"),
                file(&png_bytes(100)),
                end(),
            ]
            .concat(),
            format!("{MALFORMED}file_type was sent more than once"),
            &["more than once"],
        ),
        (
            "file part without Content-Disposition",
            Some(ct.clone()),
            [text("file_type", b"image/png"), png_part(b"Content-Type: image/png"), end()].concat(),
            format!("{MALFORMED}form field is not valid UTF-8"),
            &["Param file", "form field"],
        ),
        (
            "file part with an invalid UTF-8 field name",
            Some(ct.clone()),
            [
                text("file_type", b"image/png"),
                png_part(
                    b"Content-Disposition: form-data; name=\"fi\xffle\"; filename=\"a.png\"\r\nContent-Type: image/png",
                ),
                end(),
            ]
            .concat(),
            format!("{MALFORMED}form field is not valid UTF-8"),
            &["Param file", "form field", "UTF-8"],
        ),
        (
            "file content cut before the closing delimiter",
            Some(ct.clone()),
            cut_in_file,
            MALFORMED.into(),
            &["multipart"],
        ),
        (
            "file content cut after 6 MiB",
            Some(ct.clone()),
            cut_after_6_mib,
            MALFORMED.into(),
            &[],
        ),
    ];
    for (case, content_type, body, prefix, hints) in cases {
        let mut call = Call::upload(&s.app);
        call = match content_type {
            Some(content_type) => call.body(&content_type, body),
            None => Call { body, ..call },
        };
        let reply = s.send(call).await;
        reply.assert_error_naming(case, StatusCode::BAD_REQUEST, &prefix, hints);
    }
    assert_eq!(s.stored().await, 0);
}

/// A boundary is at most 70 characters (RFC 2046): a longer one is 400
/// before the body is read, and stores nothing.
#[tokio::test]
async fn a_boundary_past_70_characters_is_400() {
    let s = Service::new().await;
    for (len, status) in [
        (70, StatusCode::OK),
        (71, StatusCode::BAD_REQUEST),
        (60_000, StatusCode::BAD_REQUEST),
    ] {
        let boundary = "b".repeat(len);
        let form = [text("file_type", b"image/png"), file(&png_bytes(500)), end()]
            .concat()
            .split(|&byte| byte == b'\n')
            .map(|line| match line.strip_prefix(b"--") {
                Some(rest) if rest.starts_with(BOUNDARY.as_bytes()) => {
                    [b"--", boundary.as_bytes(), &rest[BOUNDARY.len()..]].concat()
                }
                _ => line.to_vec(),
            })
            .collect::<Vec<_>>()
            .join(&b'\n');
        let call = Call::upload(&s.app).body(&format!("multipart/form-data; boundary=\"{boundary}\""), form);
        let reply = s.send(call).await;
        if status == StatusCode::OK {
            assert_eq!(reply.status, status, "{len}: {}", reply.text());
        } else {
            reply.assert_error(
                &len.to_string(),
                status,
                "Malformed multipart/form-data request: boundary longer than 70 characters",
            );
        }
    }
    assert_eq!(s.stored().await, 1);
}

/// A preamble or part headers that never end are refused once they pass
/// the framing limit (4 MiB of what is not part content), not buffered on.
#[tokio::test]
async fn framing_past_its_limit_is_400() {
    let s = Service::new().await;
    let mut endless_headers =
        format!("--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; X-Pad: ").into_bytes();
    endless_headers.extend(std::iter::repeat_n(b'p', 6 * 1024 * 1024));
    let mut endless_preamble = b"garbage before any boundary ".to_vec();
    endless_preamble.extend(std::iter::repeat_n(b'g', 6 * 1024 * 1024));
    for (case, body) in [
        ("endless part headers", endless_headers),
        ("endless preamble", endless_preamble),
    ] {
        s.send(Call::upload(&s.app).multipart(body)).await.assert_error(
            case,
            StatusCode::BAD_REQUEST,
            "Malformed multipart/form-data request: more than 4194304 bytes of preamble, boundaries and part headers",
        );
    }
    assert_eq!(s.stored().await, 0);
}

/// Invalid UTF-8 in the filename is no reason to refuse a file: it is
/// stored, and sent with a valid Content-Disposition or none.
#[tokio::test]
async fn a_filename_that_is_not_utf8_is_dropped_not_refused() {
    let s = Service::new().await;
    let form = [
        text("file_type", b"image/png"),
        part(
            b"Content-Disposition: form-data; name=\"file\"; filename=\"ph\xffo\xc3to.png\"\r\nContent-Type: image/png",
            &png_bytes(100),
        ),
        end(),
    ]
    .concat();
    let reply = s.send(Call::upload(&s.app).multipart(form)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    let download = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
    assert_eq!(download.status, StatusCode::OK);
    if let Some(disposition) = download.header("content-disposition") {
        assert!(disposition.starts_with("attachment"), "{disposition}");
    }
    assert!(download.body == png_bytes(100));
}

/// A part with a `filename` parameter is a file (RFC 7578 §4.2), whether
/// or not its name can be read and with no Content-Type, as Python's
/// requests sends a file: not a URL to fetch. A name the parser cannot
/// give (not UTF-8, or only `filename*`) is dropped. A part with neither a
/// filename nor a Content-Type is still a URL.
#[tokio::test]
async fn a_part_with_a_filename_is_a_file_without_a_type_or_a_readable_name() {
    let s = Service::new().await;
    let cases: [(&str, &[u8]); 5] = [
        (
            "a filename not UTF-8",
            b"name=\"file\"; filename=\"ph\xffoto.png\"",
        ),
        ("only filename*", b"name=\"file\"; filename*=UTF-8''a.png"),
        (
            "filename* before filename",
            b"name=\"file\"; filename*=UTF-8''%C3%A9.png; filename=\"e.png\"",
        ),
        ("FILENAME, unquoted", b"name=file; FILENAME=a.png"),
        ("a plain filename", b"name=\"file\"; filename=\"a.png\""),
    ];
    for (case, parameters) in cases {
        let headers = [&b"Content-Disposition: form-data; "[..], parameters].concat();
        let form = [
            text("file_type", b"image/png"),
            part(&headers, &png_bytes(100)),
            end(),
        ]
        .concat();
        let reply = s.send(Call::upload(&s.app).multipart(form)).await;
        assert_eq!(reply.status, StatusCode::OK, "{case}: {}", reply.text());
        let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
        let download = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
        assert_eq!(download.status, StatusCode::OK, "{case}");
        assert!(download.body == png_bytes(100), "{case}");
    }
    assert_eq!(s.stored().await, cases.len());

    let form = [
        text("file_type", b"image/png"),
        text("file", b"http://127.0.0.1:9/a.png"),
        end(),
    ]
    .concat();
    s.send(Call::upload(&s.app).multipart(form)).await.assert_error(
        "no filename",
        StatusCode::BAD_REQUEST,
        "Unable to fetch the file URL: address not allowed",
    );
    assert_eq!(s.stored().await, cases.len());
}

/// `file` before `file_type`, as common client libraries send it: the file
/// is streamed, then checked against the type that follows.
#[tokio::test]
async fn the_file_may_come_before_its_type() {
    let s = Service::new().await;
    let bytes = png_bytes(300_000);
    let form = [file(&bytes), text("file_type", b"image/png"), end()].concat();
    let reply = s.send(Call::upload(&s.app).multipart(form)).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    let id = reply.json()["mediaId"].as_str().unwrap().to_owned();
    let download = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
    assert!(download.body == bytes);
    assert_eq!(s.stored().await, 1);
}

// ---------------------------------------------------------------------------
// Paths: app ids and media ids.

/// Requests with tricky ids: each is a 404 (or a 400 for a path that is not
/// UTF-8), and the real file is untouched.
#[tokio::test]
async fn tricky_media_ids_and_paths_never_reach_another_file() {
    let s = Service::new().await;
    let app = &s.app.id;
    let id = s.upload(&png_bytes(3000)).await;
    let base = media_uri(app, "");
    let long = "a".repeat(10_000);
    let not_found = Some("Not found");
    let media_not_found = Some(MEDIA_NOT_FOUND);
    let cases: Vec<(&str, Method, String, StatusCode, Option<&str>)> = vec![
        (
            "dot dot",
            Method::GET,
            format!("{base}/.."),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "dot dot to the file",
            Method::GET,
            format!("{base}/../media/{id}"),
            StatusCode::NOT_FOUND,
            not_found,
        ),
        (
            "dot dot from the app",
            Method::GET,
            format!("/partner/app/{app}/../{app}/media/{id}"),
            StatusCode::NOT_FOUND,
            not_found,
        ),
        (
            "encoded dot dot",
            Method::GET,
            format!("{base}/%2e%2e"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "encoded traversal",
            Method::GET,
            format!("{base}/%2e%2e%2f%2e%2e%2fetc%2fpasswd"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "encoded slash into info",
            Method::GET,
            format!("{base}/{id}%2Finfo"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "encoded slash",
            Method::GET,
            format!("{base}/a%2Fb"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "id of 10,000 characters",
            Method::GET,
            format!("{base}/{long}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "unicode id",
            Method::GET,
            format!("{base}/%C3%A9t%C3%A9%F0%9F%93%B7"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "NUL in the id",
            Method::GET,
            format!("{base}/{id}%00"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "NUL alone",
            Method::GET,
            format!("{base}/%00"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "control character",
            Method::GET,
            format!("{base}/%0A{id}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "not UTF-8",
            Method::GET,
            format!("{base}/%FF%FE"),
            StatusCode::BAD_REQUEST,
            None,
        ),
        (
            "query in the id",
            Method::GET,
            format!("{base}/{id}%3Fx%3D1"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "id in the query",
            Method::GET,
            format!("{base}/none?id={id}&media_id={id}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "padded id",
            Method::GET,
            format!("{base}/%20{id}%20"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "the id with a leading zero (the same number, another id)",
            Method::GET,
            format!("{base}/0{id}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "SQL in the id",
            Method::GET,
            format!("{base}/x'%20OR%20'1'%3D'1"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "wildcard id",
            Method::GET,
            format!("{base}/%25"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "glob id",
            Method::GET,
            format!("{base}/*"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "empty id",
            Method::GET,
            format!("{base}//info"),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "info with a tail",
            Method::GET,
            format!("{base}/{id}/info/x"),
            StatusCode::NOT_FOUND,
            not_found,
        ),
        (
            "info of dot dot",
            Method::GET,
            format!("{base}/%2e%2e/info"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "info of NUL",
            Method::GET,
            format!("{base}/%00/info"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "HEAD of NUL",
            Method::HEAD,
            format!("{base}/%00"),
            StatusCode::NOT_FOUND,
            None,
        ),
        (
            "DELETE of dot dot",
            Method::DELETE,
            format!("{base}/.."),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "DELETE of encoded traversal",
            Method::DELETE,
            format!("{base}/..%2F..%2F{id}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "DELETE of NUL",
            Method::DELETE,
            format!("{base}/{id}%00"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "DELETE of 10,000 characters",
            Method::DELETE,
            format!("{base}/{long}"),
            StatusCode::NOT_FOUND,
            media_not_found,
        ),
        (
            "DELETE of the collection",
            Method::DELETE,
            base.clone(),
            StatusCode::METHOD_NOT_ALLOWED,
            Some("Method not allowed"),
        ),
    ];
    for (case, method, uri, status, message) in cases {
        let head = method == Method::HEAD;
        let reply = s.send(Call::new(method, uri).token(&s.app.token)).await;
        match message {
            _ if head => assert_eq!(reply.status, status, "{case}"),
            Some(message) => reply.assert_error(case, status, message),
            None => reply.assert_error_naming(case, status, "", &[]),
        }
    }
    let reply = s.send(Call::media(Method::GET, &s.app, &format!("/{id}"))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.body == png_bytes(3000), "the file is whole");
    assert_eq!(s.stored().await, 1);
}

// ---------------------------------------------------------------------------
// The Range header.

/// What a `Range` header gets: the whole file (a header the server does not
/// understand is ignored, RFC 9110 §14.2), one range, or 416.
#[derive(Debug, Clone, Copy)]
enum Served {
    Whole,
    Part(usize, usize),
    Refused,
}

#[tokio::test]
async fn bad_ranges_get_the_whole_file_or_416() {
    const SIZE: usize = 150_000;
    let s = Service::new().await;
    let bytes = png_bytes(SIZE);
    let id = s.upload(&bytes).await;
    let many: Vec<String> = (0..2000).map(|i| format!("{0}-{0}", i * 2)).collect();
    let many = format!("bytes={}", many.join(","));
    let huge = "9".repeat(100 * 1024);
    let cases: Vec<(&str, Vec<u8>, Served)> = vec![
        ("end before start", b"bytes=5-2".to_vec(), Served::Whole),
        ("letters", b"bytes=abc".to_vec(), Served::Whole),
        ("letters in a range", b"bytes=a-b".to_vec(), Served::Whole),
        ("another unit", b"items=0-1".to_vec(), Served::Whole),
        ("no unit", b"0-1".to_vec(), Served::Whole),
        ("empty suffix", b"bytes=-0".to_vec(), Served::Refused),
        ("empty value", b"".to_vec(), Served::Whole),
        ("unit only", b"bytes=".to_vec(), Served::Whole),
        ("dash only", b"bytes=-".to_vec(), Served::Whole),
        ("negative", b"bytes=-5-10".to_vec(), Served::Whole),
        ("hexadecimal", b"bytes=0x10-0x20".to_vec(), Served::Whole),
        ("exponent", b"bytes=1e3-2e3".to_vec(), Served::Whole),
        ("signed", b"bytes=+1-2".to_vec(), Served::Whole),
        (
            "start past u64",
            b"bytes=18446744073709551616-".to_vec(),
            Served::Refused,
        ),
        (
            "end past u64",
            b"bytes=10-18446744073709551616".to_vec(),
            Served::Part(10, SIZE),
        ),
        (
            "suffix past u64",
            b"bytes=-99999999999999999999999".to_vec(),
            Served::Part(0, SIZE),
        ),
        (
            "both past u64",
            b"bytes=99999999999999999999999-99999999999999999999999".to_vec(),
            Served::Refused,
        ),
        (
            "u64::MAX",
            b"bytes=18446744073709551615-18446744073709551615".to_vec(),
            Served::Refused,
        ),
        (
            "start at the size",
            format!("bytes={SIZE}-").into_bytes(),
            Served::Refused,
        ),
        ("2,000 ranges", many.into_bytes(), Served::Whole),
        (
            "100 KiB of digits",
            format!("bytes=0-{huge}").into_bytes(),
            Served::Part(0, SIZE),
        ),
        ("not ASCII", b"bytes=\xff\xfe-1".to_vec(), Served::Whole),
        ("junk after", b"bytes=0-1 junk".to_vec(), Served::Whole),
    ];
    for (case, value, served) in cases {
        let reply = s
            .send(Call::media(Method::GET, &s.app, &format!("/{id}")).header("range", &value))
            .await;
        match served {
            Served::Whole => {
                assert_eq!(reply.status, StatusCode::OK, "{case}");
                assert_eq!(reply.header("content-range"), None, "{case}");
                assert!(reply.body == bytes, "{case}: the whole file");
            }
            Served::Part(start, end) => {
                assert_eq!(reply.status, StatusCode::PARTIAL_CONTENT, "{case}");
                let expected = format!("bytes {start}-{}/{SIZE}", end - 1);
                assert_eq!(reply.header("content-range"), Some(expected.as_str()), "{case}");
                assert!(reply.body == bytes[start..end], "{case}");
            }
            Served::Refused => {
                reply.assert_error(
                    case,
                    StatusCode::RANGE_NOT_SATISFIABLE,
                    "Requested range not satisfiable",
                );
                let expected = format!("bytes */{SIZE}");
                assert_eq!(reply.header("content-range"), Some(expected.as_str()), "{case}");
            }
        }
    }
    // HEAD and info are not confused by a bad range either.
    let head = s
        .send(Call::media(Method::HEAD, &s.app, &format!("/{id}")).header("range", "bytes=5-2"))
        .await;
    assert_eq!(head.status, StatusCode::OK);
    assert_eq!(head.header("content-length"), Some(SIZE.to_string().as_str()));
    let info = s
        .send(Call::media(Method::GET, &s.app, &format!("/{id}/info")).header("range", "bytes=-0"))
        .await;
    assert_eq!(info.status, StatusCode::OK);
}
