//! The blocks that uploads' parts are filled in, kept for the next part
//! rather than given back to the allocator.
//!
//! Freed, a 1 MiB block went back to the glibc heap (arena) it came from,
//! which keeps it for the threads that allocate there: with sixteen 100 MiB
//! uploads at once, parts filled on one runtime thread left their blocks
//! resident in its heap while the next parts were filled on another, and
//! the server's peak went 30-60 MiB past what its parts held (173-200 MiB
//! against about 140). Blocks that come back to the pool are reused
//! whichever thread fills the next part, so the peak is what parts hold
//! (159-160 MiB; docs/benchmarks.md).

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use object_store::PutPayload;

/// Parts are filled in blocks of this size, which divides a part exactly,
/// so a part holds no spare capacity.
const PART_BLOCK: usize = 1024 * 1024;

/// Free blocks kept for reuse; more are given back to the allocator. The
/// parts in flight (8 of 5 MiB) and sixteen uploads filling theirs need
/// about this many at once, and idle the pool holds no more.
const BLOCKS_KEPT: usize = 64;

#[derive(Default)]
pub(crate) struct BlockPool {
    free: Mutex<Vec<Vec<u8>>>,
}

impl BlockPool {
    fn take(&self) -> Vec<u8> {
        let reused = self.free.lock().expect("never poisoned").pop();
        reused.unwrap_or_else(|| Vec::with_capacity(PART_BLOCK))
    }

    fn give_back(&self, mut block: Vec<u8>) {
        if block.capacity() != PART_BLOCK {
            return;
        }
        block.clear();
        let mut free = self.free.lock().expect("never poisoned");
        if free.len() < BLOCKS_KEPT {
            free.push(block);
        }
    }

    #[cfg(test)]
    fn free_blocks(&self) -> usize {
        self.free.lock().expect("never poisoned").len()
    }
}

/// A filled block, handed to the store as `Bytes`; back to its pool when
/// the store lets go of it.
struct PooledBlock {
    data: Vec<u8>,
    pool: Arc<BlockPool>,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        &self.data
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        self.pool.give_back(std::mem::take(&mut self.data));
    }
}

/// A part being filled, block by block.
pub(crate) struct PartBuffer {
    pool: Arc<BlockPool>,
    full: Vec<Bytes>,
    /// The block being filled; without capacity until the first byte.
    filling: Vec<u8>,
    len: usize,
}

impl PartBuffer {
    pub(crate) fn new(pool: &Arc<BlockPool>) -> PartBuffer {
        PartBuffer {
            pool: pool.clone(),
            full: Vec::new(),
            filling: Vec::new(),
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn extend_from_slice(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            if self.filling.capacity() == 0 {
                self.filling = self.pool.take();
            }
            let n = (PART_BLOCK - self.filling.len()).min(data.len());
            self.filling.extend_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.filling.len() == PART_BLOCK {
                self.seal_block();
            }
        }
    }

    fn seal_block(&mut self) {
        let data = std::mem::take(&mut self.filling);
        let pool = self.pool.clone();
        self.full.push(Bytes::from_owner(PooledBlock { data, pool }));
    }

    /// The part, for the store.
    pub(crate) fn freeze(mut self) -> PutPayload {
        if !self.filling.is_empty() {
            self.seal_block();
        }
        std::mem::take(&mut self.full).into_iter().collect()
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        if self.filling.capacity() != 0 {
            self.pool.give_back(std::mem::take(&mut self.filling));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A part holds its bytes in order across blocks; its blocks come back
    /// to the pool once the store lets go of them, and the next part is
    /// filled in them.
    #[test]
    fn blocks_come_back_when_the_store_lets_go() {
        let pool = Arc::new(BlockPool::default());
        let mut part = PartBuffer::new(&pool);
        let data: Vec<u8> = (0..PART_BLOCK * 2 + 100).map(|i| (i % 251) as u8).collect();
        part.extend_from_slice(&data[..10]);
        part.extend_from_slice(&data[10..]);
        assert_eq!(part.len(), data.len());
        let payload = part.freeze();
        let sent: Vec<u8> = payload.iter().flat_map(|b| b.iter().copied()).collect();
        assert_eq!(sent, data);
        assert_eq!(pool.free_blocks(), 0, "held while the store holds them");
        drop(payload);
        assert_eq!(pool.free_blocks(), 3);

        let mut next = PartBuffer::new(&pool);
        next.extend_from_slice(&data[..PART_BLOCK]);
        assert_eq!(pool.free_blocks(), 2, "the next part reuses a block");
        drop(next);
        assert_eq!(
            pool.free_blocks(),
            3,
            "a part dropped unsent gives its blocks back"
        );
    }

    /// Past `BLOCKS_KEPT`, freed blocks go back to the allocator.
    #[test]
    fn the_pool_keeps_a_bounded_number() {
        let pool = Arc::new(BlockPool::default());
        let parts: Vec<PutPayload> = (0..BLOCKS_KEPT + 5)
            .map(|_| {
                let mut part = PartBuffer::new(&pool);
                part.extend_from_slice(&[1; 10]);
                part.freeze()
            })
            .collect();
        drop(parts);
        assert_eq!(pool.free_blocks(), BLOCKS_KEPT);
    }
}
