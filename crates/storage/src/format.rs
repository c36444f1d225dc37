//! Format v1 of the encrypted blob: constants and the segment arithmetic that
//! maps plaintext offsets onto ciphertext ranges. Frozen: see `docs/format.md`.
//! A change to anything here is a new format version, never an edit.

use std::ops::Range;

/// The version number stored in every media row encrypted with this layout.
pub const VERSION: i32 = 1;
/// Ciphertext bytes per segment (Tink `ciphertext_segment_size`).
pub const SEGMENT_SIZE: usize = 65_536;
/// AES-GCM tag bytes at the end of every segment.
pub const TAG_LEN: usize = 16;
/// Random salt bytes in the header; also the derived key size.
pub const SALT_LEN: usize = 32;
/// Random nonce-prefix bytes in the header.
pub const NONCE_PREFIX_LEN: usize = 7;
/// Header: one length byte, the salt and the nonce prefix.
pub const HEADER_LEN: usize = 1 + SALT_LEN + NONCE_PREFIX_LEN;
/// Plaintext bytes in segment 0, which shares its room with the header.
pub const FIRST_SEGMENT_PLAINTEXT: usize = SEGMENT_SIZE - HEADER_LEN - TAG_LEN;
/// Plaintext bytes in every later segment.
pub const SEGMENT_PLAINTEXT: usize = SEGMENT_SIZE - TAG_LEN;
/// The most plaintext one blob holds: a segment's index is 32 bits of its
/// nonce, so 2^32 segments, the first shorter (about 281 TB). One segment
/// is kept in hand for a final segment that holds nothing. Uploads are
/// refused past it as past any size limit.
pub const MAX_PLAINTEXT: u64 =
    FIRST_SEGMENT_PLAINTEXT as u64 + (u32::MAX as u64 - 1) * SEGMENT_PLAINTEXT as u64;
/// Data-key bytes (AES-256).
pub const DEK_LEN: usize = 32;
/// Wrapped data key: nonce, encrypted key, tag.
pub const WRAPPED_DEK_LEN: usize = 12 + DEK_LEN + TAG_LEN;

/// Prefix of the HKDF `info` (the Tink associated data) of a blob.
pub const BLOB_AAD_PREFIX: &str = "mediavault:v1:";
/// Prefix of the associated data that binds a wrapped key to its row.
pub const DEK_AAD_PREFIX: &str = "mediavault:dek:v1:";

const _: () = assert!(HEADER_LEN == 0x28);

/// The Tink associated data of a blob: binds its segments to one media id.
pub fn blob_aad(media_id: &str) -> Vec<u8> {
    [BLOB_AAD_PREFIX.as_bytes(), media_id.as_bytes()].concat()
}

/// The associated data of a wrapped data key.
pub fn dek_aad(media_id: &str, kek_id: &str) -> Vec<u8> {
    format!("{DEK_AAD_PREFIX}{media_id}:{kek_id}").into_bytes()
}

/// Number of segments of a plaintext of `len` bytes (an empty file has one).
pub fn segment_count(len: u64) -> u64 {
    let first = FIRST_SEGMENT_PLAINTEXT as u64;
    if len <= first {
        1
    } else {
        1 + (len - first).div_ceil(SEGMENT_PLAINTEXT as u64)
    }
}

/// Size of the whole blob for a plaintext of `len` bytes.
pub fn ciphertext_len(len: u64) -> u64 {
    HEADER_LEN as u64 + len + TAG_LEN as u64 * segment_count(len)
}

/// The segment that holds plaintext byte `offset`.
pub fn segment_of(offset: u64) -> u64 {
    let first = FIRST_SEGMENT_PLAINTEXT as u64;
    if offset < first {
        0
    } else {
        1 + (offset - first) / SEGMENT_PLAINTEXT as u64
    }
}

/// Plaintext bytes covered by `segment` of a file of `len` bytes.
pub fn plaintext_range(segment: u64, len: u64) -> Range<u64> {
    let first = FIRST_SEGMENT_PLAINTEXT as u64;
    let (start, end) = match segment {
        0 => (0, first),
        i => (
            first + (i - 1) * SEGMENT_PLAINTEXT as u64,
            first + i * SEGMENT_PLAINTEXT as u64,
        ),
    };
    start.min(len)..end.min(len)
}

/// Blob bytes of `segment` (its ciphertext and tag) for a file of `len` bytes.
pub fn ciphertext_range(segment: u64, len: u64) -> Range<u64> {
    let plain = plaintext_range(segment, len);
    let start = match segment {
        0 => HEADER_LEN as u64,
        i => i * SEGMENT_SIZE as u64,
    };
    start..start + (plain.end - plain.start) + TAG_LEN as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    const P0: u64 = FIRST_SEGMENT_PLAINTEXT as u64;
    const P: u64 = SEGMENT_PLAINTEXT as u64;

    /// Every segment of the largest file a blob holds has a 32-bit index.
    #[test]
    fn the_largest_plaintext_fits_the_nonces_segment_index() {
        let last = segment_count(MAX_PLAINTEXT) - 1;
        assert!(last <= u64::from(u32::MAX), "{last}");
        assert_eq!(segment_of(MAX_PLAINTEXT - 1), last);
    }

    #[test]
    fn constants_match_tink_aes_gcm_hkdf_65536() {
        assert_eq!(HEADER_LEN, 40);
        assert_eq!(FIRST_SEGMENT_PLAINTEXT, 65_480);
        assert_eq!(SEGMENT_PLAINTEXT, 65_520);
        assert_eq!(WRAPPED_DEK_LEN, 60);
    }

    #[test]
    fn segment_count_at_boundaries() {
        assert_eq!(segment_count(0), 1);
        assert_eq!(segment_count(1), 1);
        assert_eq!(segment_count(P0 - 1), 1);
        assert_eq!(
            segment_count(P0),
            1,
            "an exactly full segment gets no empty successor"
        );
        assert_eq!(segment_count(P0 + 1), 2);
        assert_eq!(segment_count(P0 + P), 2);
        assert_eq!(segment_count(P0 + P + 1), 3);
        assert_eq!(segment_count(100 << 20), 1 + ((100 << 20) - P0).div_ceil(P));
    }

    #[test]
    fn ciphertext_len_is_header_plus_tags() {
        assert_eq!(ciphertext_len(0), 56);
        assert_eq!(ciphertext_len(P0), SEGMENT_SIZE as u64);
        assert_eq!(ciphertext_len(P0 + 1), SEGMENT_SIZE as u64 + 1 + 16);
    }

    #[test]
    fn segments_tile_the_plaintext_and_the_blob() {
        for len in [0, 1, P0 - 1, P0, P0 + 1, P0 + P, P0 + P + 1, 10 * P + 7] {
            let count = segment_count(len);
            let mut plain_end = 0;
            let mut blob_end = HEADER_LEN as u64;
            for i in 0..count {
                let plain = plaintext_range(i, len);
                let blob = ciphertext_range(i, len);
                assert_eq!(plain.start, plain_end, "len {len} segment {i}");
                assert_eq!(blob.start, blob_end, "len {len} segment {i}");
                assert_eq!(blob.end - blob.start, plain.end - plain.start + TAG_LEN as u64);
                plain_end = plain.end;
                blob_end = blob.end;
            }
            assert_eq!(plain_end, len);
            assert_eq!(blob_end, ciphertext_len(len));
        }
    }

    #[test]
    fn segment_of_agrees_with_plaintext_range() {
        let len = 5 * P;
        for offset in [0, 1, P0 - 1, P0, P0 + 1, P0 + P - 1, P0 + P, len - 1] {
            let range = plaintext_range(segment_of(offset), len);
            assert!(range.contains(&offset), "offset {offset} not in {range:?}");
        }
    }
}
