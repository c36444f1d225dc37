//! Format v1 is Tink's AES-GCM-HKDF streaming AEAD, not merely something
//! self-consistent: an independent implementation (the `tink-streaming-aead`
//! crate) decrypts our blobs, and we decrypt its ciphertexts.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use mediavault_storage::format::{self, blob_aad};
use mediavault_storage::seal::{Header, open_all, seal_all};
use mediavault_storage::{Dek, keys};
use tink_core::StreamingAead;
use tink_proto::HashType;
use tink_streaming_aead::subtle::AesGcmHkdf;

fn tink(dek: &Dek) -> AesGcmHkdf {
    AesGcmHkdf::new(dek.as_bytes(), HashType::Sha256, 32, format::SEGMENT_SIZE, 0).unwrap()
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ (i >> 8) as u8).collect()
}

const P0: usize = format::FIRST_SEGMENT_PLAINTEXT;
const P: usize = format::SEGMENT_PLAINTEXT;
const SIZES: [usize; 8] = [0, 1, P0 - 1, P0, P0 + 1, P0 + P, P0 + P + 1, 5 * P + 123];

#[test]
fn tink_decrypts_our_blobs() {
    let dek = Dek::generate();
    for len in SIZES {
        let plain = pattern(len);
        let blob = seal_all(&dek, Header::random(), "media-42", &plain);
        let mut reader = tink(&dek)
            .new_decrypting_reader(Box::new(std::io::Cursor::new(blob)), &blob_aad("media-42"))
            .unwrap();
        let mut back = Vec::new();
        reader
            .read_to_end(&mut back)
            .unwrap_or_else(|e| panic!("tink refused len {len}: {e}"));
        assert!(back == plain, "len {len}");
    }
}

/// A `Write` whose bytes stay readable after tink takes ownership of it.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn we_decrypt_tink_ciphertexts() {
    let dek = Dek::generate();
    for len in SIZES {
        let plain = pattern(len);
        let sink = Shared::default();
        let mut writer = tink(&dek)
            .new_encrypting_writer(Box::new(sink.clone()), &blob_aad("media-7"))
            .unwrap();
        writer.write_all(&plain).unwrap();
        writer.close().unwrap();
        let blob = sink.0.lock().unwrap().clone();
        assert_eq!(blob.len() as u64, format::ciphertext_len(len as u64), "len {len}");
        assert!(
            open_all(&dek, "media-7", len as u64, &blob).unwrap() == plain,
            "len {len}"
        );
        // The same ciphertext under another media id is refused.
        assert!(open_all(&dek, "media-8", len as u64, &blob).is_err());
    }
}

/// The wrapped data key is nonce (12) ‖ AES-256-GCM ciphertext (32) ‖ tag
/// (16) under the KEK, with the associated data docs/format.md gives:
/// opened here by hand, with `aes-gcm` alone, it yields the data key.
#[test]
fn wrapped_key_layout_is_nonce_ciphertext_tag() {
    use aes_gcm::aead::{AeadInOut, KeyInit};
    use aes_gcm::{Aes256Gcm, Nonce};
    use base64::Engine as _;

    let line = keys::ConfiguredKeys::generate_line("k1");
    let ring = keys::ConfiguredKeys::parse(&line).unwrap();
    let dek = Dek::generate();
    let wrapped = ring.wrap("media-9", &dek);
    assert_eq!(wrapped.kek_id, "k1");
    assert_eq!(wrapped.bytes.len(), 12 + 32 + 16);

    let kek = base64::engine::general_purpose::STANDARD
        .decode(line.strip_prefix("k1:").unwrap())
        .unwrap();
    let (nonce, rest) = wrapped.bytes.split_at(12);
    let (ciphertext, tag) = rest.split_at(32);
    let nonce: [u8; 12] = nonce.try_into().unwrap();
    let tag: [u8; 16] = tag.try_into().unwrap();
    let open = |aad: &[u8]| {
        let mut key = ciphertext.to_vec();
        Aes256Gcm::new_from_slice(&kek)
            .unwrap()
            .decrypt_inout_detached(&Nonce::from(nonce), aad, key.as_mut_slice().into(), &tag.into())
            .map(|()| key)
    };
    let key = open(b"mediavault:dek:v1:media-9:k1").expect("opens with the documented associated data");
    assert_eq!(key.as_slice(), dek.as_bytes());
    // The associated data binds both the media id and the KEK id.
    assert!(open(b"mediavault:dek:v1:media-8:k1").is_err());
    assert!(open(b"mediavault:dek:v1:media-9:k2").is_err());
}
