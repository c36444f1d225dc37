//! Throughput of the blob format on one core: encrypting a plaintext into
//! blob segments, and authenticating and decrypting them again. `make bench`
//! reads the figures from criterion's estimates (group `seal`).

use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use mediavault_storage::Dek;
use mediavault_storage::format::{ciphertext_len, ciphertext_range, segment_count};
use mediavault_storage::seal::{Encryptor, Header, SegmentOpener, seal_all};

/// Large enough that per-file work (HKDF, header) is noise, small enough to
/// stay a few cache-missing megabytes rather than the whole memory bus.
const PLAINTEXT_LEN: usize = 16 << 20;
const MEDIA_ID: &str = "0b9d3c57-2f43-4a8e-9d52-8cb1f1a0e6d4";

fn plaintext() -> Vec<u8> {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..PLAINTEXT_LEN)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn seal(c: &mut Criterion) {
    let dek = Dek::generate();
    let plain = plaintext();
    let len = PLAINTEXT_LEN as u64;
    let mut group = c.benchmark_group("seal");
    group
        .throughput(Throughput::Bytes(len))
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));

    // As an upload does it: one Encryptor per file, plaintext in, blob
    // segments appended to a buffer that is reused (uploads reuse theirs).
    let mut blob = Vec::with_capacity(ciphertext_len(len) as usize);
    group.bench_function("encrypt", |b| {
        b.iter(|| {
            blob.clear();
            let mut encryptor = Encryptor::new(&dek, Header::random(), MEDIA_ID);
            blob.extend_from_slice(&encryptor.header_bytes());
            encryptor.update(black_box(&plain), &mut blob);
            encryptor.finish(&mut blob);
            black_box(blob.len())
        })
    });

    // As a download does it: each segment authenticated and decrypted in
    // place. The copy of the blob each iteration needs is made outside the
    // measured time.
    let header = Header::random();
    let sealed = seal_all(&dek, header, MEDIA_ID, &plain);
    group.bench_function("decrypt", |b| {
        b.iter_batched_ref(
            || sealed.clone(),
            |blob| {
                let opener = SegmentOpener::new(&dek, &header, MEDIA_ID, len);
                let mut plain_bytes = 0;
                for segment in 0..segment_count(len) {
                    let range = ciphertext_range(segment, len);
                    let sealed_segment = &mut blob[range.start as usize..range.end as usize];
                    plain_bytes += opener.open(segment, sealed_segment).expect("own blob verifies");
                }
                assert_eq!(plain_bytes, PLAINTEXT_LEN);
                black_box(plain_bytes)
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, seal);
criterion_main!(benches);
