//! Damaged ciphertext through the decoders of `mediavault-storage`.
//!
//! A known plaintext (its length and bytes chosen by the input) is sealed
//! under a key, salt, nonce prefix and media id also chosen by the input;
//! the blob is then damaged as the input says (bit flips, overwritten bytes,
//! truncation, extension, copied or moved spans) and decoded, sometimes with
//! the wrong key, id or length. Two decoders:
//!
//! - `open_all` and `SegmentOpener` on the bytes in memory: never a panic;
//!   `open_all` yields either an error or exactly the sealed plaintext; a
//!   segment that `SegmentOpener` accepts holds exactly the plaintext sealed
//!   at that position; an undamaged blob read with the right parameters
//!   always decodes.
//! - `Vault::read`, the streaming reader behind downloads, on a stored file
//!   whose blob is damaged on disk, for any byte range: every byte it yields
//!   is the stored plaintext at that offset; after an error it yields
//!   nothing more, and what came before ends on a segment boundary (no byte
//!   of a segment before its tag verified); without damage the whole range
//!   comes back.

#![no_main]

mod common;

use std::ops::Range;
use std::path::PathBuf;
use std::sync::OnceLock;

use futures::StreamExt;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use mediavault_storage::format::{
    FIRST_SEGMENT_PLAINTEXT, SEGMENT_PLAINTEXT, SEGMENT_SIZE, ciphertext_range, plaintext_range, segment_of,
};
use mediavault_storage::seal::{Header, SegmentOpener, open_all, seal_all};
use mediavault_storage::{App, Dek, MediaId, NewApp, Vault};

const P0: usize = FIRST_SEGMENT_PLAINTEXT;
const P: usize = SEGMENT_PLAINTEXT;

fuzz_target!(|data: &[u8]| {
    let mut u = Unstructured::new(data);
    let _ = if u.arbitrary::<bool>().unwrap_or(false) {
        in_memory(&mut u)
    } else {
        stored(&mut u)
    };
});

/// Lengths at and around the segment boundaries, or any up to three segments.
fn plaintext_len(u: &mut Unstructured) -> Result<usize> {
    if u.arbitrary()? {
        Ok(*u.choose(&[0, 1, 2, P0 - 1, P0, P0 + 1, P0 + P - 1, P0 + P, P0 + P + 1])?)
    } else {
        u.int_in_range(0..=P0 + 2 * P)
    }
}

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Damages `blob` as the input says. May leave it unchanged (a flip of no
/// bit, a byte overwritten by itself); callers compare with the original.
fn damage(u: &mut Unstructured, blob: &mut Vec<u8>) -> Result<()> {
    for _ in 0..u.int_in_range(0..=3u8)? {
        if blob.is_empty() {
            let len = u.int_in_range(0..=64)?;
            blob.extend_from_slice(u.bytes(len)?);
            continue;
        }
        let at = u.choose_index(blob.len())?;
        match u.int_in_range(0..=5u8)? {
            0 => blob[at] ^= u.arbitrary::<u8>()?,
            1 => blob[at] = u.arbitrary()?,
            2 => blob.truncate(at),
            3 => {
                let extra = u.int_in_range(1..=64)?;
                blob.extend_from_slice(u.bytes(extra)?);
            }
            // A span copied over another: segments duplicated or moved
            // within the file keep their own (valid) tags.
            4 => {
                let to = u.choose_index(blob.len())?;
                let len = u
                    .int_in_range(1..=SEGMENT_SIZE)?
                    .min(blob.len() - at)
                    .min(blob.len() - to);
                blob.copy_within(at..at + len, to);
            }
            // A span cut out, as when a segment is dropped.
            _ => {
                let len = u.int_in_range(1..=SEGMENT_SIZE)?.min(blob.len() - at);
                blob.drain(at..at + len);
            }
        }
    }
    Ok(())
}

fn in_memory(u: &mut Unstructured) -> Result<()> {
    let dek: [u8; 32] = u.arbitrary()?;
    let header = Header {
        salt: u.arbitrary()?,
        nonce_prefix: u.arbitrary()?,
    };
    let id_len = u.int_in_range(0..=40)?;
    let media_id = String::from_utf8_lossy(u.bytes(id_len)?).into_owned();
    let plaintext = pattern(plaintext_len(u)?, u.arbitrary()?);
    let blob = seal_all(&Dek::from_bytes(dek), header, &media_id, &plaintext);

    let mut damaged = blob.clone();
    damage(u, &mut damaged)?;
    // The parameters the reader is given: usually (and when the input runs
    // out) the right ones.
    let mut read_dek = dek;
    if !u.ratio(7, 8)? {
        read_dek[u.choose_index(32)?] ^= 1 << u.int_in_range(0..=7)?;
    }
    let mut read_id = media_id.clone();
    if !u.ratio(7, 8)? {
        read_id.push(u.arbitrary()?);
    }
    let true_len = plaintext.len() as u64;
    let read_len = match u.int_in_range(0..=7u8)? {
        5 => u.arbitrary()?,
        6 => true_len.saturating_add(u.int_in_range(0..=2 * SEGMENT_SIZE as u64)?),
        7 => true_len.saturating_sub(u.int_in_range(0..=2 * SEGMENT_SIZE as u64)?),
        _ => true_len,
    };
    let read_dek = Dek::from_bytes(read_dek);
    let faithful =
        damaged == blob && read_dek.as_bytes() == &dek && read_id == media_id && read_len == true_len;

    match open_all(&read_dek, &read_id, read_len, &damaged) {
        Ok(opened) => assert!(
            opened == plaintext,
            "open_all yielded bytes that were never sealed"
        ),
        Err(error) => assert!(!faithful, "an undamaged blob failed: {error}"),
    }

    // Segment by segment, as a range read does, for every segment that the
    // damaged blob still has room for.
    let Some(read_header) = Header::parse(&damaged) else {
        return Ok(());
    };
    let opener = SegmentOpener::new(&read_dek, &read_header, &read_id, read_len);
    for segment in 0.. {
        let range = ciphertext_range(segment, read_len);
        if range.end > damaged.len() as u64 {
            break;
        }
        let mut sealed = damaged[range.start as usize..range.end as usize].to_vec();
        match opener.open(segment, &mut sealed) {
            Ok(n) => {
                let plain = plaintext_range(segment, read_len);
                assert_eq!(n as u64, plain.end - plain.start);
                assert!(
                    plaintext.get(plain.start as usize..plain.end as usize) == Some(&sealed[..n]),
                    "segment {segment} opened to bytes that were never sealed there"
                );
            }
            Err(error) => assert!(!faithful, "an undamaged segment failed: {error}"),
        }
        if segment >= segment_of(read_len.saturating_sub(1)) {
            break;
        }
    }
    Ok(())
}

/// Files stored once per process, whose blobs the input damages on disk.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    vault: Vault,
    app: App,
    files: Vec<StoredFile>,
    _dir: tempfile::TempDir,
}

struct StoredFile {
    media_id: MediaId,
    path: PathBuf,
    plaintext: Vec<u8>,
    blob: Vec<u8>,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        let blobs = dir.path().join("blobs");
        let (runtime, vault) = common::vault(dir.path(), blobs.to_str().expect("utf-8 temp dir"));
        let (app, files) = runtime.block_on(async {
            let app = vault
                .create_app(NewApp {
                    name: "fuzz".into(),
                    capi: true,
                    ..NewApp::default()
                })
                .await
                .expect("app");
            let mut files = Vec::new();
            for len in [1, 100, P0, P0 + 1, P0 + P + 1, P0 + 2 * P + 7] {
                // Letters only: nothing the content sniffer takes for
                // another type than text/plain.
                let plaintext: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
                let before = vault.referenced_blob_keys().await.expect("keys");
                let mut upload = vault.begin_upload(&app, None).await.expect("begin");
                upload.write(&plaintext).await.expect("write");
                let media_id = upload.finish("text/plain").await.expect("finish");
                let key = vault
                    .referenced_blob_keys()
                    .await
                    .expect("keys")
                    .into_iter()
                    .find(|k| !before.contains(k))
                    .expect("a new blob key");
                let path = blobs.join(key);
                let blob = std::fs::read(&path).expect("stored blob");
                files.push(StoredFile {
                    media_id,
                    path,
                    plaintext,
                    blob,
                });
            }
            (app, files)
        });
        Fixture {
            runtime,
            vault,
            app,
            files,
            _dir: dir,
        }
    })
}

fn stored(u: &mut Unstructured) -> Result<()> {
    let fixture = fixture();
    let file = &fixture.files[u.choose_index(fixture.files.len())?];
    let len = file.plaintext.len() as u64;
    let start = u.int_in_range(0..=len)?;
    let want: Range<u64> = start..u.int_in_range(start..=len)?;
    let mut damaged = file.blob.clone();
    damage(u, &mut damaged)?;
    let undamaged = damaged == file.blob;
    if !undamaged {
        std::fs::write(&file.path, &damaged).expect("write damaged blob");
    }
    let (yielded, failed) = fixture.runtime.block_on(async {
        let media = fixture
            .vault
            .find(&fixture.app.id, &file.media_id)
            .await
            .expect("stored media is found");
        let mut yielded = Vec::new();
        let mut stream = match fixture.vault.read(&media, want.clone()).await {
            Ok(stream) => stream,
            Err(_) => return (yielded, true),
        };
        while let Some(piece) = stream.next().await {
            match piece {
                Ok(bytes) => yielded.extend_from_slice(&bytes),
                Err(_) => {
                    assert!(stream.next().await.is_none(), "bytes after a failure");
                    return (yielded, true);
                }
            }
        }
        (yielded, false)
    });
    if !undamaged {
        std::fs::write(&file.path, &file.blob).expect("restore blob");
    }
    let expected = &file.plaintext[want.start as usize..want.end as usize];
    assert!(
        expected.starts_with(&yielded),
        "read {want:?} yielded bytes that were never stored there"
    );
    if failed {
        assert!(!undamaged, "an undamaged blob failed to read {want:?}");
        if !yielded.is_empty() {
            let end = want.start + yielded.len() as u64;
            assert_eq!(
                end,
                plaintext_range(segment_of(end - 1), len).end,
                "read {want:?} stopped inside a segment"
            );
        }
    } else {
        assert_eq!(yielded.len(), expected.len(), "read {want:?} came back short");
    }
    Ok(())
}
