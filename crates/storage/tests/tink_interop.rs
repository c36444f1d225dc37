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

#[test]
fn wrapped_key_layout_is_nonce_ciphertext_tag() {
    let ring = keys::Keyring::parse(&keys::Keyring::generate_line("k")).unwrap();
    let wrapped = ring.wrap("m", &Dek::generate());
    assert_eq!(wrapped.bytes.len(), 12 + 32 + 16);
}
