//! End to end: what an attacker could try against stored media — guessing
//! media ids, probing another app's media, and tampering with blobs in the
//! blob store (bit flips, truncation, reordered segments, a blob copied onto
//! another id) — on SQLite + files and on Postgres + Garage.

use crate::support;

use reqwest::{Method, StatusCode};
use serde_json::Value;
use support::{Backends, Fixture, app_and_token, png_bytes, png_form};

/// Media ids are decimal numbers of 16 to 19 digits, drawn uniformly from
/// 10^15 ..= 10^19 - 1 (about 63 random bits): all distinct, in no order,
/// with no shared prefix or skewed bits. Blob keys are random too, and
/// never derived from the id.
#[tokio::test]
async fn media_ids_are_random_and_unordered() {
    let f = Fixture::new(Backends::SqliteFiles).await;
    let mut ids = Vec::new();
    for _ in 0..200 {
        let (status, body) = f.post(png_form(50)).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        ids.push(body["mediaId"].as_str().unwrap().to_owned());
    }
    assert_eq!(ids.len(), 200);

    let mut distinct = ids.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(distinct.len(), 200, "every id is new");

    // Digits only, no leading zero, 16 to 19 of them; uniform over the
    // range, nine in ten have 19 digits (200 draws: mean 180, sd 4.2).
    let numbers: Vec<u64> = ids
        .iter()
        .map(|id| {
            assert!((16..=19).contains(&id.len()), "{id}");
            assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
            assert!(!id.starts_with('0'), "{id}");
            id.parse().unwrap()
        })
        .collect();
    let nineteen = ids.iter().filter(|id| id.len() == 19).count();
    assert!(
        (155..=198).contains(&nineteen),
        "{nineteen} of 200 ids have 19 digits"
    );

    // The range is no power of two, but its low 56 bits are as good as
    // uniform: each is set in about half of the ids (mean 100, sd 7; the
    // bounds are over 6 sd away).
    const LOW_BITS: u32 = 56;
    let low = |n: u64| n & ((1 << LOW_BITS) - 1);
    for position in 0..LOW_BITS {
        let count = numbers.iter().filter(|n| (*n >> position) & 1 == 1).count();
        assert!(
            (55..=145).contains(&count),
            "bit {position} set in {count} of 200 ids"
        );
    }

    // The last 15 digits are evenly spread (3,000 draws over 10 values:
    // mean 300, sd 16).
    let mut digits = [0_u32; 10];
    for id in &ids {
        for c in id.chars().rev().take(15) {
            digits[c.to_digit(10).unwrap() as usize] += 1;
        }
    }
    for (digit, count) in digits.iter().enumerate() {
        assert!((200..=400).contains(count), "digit {digit} appears {count} times");
    }

    // Consecutive ids differ in about half their low bits: no counter, no
    // time-ordered prefix.
    let distances: Vec<u32> = numbers
        .windows(2)
        .map(|pair| (low(pair[0]) ^ low(pair[1])).count_ones())
        .collect();
    let mean = distances.iter().sum::<u32>() as f64 / distances.len() as f64;
    assert!((25.0..=31.0).contains(&mean), "mean Hamming distance {mean}");
    assert!(
        distances.iter().all(|d| *d >= 8),
        "two consecutive ids nearly equal: {distances:?}"
    );

    // Neither increasing nor decreasing: ascents between neighbours come
    // out near half (mean 99.5, sd 7).
    let ascents = numbers.windows(2).filter(|pair| pair[0] < pair[1]).count();
    assert!(
        (60..=140).contains(&ascents),
        "{ascents} of 199 neighbours ascend"
    );

    // No two ids share a prefix beyond chance (10 equal leading digits in
    // one of 19,900 pairs: p < 1e-5).
    let longest = (0..ids.len())
        .flat_map(|i| (i + 1..ids.len()).map(move |j| (i, j)))
        .map(|(i, j)| {
            ids[i]
                .bytes()
                .zip(ids[j].bytes())
                .take_while(|(a, b)| a == b)
                .count()
        })
        .max()
        .unwrap();
    assert!(longest < 10, "two ids share a prefix of {longest} characters");

    // Blob keys: one per id, all distinct, none naming an id.
    let (rows, blobs) = f.inventory().await;
    assert_eq!(rows.len(), 200);
    assert_eq!(rows, blobs);
    for key in &blobs {
        assert!(
            !ids.iter().any(|id| key.contains(id.as_str())),
            "blob key {key} names a media id"
        );
    }
}

/// Another app's media is 404 for HEAD, for a Range read and for a
/// conditional read with its ETag, exactly like an id that never existed;
/// `apps_are_isolated` covers GET, info and DELETE.
#[tokio::test]
async fn another_apps_media_is_404_for_head_ranges_and_etags() {
    for backends in [Backends::SqliteFiles, Backends::PostgresS3] {
        let f = Fixture::new(backends).await;
        let bytes = png_bytes(100_000);
        let id = f.upload(&bytes).await;
        let etag = f.download(&id).await.headers()["etag"]
            .to_str()
            .unwrap()
            .to_owned();
        let (b_app, b_token) = app_and_token(&f.stores, true);
        let never = "00000000-0000-4000-8000-000000000000";
        for (method, headers) in [
            (Method::HEAD, vec![]),
            (Method::HEAD, vec![("range", "bytes=0-0")]),
            (Method::GET, vec![("range", "bytes=0-0")]),
            (Method::GET, vec![("range", "bytes=999999-")]),
            (Method::GET, vec![("if-none-match", etag.as_str())]),
            (Method::GET, vec![("if-none-match", "*")]),
        ] {
            let mut replies = Vec::new();
            for media in [id.as_str(), never] {
                let mut request = f
                    .client
                    .request(
                        method.clone(),
                        f.server.url(&format!("/partner/app/{b_app}/media/{media}")),
                    )
                    .header("token", &b_token);
                for (name, value) in &headers {
                    request = request.header(*name, *value);
                }
                let response = request.send().await.unwrap();
                let status = response.status();
                let mut seen = response.headers().clone();
                seen.remove("x-request-id");
                seen.remove("date");
                let body = response.bytes().await.unwrap();
                replies.push((status, seen, body));
            }
            let case = format!("{backends:?} {method} {headers:?}");
            assert_eq!(replies[0].0, StatusCode::NOT_FOUND, "{case}");
            assert!(replies[0].1.get("etag").is_none(), "{case}");
            assert!(replies[0].1.get("content-range").is_none(), "{case}");
            assert_eq!(replies[0], replies[1], "{case}: like an id that never existed");
        }
        assert!(f.download(&id).await.bytes().await.unwrap() == bytes);
    }
}

const SEGMENT: usize = 65_536;
const HEADER: usize = 40;
const FIRST_PLAIN: usize = SEGMENT - HEADER - 16;
const PLAIN: usize = SEGMENT - 16;

/// Bytes unlike `png_bytes` past the PNG signature, so that no prefix of
/// one file is a prefix of the other.
fn other_bytes(len: usize) -> Vec<u8> {
    let mut bytes = png_bytes(len);
    for byte in bytes.iter_mut().skip(64) {
        *byte ^= 0x5a;
    }
    bytes
}

/// GET of `id`, with a `Range` when given; errors are the caller's to judge.
async fn get(f: &Fixture, id: &str, range: Option<&str>) -> reqwest::Result<reqwest::Response> {
    let mut request = f
        .client
        .get(f.media_url_with(&format!("/{id}")))
        .header("token", &f.token);
    if let Some(range) = range {
        request = request.header("range", range);
    }
    request.send().await
}

/// What came back for a read of tampered media: a 500 in the error shape,
/// or a body that stops before the first tampered segment's bytes; in both
/// cases nothing that is not the file's own verified prefix.
/// Cut early, the connection may also end before the response's head.
async fn assert_not_served(
    case: &str,
    response: reqwest::Result<reqwest::Response>,
    original: &[u8],
    verified: usize,
) {
    let Ok(response) = response else {
        assert!(verified > 0, "{case}: the first segment is bad, yet no clean 500");
        return;
    };
    let status = response.status();
    if status == StatusCode::INTERNAL_SERVER_ERROR {
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(body["status"], "error", "{case}: {body}");
        return;
    }
    assert!(
        status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT,
        "{case}: {status}"
    );
    assert!(verified > 0, "{case}: the first segment is bad, yet {status}");
    let (received, failed) = support::body_until_error(response).await;
    assert!(failed, "{case}: the body must end in an error, not look complete");
    assert!(
        received.len() <= verified,
        "{case}: {} bytes sent, only {verified} verified",
        received.len()
    );
    assert!(
        received == original[..received.len()],
        "{case}: bytes not of the file"
    );
}

async fn tampered_blobs_are_detected(backends: Backends) {
    let f = Fixture::new(backends).await;
    // Four segments: 65,480 + 65,520 + 65,520 + 53,480 plaintext bytes.
    let len = 250_000;
    let bytes = png_bytes(len);
    let (id, key) = f.upload_keyed(&bytes).await;
    let original = f.stores.read_blob(&key).await;
    assert_eq!(original.len(), HEADER + len + 4 * 16, "the format's layout");
    let segment = |i: usize| i * SEGMENT..((i + 1) * SEGMENT).min(original.len());
    // Plaintext before segment i: what may be served when segment i is bad.
    let before = |i: usize| if i == 0 { 0 } else { FIRST_PLAIN + (i - 1) * PLAIN };

    let flip = |at: usize| {
        let mut blob = original.clone();
        blob[at] ^= 0x01;
        blob
    };
    let swapped = {
        let mut blob = original.clone();
        let (one, two) = (original[segment(1)].to_vec(), original[segment(2)].to_vec());
        blob[segment(1)].copy_from_slice(&two);
        blob[segment(2)].copy_from_slice(&one);
        blob
    };
    let repeated = {
        let mut blob = original.clone();
        blob.copy_within(segment(1), segment(2).start);
        blob
    };
    let last_as_middle = {
        // The last segment moved up, as if the file ended early.
        let mut blob = original[..segment(2).start].to_vec();
        blob.extend_from_slice(&original[segment(3)]);
        blob.extend_from_slice(&original[segment(2)]);
        blob
    };
    // (case, tampered blob, index of the first bad segment)
    let cases: Vec<(&str, Vec<u8>, usize)> = vec![
        ("bit flip in the salt", flip(5), 0),
        ("bit flip in the nonce prefix", flip(35), 0),
        ("bit flip in segment 0", flip(HEADER + 1000), 0),
        ("bit flip in the tag of segment 1", flip(2 * SEGMENT - 1), 1),
        ("bit flip in segment 3", flip(3 * SEGMENT + 10), 3),
        (
            "truncated inside segment 2",
            original[..2 * SEGMENT + 100].to_vec(),
            2,
        ),
        ("last segment dropped", original[..3 * SEGMENT].to_vec(), 3),
        ("truncated to the header", original[..HEADER].to_vec(), 0),
        ("empty", Vec::new(), 0),
        ("segments 1 and 2 swapped", swapped, 1),
        ("segment 1 repeated over segment 2", repeated, 2),
        ("last segment moved up", last_as_middle, 2),
    ];
    for (case, blob, bad) in cases {
        f.stores.write_blob(&key, blob).await;
        assert_not_served(case, get(&f, &id, None).await, &bytes, before(bad)).await;
        // A range inside the bad segment: its bytes are never sent.
        let start = before(bad) + 10;
        let range = format!("bytes={start}-{}", start + 100);
        let part = get(&f, &id, Some(&range)).await;
        assert_not_served(case, part, &bytes[start..], 0).await;
    }
    // Put back, the blob reads again: the store was never the problem.
    f.stores.write_blob(&key, original.clone()).await;
    assert!(f.download(&id).await.bytes().await.unwrap() == bytes);

    // Another file's blob copied onto this id's key, same length and all:
    // it does not decrypt here, and neither file's content is served.
    let other = other_bytes(len);
    let (other_id, other_key) = f.upload_keyed(&other).await;
    let other_blob = f.stores.read_blob(&other_key).await;
    f.stores.write_blob(&key, other_blob.clone()).await;
    assert_not_served("another id's blob", get(&f, &id, None).await, &bytes, 0).await;
    let part = get(&f, &id, Some("bytes=70000-70100")).await;
    assert_not_served("another id's blob, by range", part, &bytes, 0).await;
    // And the other file is still its own.
    assert!(f.download(&other_id).await.bytes().await.unwrap() == other);
    // Each blob swapped onto the other's key: neither reads.
    f.stores.write_blob(&other_key, original).await;
    assert_not_served("blobs swapped", get(&f, &other_id, None).await, &other, 0).await;
    assert!(f.server.log().contains("failed verification"));
}

#[tokio::test]
async fn tampered_blobs_are_detected_on_sqlite_and_files() {
    tampered_blobs_are_detected(Backends::SqliteFiles).await;
}

#[tokio::test]
async fn tampered_blobs_are_detected_on_postgres_and_garage() {
    tampered_blobs_are_detected(Backends::PostgresS3).await;
}
