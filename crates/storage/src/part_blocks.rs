//! The blocks that uploads' parts are filled in, kept for the next part
//! while uploads need them, and given back to the system when they stop.
//!
//! Freed, a 1 MiB block went back to the glibc heap (arena) it came from,
//! which keeps it for the threads that allocate there: with sixteen 100 MiB
//! uploads at once, parts filled on one runtime thread left their blocks
//! resident in its heap while the next parts were filled on another, and
//! the server's peak went 30-60 MiB past what its parts held (173-200 MiB
//! against about 140). Blocks that come back to the pool are reused
//! whichever thread fills the next part, so the peak is what parts hold
//! (159-160 MiB; docs/benchmarks.md).
//!
//! Blocks are mapped from the system, not taken from the heap, and the
//! pool gives back those no part took for a while, so that they leave the
//! process: when the pool kept 64 heap blocks for good, a server that had
//! taken sixteen 100 MiB uploads at once stayed 75 MiB above its idle
//! size; it is now back within 8-10 MiB of it 25 s later.

use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use bytes::Bytes;
use memmap2::MmapMut;
use object_store::PutPayload;

/// Parts are filled in blocks of this size, which divides a part exactly,
/// so a part holds no spare capacity.
const PART_BLOCK: usize = 1024 * 1024;

/// Free blocks kept for reuse; more are given back to the system. The
/// parts in flight (8 of 5 MiB) and sixteen uploads filling theirs need
/// about this many at once.
const BLOCKS_KEPT: usize = 64;

/// How often the blocks kept are trimmed to what the uploads used since
/// the time before: a block no part took for one period to the next is
/// given back, so an idle server returns to its idle size within two
/// periods of a burst, while a steady flow of uploads keeps its blocks.
const TRIM_EVERY: Duration = Duration::from_secs(10);

/// A block mapped from the system rather than taken from the heap: given
/// back, it leaves the process at once, where a freed heap block stays in
/// the glibc arena it came from.
fn new_block() -> MmapMut {
    MmapMut::map_anon(PART_BLOCK).unwrap_or_else(|_| {
        // What a failed heap allocation does too.
        std::alloc::handle_alloc_error(std::alloc::Layout::new::<[u8; PART_BLOCK]>())
    })
}

pub(crate) struct BlockPool {
    free: Mutex<Free>,
    /// `TRIM_EVERY`, but in tests.
    trim_every: Duration,
}

impl Default for BlockPool {
    fn default() -> BlockPool {
        BlockPool {
            free: Mutex::default(),
            trim_every: TRIM_EVERY,
        }
    }
}

#[derive(Default)]
struct Free {
    blocks: Vec<MmapMut>,
    /// The fewest blocks free at any moment since the last trim: that many
    /// no part needed meanwhile.
    fewest: usize,
    /// Whether a task trims the pool (one runs while it keeps blocks).
    trimming: bool,
}

impl BlockPool {
    fn take(&self) -> MmapMut {
        let reused = {
            let mut free = self.free.lock().expect("never poisoned");
            let block = free.blocks.pop();
            free.fewest = free.fewest.min(free.blocks.len());
            block
        };
        reused.unwrap_or_else(new_block)
    }

    /// Keeps `block` for the next part, unless the pool is full; a block
    /// not kept is unmapped once the lock is released (locals drop before
    /// arguments).
    fn give_back(self: &Arc<Self>, block: MmapMut) {
        let mut free = self.free.lock().expect("never poisoned");
        if free.blocks.len() >= BLOCKS_KEPT {
            return;
        }
        free.blocks.push(block);
        // Outside a runtime (a part dropped by a plain thread) the pool is
        // trimmed once a block comes back within one.
        if !free.trimming
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            free.trimming = true;
            drop(free);
            // Unlocked: a runtime shutting down drops the task at once,
            // and with it `TrimCancelled`, which takes the lock.
            runtime.spawn(trim_while_kept(Arc::downgrade(self), self.trim_every));
        }
    }

    /// Gives back to the system the blocks no part took since the last
    /// trim. Returns whether the pool still keeps any; if not, the task
    /// that trims it stops.
    fn trim(&self) -> bool {
        let mut free = self.free.lock().expect("never poisoned");
        let keep = free.blocks.len() - free.fewest;
        let unused = free.blocks.split_off(keep);
        free.fewest = free.blocks.len();
        free.trimming = !free.blocks.is_empty();
        let kept = free.trimming;
        drop(free);
        drop(unused);
        kept
    }

    #[cfg(test)]
    fn free_blocks(&self) -> usize {
        self.free.lock().expect("never poisoned").blocks.len()
    }
}

/// Trims `pool` every `trim_every` while it keeps blocks.
fn trim_while_kept(pool: Weak<BlockPool>, every: Duration) -> impl Future<Output = ()> {
    // Made before the task first runs: a runtime may stop before that.
    let cancelled = TrimCancelled(Some(pool.clone()));
    async move {
        loop {
            tokio::time::sleep(every).await;
            match pool.upgrade() {
                Some(pool) if pool.trim() => {}
                _ => break,
            }
        }
        cancelled.ended();
    }
}

/// Dropped with a trimming task that its runtime stopped before it ended:
/// the pool's next block given back, within a runtime, starts another.
struct TrimCancelled(Option<Weak<BlockPool>>);

impl TrimCancelled {
    /// The task ended of itself: `trim` said no task trims the pool any
    /// more, or the pool is gone.
    fn ended(mut self) {
        self.0 = None;
    }
}

impl Drop for TrimCancelled {
    fn drop(&mut self) {
        if let Some(pool) = self.0.take().and_then(|pool| pool.upgrade()) {
            pool.free.lock().expect("never poisoned").trimming = false;
        }
    }
}

/// A filled block, handed to the store as `Bytes`; back to its pool when
/// the store lets go of it.
struct PooledBlock {
    /// `None` only once given back, in `drop`.
    block: Option<MmapMut>,
    len: usize,
    pool: Arc<BlockPool>,
}

impl AsRef<[u8]> for PooledBlock {
    fn as_ref(&self) -> &[u8] {
        self.block.as_deref().map_or(&[], |block| &block[..self.len])
    }
}

impl Drop for PooledBlock {
    fn drop(&mut self) {
        if let Some(block) = self.block.take() {
            self.pool.give_back(block);
        }
    }
}

/// A part being filled, block by block.
pub(crate) struct PartBuffer {
    pool: Arc<BlockPool>,
    full: Vec<Bytes>,
    /// The block being filled and the bytes in it; none until the first byte.
    filling: Option<(MmapMut, usize)>,
    len: usize,
}

impl PartBuffer {
    pub(crate) fn new(pool: &Arc<BlockPool>) -> PartBuffer {
        PartBuffer {
            pool: pool.clone(),
            full: Vec::new(),
            filling: None,
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
            let (block, filled) = self.filling.get_or_insert_with(|| (self.pool.take(), 0));
            let n = (PART_BLOCK - *filled).min(data.len());
            block[*filled..*filled + n].copy_from_slice(&data[..n]);
            *filled += n;
            self.len += n;
            data = &data[n..];
            if *filled == PART_BLOCK {
                self.seal_block();
            }
        }
    }

    fn seal_block(&mut self) {
        if let Some((block, len)) = self.filling.take() {
            let pool = self.pool.clone();
            self.full.push(Bytes::from_owner(PooledBlock {
                block: Some(block),
                len,
                pool,
            }));
        }
    }

    /// The part, for the store.
    pub(crate) fn freeze(mut self) -> PutPayload {
        self.seal_block();
        std::mem::take(&mut self.full).into_iter().collect()
    }
}

impl Drop for PartBuffer {
    fn drop(&mut self) {
        if let Some((block, _)) = self.filling.take() {
            self.pool.give_back(block);
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

    /// `n` parts of a few bytes, a block each.
    fn small_parts(pool: &Arc<BlockPool>, n: usize) -> Vec<PutPayload> {
        (0..n)
            .map(|_| {
                let mut part = PartBuffer::new(pool);
                part.extend_from_slice(&[1; 10]);
                part.freeze()
            })
            .collect()
    }

    /// Past `BLOCKS_KEPT`, freed blocks go back to the system.
    #[test]
    fn the_pool_keeps_a_bounded_number() {
        let pool = Arc::new(BlockPool::default());
        let parts = small_parts(&pool, BLOCKS_KEPT + 5);
        drop(parts);
        assert_eq!(pool.free_blocks(), BLOCKS_KEPT);
    }

    /// A trim gives back the blocks no part took since the trim before;
    /// blocks taken meanwhile, and those given back since, are kept.
    #[test]
    fn a_trim_gives_back_what_no_part_took_since_the_last() {
        let pool = Arc::new(BlockPool::default());
        let parts = small_parts(&pool, 5);
        drop(parts);
        assert_eq!(pool.free_blocks(), 5);
        assert!(pool.trim(), "the first trim only counts from here");
        assert_eq!(pool.free_blocks(), 5);

        let mut busy = PartBuffer::new(&pool);
        busy.extend_from_slice(&[1; PART_BLOCK + 1]);
        assert_eq!(pool.free_blocks(), 3, "two blocks taken");
        drop(busy.freeze());
        assert!(pool.trim());
        assert_eq!(pool.free_blocks(), 2, "the three no part took are gone");
        assert!(!pool.trim(), "then the two, untouched since");
        assert_eq!(pool.free_blocks(), 0);
    }

    /// Blocks given back within a runtime are trimmed by a task of their
    /// own, which stops once the pool keeps none and starts again with the
    /// next block given back.
    #[tokio::test]
    async fn an_idle_pool_gives_its_blocks_back() {
        let pool = Arc::new(BlockPool {
            trim_every: Duration::from_millis(20),
            ..BlockPool::default()
        });
        for round in 0..2 {
            let mut part = PartBuffer::new(&pool);
            part.extend_from_slice(&[1; 3 * PART_BLOCK]);
            drop(part.freeze());
            assert_eq!(pool.free_blocks(), 3, "round {round}: kept at first");
            tokio::time::sleep(Duration::from_millis(200)).await;
            assert_eq!(pool.free_blocks(), 0, "round {round}: given back once idle");
            assert!(
                !pool.free.lock().unwrap().trimming,
                "round {round}: the task stopped"
            );
        }
    }

    /// A runtime stopped while its task trimmed the pool leaves it to be
    /// trimmed by the next.
    #[test]
    fn a_pool_outlives_the_runtime_that_trimmed_it() {
        let pool = Arc::new(BlockPool {
            trim_every: Duration::from_millis(20),
            ..BlockPool::default()
        });
        let fill = |pool: &Arc<BlockPool>| {
            let mut part = PartBuffer::new(pool);
            part.extend_from_slice(&[1; PART_BLOCK]);
            drop(part.freeze());
        };
        let runtime = || {
            tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap()
        };
        let first = runtime();
        first.block_on(async { fill(&pool) });
        assert!(pool.free.lock().unwrap().trimming, "a task was started");
        drop(first);
        assert!(!pool.free.lock().unwrap().trimming, "and stopped with it");
        runtime().block_on(async {
            fill(&pool);
            tokio::time::sleep(Duration::from_millis(200)).await;
        });
        assert_eq!(pool.free_blocks(), 0, "trimmed in the second runtime");
    }
}
