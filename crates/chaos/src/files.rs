//! The files a run uploads: sizes drawn log-uniformly (as many 4 KiB files
//! as 4 MiB ones, so small and large both get their share), random content
//! behind a real file signature (the service sniffs it against `file_type`),
//! all derived from a seed and the file's index so a run can be repeated
//! exactly and no file needs to be kept in memory to check it later.

use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// Declared type, file extension and the signature the content starts with.
const KINDS: [(&str, &str, &[u8]); 3] = [
    (
        "image/png",
        "png",
        b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\0\0\0\x01\0\0\0\x01\x08\x06\0\0\0\x1f\x15\xc4\x89",
    ),
    ("image/jpeg", "jpg", b"\xff\xd8\xff\xe0\0\x10JFIF\0"),
    ("application/pdf", "pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
];

/// One file of a run, before its bytes exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileSpec {
    pub index: u64,
    pub size: usize,
    kind: usize,
    seed: u64,
}

/// A generated file: its bytes and what they hash to.
pub struct File {
    pub spec: FileSpec,
    pub bytes: Vec<u8>,
    pub sha256: String,
}

/// One stream per (seed, index, purpose): SplitMix64's finaliser spreads
/// neighbouring indices over unrelated seeds.
fn stream(seed: u64, index: u64, purpose: u64) -> StdRng {
    let mut x =
        seed ^ index.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ purpose.wrapping_mul(0xd1b5_4a32_d192_ed03);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    StdRng::seed_from_u64(x ^ (x >> 31))
}

impl FileSpec {
    /// File `index` of the run seeded `seed`, between `min` and `max` bytes.
    pub fn new(seed: u64, index: u64, min: usize, max: usize) -> FileSpec {
        let mut rng = stream(seed, index, 0);
        let (low, high) = ((min as f64).ln(), (max as f64).ln());
        let size = (low + rng.random::<f64>() * (high - low)).exp().round() as usize;
        FileSpec {
            index,
            size: size.clamp(min, max),
            kind: rng.random_range(0..KINDS.len()),
            seed,
        }
    }

    pub fn mime_type(&self) -> &'static str {
        KINDS[self.kind].0
    }

    pub fn file_name(&self) -> String {
        format!("file-{:06}.{}", self.index, KINDS[self.kind].1)
    }

    /// The index back from a name [`FileSpec::file_name`] made.
    pub fn index_of(file_name: &str) -> Option<u64> {
        file_name.strip_prefix("file-")?.split('.').next()?.parse().ok()
    }

    /// Makes the bytes (CPU work: call it off the async runtime).
    pub fn generate(self) -> File {
        let mut bytes = vec![0; self.size];
        stream(self.seed, self.index, 1).fill_bytes(&mut bytes);
        let signature = KINDS[self.kind].2;
        let n = signature.len().min(bytes.len());
        bytes[..n].copy_from_slice(&signature[..n]);
        let sha256 = hex::encode(Sha256::digest(&bytes));
        File {
            spec: self,
            bytes,
            sha256,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KIB: usize = 1024;
    const MIB: usize = 1024 * 1024;

    #[test]
    fn sizes_are_log_uniform_bounded_and_repeatable() {
        let specs: Vec<FileSpec> = (0..1000).map(|i| FileSpec::new(7, i, KIB, 20 * MIB)).collect();
        assert!(specs.iter().all(|s| (KIB..=20 * MIB).contains(&s.size)));
        let total: usize = specs.iter().map(|s| s.size).sum();
        // The mean of log-uniform [1 KiB, 20 MiB] is about 2.1 MB.
        assert!((1_500_000_000..2_700_000_000).contains(&total), "total {total}");
        // A tenth of the files in each tenth of the log range, roughly.
        let below_32k = specs.iter().filter(|s| s.size < 32 * KIB).count();
        assert!((280..420).contains(&below_32k), "{below_32k} below 32 KiB");
        assert_eq!(
            specs,
            (0..1000)
                .map(|i| FileSpec::new(7, i, KIB, 20 * MIB))
                .collect::<Vec<_>>()
        );
        assert_ne!(specs[0], FileSpec::new(8, 0, KIB, 20 * MIB));
    }

    #[test]
    fn content_carries_its_signature_and_hash() {
        let file = FileSpec::new(7, 3, KIB, 64 * KIB).generate();
        assert_eq!(file.bytes.len(), file.spec.size);
        assert!(file.bytes.starts_with(&KINDS[file.spec.kind].2[..4]));
        assert_eq!(file.sha256, hex::encode(Sha256::digest(&file.bytes)));
        assert_eq!(file.bytes, file.spec.generate().bytes);
        assert_eq!(FileSpec::index_of(&file.spec.file_name()), Some(3));
    }
}
