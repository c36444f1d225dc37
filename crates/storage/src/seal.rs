//! The streaming segment cipher of format v1 (Tink AES-GCM-HKDF, 64 KiB
//! segments): an `Encryptor` that turns a plaintext stream into blob bytes, and
//! a `SegmentOpener` that authenticates and decrypts one segment at a time.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::format::{
    FIRST_SEGMENT_PLAINTEXT, HEADER_LEN, NONCE_PREFIX_LEN, SALT_LEN, SEGMENT_PLAINTEXT, TAG_LEN, blob_aad,
    segment_count,
};
use crate::keys::Dek;

/// A segment failed authentication, or the blob is not shaped as its row says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("segment {segment} failed authentication")]
pub struct SegmentError {
    pub segment: u64,
}

/// The per-file parameters kept both in the blob header and in the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub salt: [u8; SALT_LEN],
    pub nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl Header {
    pub fn random() -> Header {
        let mut header = Header {
            salt: [0; SALT_LEN],
            nonce_prefix: [0; NONCE_PREFIX_LEN],
        };
        let mut rng = rand::rng();
        rng.fill_bytes(&mut header.salt);
        rng.fill_bytes(&mut header.nonce_prefix);
        header
    }

    /// The 40 header bytes that open a blob.
    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let mut bytes = [0u8; HEADER_LEN];
        bytes[0] = HEADER_LEN as u8;
        bytes[1..1 + SALT_LEN].copy_from_slice(&self.salt);
        bytes[1 + SALT_LEN..].copy_from_slice(&self.nonce_prefix);
        bytes
    }

    /// Reads a header back from the first 40 bytes of a blob.
    pub fn parse(bytes: &[u8]) -> Option<Header> {
        if bytes.len() < HEADER_LEN || bytes[0] as usize != HEADER_LEN {
            return None;
        }
        Some(Header {
            salt: bytes[1..1 + SALT_LEN].try_into().ok()?,
            nonce_prefix: bytes[1 + SALT_LEN..HEADER_LEN].try_into().ok()?,
        })
    }
}

/// AES-256-GCM keyed with the segment key of one file: AWS-LC's, whose
/// assembly seals the segments at twice the speed of the pure-Rust
/// `aes-gcm` on one core and opens them at three and a half times
/// (docs/benchmarks.md, "Encryption on one core"). The key schedule lives
/// in a context AWS-LC allocates and wipes when it frees it, as `aes-gcm`'s
/// `zeroize` did. The nonces come from the format, never from a counter of
/// the key's, hence `LessSafeKey`.
struct SegmentCipher {
    aead: LessSafeKey,
    nonce_prefix: [u8; NONCE_PREFIX_LEN],
}

impl SegmentCipher {
    fn new(dek: &Dek, header: &Header, media_id: &str) -> SegmentCipher {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(Some(&header.salt), dek.as_bytes())
            .expand(&blob_aad(media_id), key.as_mut_slice())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SegmentCipher {
            aead: LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key.as_slice()).expect("32-byte key")),
            nonce_prefix: header.nonce_prefix,
        }
    }

    fn nonce(&self, segment: u64, last: bool) -> Nonce {
        let index = u32::try_from(segment).expect("format v1 holds at most 2^32 segments");
        let mut nonce = [0u8; 12];
        nonce[..NONCE_PREFIX_LEN].copy_from_slice(&self.nonce_prefix);
        nonce[NONCE_PREFIX_LEN..11].copy_from_slice(&index.to_be_bytes());
        nonce[11] = u8::from(last);
        Nonce::assume_unique_for_key(nonce)
    }

    /// Appends the sealed `plaintext` (ciphertext, then tag) to `out`; the
    /// encryption runs in place in `out`, so the plaintext is copied once.
    fn seal_into(&self, segment: u64, last: bool, plaintext: &[u8], out: &mut Vec<u8>) {
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .aead
            .seal_in_place_separate_tag(self.nonce(segment, last), Aad::empty(), &mut out[start..])
            .expect("a segment is far below the AES-GCM length limit");
        out.extend_from_slice(tag.as_ref());
    }
}

/// Encrypts a plaintext stream into the blob layout, one segment at a time.
/// Holds at most one segment of plaintext.
pub struct Encryptor {
    cipher: SegmentCipher,
    header: Header,
    pending: Vec<u8>,
    segment: u64,
}

impl Encryptor {
    pub fn new(dek: &Dek, header: Header, media_id: &str) -> Encryptor {
        Encryptor {
            cipher: SegmentCipher::new(dek, &header, media_id),
            header,
            pending: Vec::with_capacity(SEGMENT_PLAINTEXT),
            segment: 0,
        }
    }

    /// The bytes that open the blob; write them before any segment.
    pub fn header_bytes(&self) -> [u8; HEADER_LEN] {
        self.header.to_bytes()
    }

    fn capacity(&self) -> usize {
        if self.segment == 0 {
            FIRST_SEGMENT_PLAINTEXT
        } else {
            SEGMENT_PLAINTEXT
        }
    }

    /// Takes plaintext; appends every completed segment to `out`. A full
    /// segment is held back until more data shows it is not the last.
    pub fn update(&mut self, mut data: &[u8], out: &mut Vec<u8>) {
        while !data.is_empty() {
            if self.pending.len() == self.capacity() {
                self.seal_pending(false, out);
            }
            let room = self.capacity() - self.pending.len();
            if self.pending.is_empty() && data.len() > room {
                // A whole segment with more data behind it is not the last:
                // seal it straight from `data`, without a copy through
                // `pending`, whose memcpy was a third of the encrypt profile.
                self.cipher.seal_into(self.segment, false, &data[..room], out);
                self.segment += 1;
                data = &data[room..];
                continue;
            }
            let n = room.min(data.len());
            self.pending.extend_from_slice(&data[..n]);
            data = &data[n..];
        }
    }

    /// Seals the last segment (possibly empty) into `out`.
    pub fn finish(mut self, out: &mut Vec<u8>) {
        self.seal_pending(true, out);
    }

    fn seal_pending(&mut self, last: bool, out: &mut Vec<u8>) {
        self.cipher.seal_into(self.segment, last, &self.pending, out);
        self.pending.clear();
        self.segment += 1;
    }
}

/// Authenticates and decrypts the segments of one stored file.
pub struct SegmentOpener {
    cipher: SegmentCipher,
    last_segment: u64,
}

impl SegmentOpener {
    /// `plaintext_len` comes from the metadata row, never from the blob.
    pub fn new(dek: &Dek, header: &Header, media_id: &str, plaintext_len: u64) -> SegmentOpener {
        SegmentOpener {
            cipher: SegmentCipher::new(dek, header, media_id),
            last_segment: segment_count(plaintext_len) - 1,
        }
    }

    /// Decrypts `sealed` (one segment's ciphertext and tag) in place and
    /// returns its plaintext length. On failure the buffer's content is
    /// unspecified and must not be used.
    pub fn open(&self, segment: u64, sealed: &mut [u8]) -> Result<usize, SegmentError> {
        let fail = SegmentError { segment };
        let plain_len = sealed.len().checked_sub(TAG_LEN).ok_or(fail)?;
        let nonce = self.cipher.nonce(segment, segment == self.last_segment);
        self.cipher
            .aead
            .open_in_place(nonce, Aad::empty(), sealed)
            .map_err(|_| fail)?;
        Ok(plain_len)
    }
}

/// Encrypts a whole buffer: the blob of `plaintext` (tests and tools).
pub fn seal_all(dek: &Dek, header: Header, media_id: &str, plaintext: &[u8]) -> Vec<u8> {
    let mut encryptor = Encryptor::new(dek, header, media_id);
    let mut out = encryptor.header_bytes().to_vec();
    encryptor.update(plaintext, &mut out);
    encryptor.finish(&mut out);
    out
}

/// Decrypts a whole blob whose plaintext is `plaintext_len` bytes long,
/// segment by segment; fails on the first segment that does not verify.
pub fn open_all(dek: &Dek, media_id: &str, plaintext_len: u64, blob: &[u8]) -> Result<Vec<u8>, SegmentError> {
    use crate::format::{ciphertext_len, ciphertext_range};
    let header = Header::parse(blob).ok_or(SegmentError { segment: 0 })?;
    // A plaintext never outgrows its blob; checked first because the blob
    // size of a length near u64::MAX does not fit in a u64.
    if plaintext_len > blob.len() as u64 || blob.len() as u64 != ciphertext_len(plaintext_len) {
        return Err(SegmentError {
            segment: segment_count(plaintext_len) - 1,
        });
    }
    let opener = SegmentOpener::new(dek, &header, media_id, plaintext_len);
    let mut out = Vec::with_capacity(plaintext_len as usize);
    for segment in 0..segment_count(plaintext_len) {
        let range = ciphertext_range(segment, plaintext_len);
        let mut sealed = blob[range.start as usize..range.end as usize].to_vec();
        let n = opener.open(segment, &mut sealed)?;
        out.extend_from_slice(&sealed[..n]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{SEGMENT_SIZE, ciphertext_len, ciphertext_range};

    const P0: usize = FIRST_SEGMENT_PLAINTEXT;
    const P: usize = SEGMENT_PLAINTEXT;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i * 31 + i / 251) as u8).collect()
    }

    #[test]
    fn round_trip_at_every_boundary() {
        let dek = Dek::generate();
        for len in [
            0,
            1,
            P0 - 1,
            P0,
            P0 + 1,
            P0 + P - 1,
            P0 + P,
            P0 + P + 1,
            3 * P + 5,
        ] {
            let plain = pattern(len);
            let blob = seal_all(&dek, Header::random(), "media-1", &plain);
            assert_eq!(blob.len() as u64, ciphertext_len(len as u64), "len {len}");
            assert_eq!(
                open_all(&dek, "media-1", len as u64, &blob).unwrap(),
                plain,
                "len {len}"
            );
        }
    }

    #[test]
    fn round_trip_100_mib_fed_in_odd_chunks() {
        let dek = Dek::generate();
        let len = 100 << 20;
        let plain = pattern(len);
        let mut encryptor = Encryptor::new(&dek, Header::random(), "big");
        let mut blob = encryptor.header_bytes().to_vec();
        for chunk in plain.chunks(8191) {
            encryptor.update(chunk, &mut blob);
        }
        encryptor.finish(&mut blob);
        assert_eq!(blob.len() as u64, ciphertext_len(len as u64));
        assert!(open_all(&dek, "big", len as u64, &blob).unwrap() == plain);
    }

    #[test]
    fn ciphertext_does_not_contain_the_plaintext() {
        let plain = vec![b'A'; 4 * P];
        let blob = seal_all(&Dek::generate(), Header::random(), "m", &plain);
        assert!(!blob.windows(64).any(|w| w == &plain[..64]));
    }

    /// Every single flipped bit, in header, body or tag, is refused.
    #[test]
    fn any_flipped_bit_is_refused() {
        let dek = Dek::generate();
        let len = P0 + 100;
        let blob = seal_all(&dek, Header::random(), "m", &pattern(len));
        for byte in (0..blob.len()).step_by(97).chain([0, 1, 39, 40, blob.len() - 1]) {
            for bit in [0, 7] {
                let mut bad = blob.clone();
                bad[byte] ^= 1 << bit;
                assert!(
                    open_all(&dek, "m", len as u64, &bad).is_err(),
                    "byte {byte} bit {bit}"
                );
            }
        }
    }

    #[test]
    fn truncation_and_extension_are_refused() {
        let dek = Dek::generate();
        let len = 2 * P + 10;
        let blob = seal_all(&dek, Header::random(), "m", &pattern(len));
        for cut in [1, 16, 17, 100] {
            assert!(open_all(&dek, "m", len as u64, &blob[..blob.len() - cut]).is_err());
        }
        // Dropping the whole last segment leaves a blob that is well formed
        // for a shorter file, but its new last segment was sealed as non-last.
        let shorter = P0 + P;
        assert!(open_all(&dek, "m", shorter as u64, &blob[..SEGMENT_SIZE * 2]).is_err());
        let mut longer = blob.clone();
        longer.extend_from_slice(&[0; 32]);
        assert!(open_all(&dek, "m", len as u64, &longer).is_err());
    }

    #[test]
    fn swapped_duplicated_or_dropped_segments_are_refused() {
        let dek = Dek::generate();
        let len = 4 * P;
        let blob = seal_all(&dek, Header::random(), "m", &pattern(len));
        let seg = |i: u64| {
            let r = ciphertext_range(i, len as u64);
            blob[r.start as usize..r.end as usize].to_vec()
        };
        // Segments 1 and 2 are both full, so swapping keeps every offset.
        let mut swapped = blob[..SEGMENT_SIZE].to_vec();
        swapped.extend(seg(2));
        swapped.extend(seg(1));
        swapped.extend_from_slice(&blob[3 * SEGMENT_SIZE..]);
        assert!(open_all(&dek, "m", len as u64, &swapped).is_err());

        let mut duplicated = blob[..SEGMENT_SIZE].to_vec();
        duplicated.extend(seg(1));
        duplicated.extend(seg(1));
        duplicated.extend_from_slice(&blob[3 * SEGMENT_SIZE..]);
        assert!(open_all(&dek, "m", len as u64, &duplicated).is_err());

        let mut dropped = blob[..SEGMENT_SIZE].to_vec();
        dropped.extend_from_slice(&blob[2 * SEGMENT_SIZE..]);
        assert!(open_all(&dek, "m", (len - P) as u64, &dropped).is_err());
    }

    #[test]
    fn blob_moved_to_another_id_or_key_is_refused() {
        let dek = Dek::generate();
        let blob = seal_all(&dek, Header::random(), "media-a", b"hello");
        assert!(open_all(&dek, "media-b", 5, &blob).is_err());
        assert!(open_all(&Dek::generate(), "media-a", 5, &blob).is_err());
        assert_eq!(open_all(&dek, "media-a", 5, &blob).unwrap(), b"hello");
    }

    /// A segment that fails to verify yields an error, not bytes: `open`
    /// reports the failure, and the caller gets no plaintext length to use.
    #[test]
    fn failed_segment_returns_no_length() {
        let dek = Dek::generate();
        let header = Header::random();
        let blob = seal_all(&dek, header, "m", &pattern(1000));
        let opener = SegmentOpener::new(&dek, &header, "m", 1000);
        let range = ciphertext_range(0, 1000);
        let mut sealed = blob[range.start as usize..range.end as usize].to_vec();
        sealed[5] ^= 0x80;
        assert_eq!(opener.open(0, &mut sealed), Err(SegmentError { segment: 0 }));
    }

    /// Found by the `blob_decoder` fuzz target: a claimed length near
    /// u64::MAX overflowed the expected blob size instead of being refused.
    #[test]
    fn a_length_past_any_blob_is_refused() {
        let dek = Dek::from_bytes([0x5a; 32]);
        let blob = seal_all(&dek, Header::random(), "S", &pattern(195_078));
        for claimed in [18_446_744_073_709_551_360, u64::MAX, blob.len() as u64 + 1] {
            assert!(open_all(&dek, "S", claimed, &blob).is_err(), "{claimed}");
        }
        assert_eq!(open_all(&dek, "S", 195_078, &blob).unwrap(), pattern(195_078));
    }

    #[test]
    fn header_round_trips() {
        let header = Header::random();
        let bytes = header.to_bytes();
        assert_eq!(bytes[0], 0x28);
        assert_eq!(Header::parse(&bytes), Some(header));
        assert_eq!(Header::parse(&bytes[..39]), None);
    }
}
