//! Table memory on transparent huge pages.
//!
//! A heap lookup at a million keys misses the TLB twice: the table's control bytes and its
//! bucket lie on different 4 KiB pages, and the page walks took about a fifth of a lookup in
//! the profiles. The machine's allocator hands out 4 KiB pages unless told otherwise (Linux's
//! transparent huge pages are commonly set to `madvise`). So an engine keeps its tables'
//! larger allocations (at least [`MIN_ARENA_BYTES`], every segment of a grown table) in
//! anonymous maps it marks `MADV_HUGEPAGE`: one TLB entry then covers 2 MiB of table instead of
//! 4 KiB.
//!
//! The arena is deliberately simple, since tables allocate rarely (when a segment grows, is
//! copied for a snapshot, or is split):
//! - blocks are rounded up to 4 KiB; a block comes from the smallest free range that holds it
//!   (best fit), else is carved from the end of the newest map;
//! - a freed block merges with the free ranges beside it (so that the blocks a growing table
//!   leaves behind, sizes 1, 2, 4, … of its entries, add up to room for the larger tables of
//!   others), or goes back to carving if it was the last one carved;
//! - a map none of whose blocks is in use any more, other than the newest, is unmapped, its
//!   free ranges forgotten;
//! - maps grow with the arena (4 MiB, then as large as everything mapped so far, at most
//!   256 MiB), so a small engine maps little and a large one few maps.
//!
//! Smaller allocations, alignments above 4 KiB, and anything the arena cannot map (the
//! address space or `vm.max_map_count` exhausted) go to the global allocator instead;
//! [`TableAlloc::deallocate`] tells the two apart by address. Where transparent huge pages are
//! off (`never`) or absent (not Linux) the maps are ordinary memory, as fast as the global
//! allocator's.

use std::alloc::Layout;
use std::collections::{BTreeMap, BTreeSet};
use std::ptr::NonNull;
use std::sync::Arc;

use allocator_api2::alloc::{AllocError, Allocator, Global};
use memmap2::MmapMut;
use parking_lot::Mutex;

/// Allocations at least this large come from the arena (a table of about 400 entries of 40
/// bytes); smaller ones from the global allocator.
pub(crate) const MIN_ARENA_BYTES: usize = 16 << 10;
/// Block sizes are multiples of this, and so are block addresses.
const PAGE: usize = 4 << 10;
/// Maps start on a multiple of this, so that every 2 MiB of them can be one huge page.
const HUGE_PAGE: usize = 2 << 20;
/// The first map's usable size.
const FIRST_MAP: usize = 4 << 20;
/// The largest usable size of a map (a larger block gets a map of its own size).
const MAX_MAP: usize = 256 << 20;

/// An allocator for table memory: the engine's [`Arena`], or the global allocator.
/// Clones share the arena, and any clone may free what another allocated.
#[derive(Clone, Default)]
pub(crate) struct TableAlloc(Option<Arc<Arena>>);

impl TableAlloc {
    /// An allocator over a fresh arena.
    pub(crate) fn arena() -> Self {
        TableAlloc(Some(Arc::new(Arena::default())))
    }

    /// The global allocator alone.
    pub(crate) fn global() -> Self {
        TableAlloc(None)
    }

    /// The arena's figures, `None` for the global allocator.
    pub(crate) fn stats(&self) -> Option<ArenaStats> {
        self.0.as_ref().map(|a| a.stats())
    }

    fn arena_for(&self, layout: Layout) -> Option<&Arena> {
        self.0
            .as_deref()
            .filter(|_| layout.size() >= MIN_ARENA_BYTES && layout.align() <= PAGE)
    }
}

impl std::fmt::Debug for TableAlloc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.stats() {
            Some(s) => s.fmt(f),
            None => f.write_str("Global"),
        }
    }
}

#[expect(unsafe_code, reason = "an allocator; see SAFETY")]
// SAFETY: every block comes either from the arena, which hands out disjoint ranges of maps it
// keeps mapped while any block in them is in use and while any clone of this allocator lives
// (clones share the `Arc`), or from `Global`; `deallocate` routes a block back to where it came
// from by its address, which no block of `Global` can share with a live map.
unsafe impl Allocator for TableAlloc {
    fn allocate(&self, layout: Layout) -> Result<NonNull<[u8]>, AllocError> {
        match self
            .arena_for(layout)
            .and_then(|a| a.allocate(layout.size()))
        {
            Some(block) => Ok(block),
            None => Global.allocate(layout),
        }
    }

    unsafe fn deallocate(&self, ptr: NonNull<u8>, layout: Layout) {
        if let Some(arena) = self.arena_for(layout)
            && arena.release(ptr, layout.size())
        {
            return;
        }
        // SAFETY: not the arena's, so `Global` allocated it with this layout.
        unsafe { Global.deallocate(ptr, layout) }
    }
}

/// What an arena holds, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ArenaStats {
    /// Mapped (address space; the pages are backed as they are first written).
    pub(crate) mapped: usize,
    /// Handed out at least once, so backed by memory (up to the next 2 MiB page).
    pub(crate) touched: usize,
    /// In blocks in use.
    pub(crate) in_use: usize,
    /// In free blocks waiting for an allocation of their size.
    pub(crate) free: usize,
}

/// See the module documentation.
#[derive(Default)]
pub(crate) struct Arena {
    inner: Mutex<Maps>,
}

#[derive(Default)]
struct Maps {
    /// Every live map; the last one is the one new blocks are carved from.
    maps: Vec<Map>,
    /// Free ranges, coalesced: start address → length.
    by_addr: BTreeMap<usize, usize>,
    /// The same ranges as (length, start address), for the best fit.
    by_len: BTreeSet<(usize, usize)>,
    stats: ArenaStats,
}

struct Map {
    map: MmapMut,
    /// Address of the first usable byte (2 MiB-aligned) and of the end of the map.
    start: usize,
    end: usize,
    /// Offset from `start` of the first byte never handed out (or handed back at the end).
    bump: usize,
    /// The highest `bump` so far: below it, pages have been written.
    high: usize,
    /// Blocks of this map in use.
    live: usize,
}

impl Map {
    /// Maps at least `usable` bytes (a multiple of [`PAGE`]) starting on a huge page.
    fn new(usable: usize) -> Option<Map> {
        let mut map = MmapMut::map_anon(usable.checked_add(HUGE_PAGE)?).ok()?;
        let base = map.as_mut_ptr() as usize;
        let start = base.next_multiple_of(HUGE_PAGE);
        #[cfg(target_os = "linux")]
        {
            // Only a hint: without it the arena still works, on 4 KiB pages.
            let _ = map.advise_range(memmap2::Advice::HugePage, start - base, usable);
        }
        Some(Map {
            end: base + map.len(),
            start,
            map,
            bump: 0,
            high: 0,
            live: 0,
        })
    }

    /// The `len` bytes at address `addr`, which lie in this map.
    fn block(&mut self, addr: usize, len: usize) -> NonNull<[u8]> {
        let skip = addr - self.map.as_ptr() as usize;
        assert!(
            addr >= self.start && skip + len <= self.map.len(),
            "an arena block lies inside its map"
        );
        self.live += 1;
        NonNull::from(&mut self.map[skip..skip + len])
    }

    fn contains(&self, addr: usize) -> bool {
        (self.start..self.end).contains(&addr)
    }

    /// Address of the first byte never handed out.
    fn top(&self) -> usize {
        self.start + self.bump
    }
}

impl Maps {
    fn add_free(&mut self, addr: usize, len: usize) {
        self.by_addr.insert(addr, len);
        self.by_len.insert((len, addr));
        self.stats.free += len;
    }

    fn take_free(&mut self, addr: usize, len: usize) {
        self.by_addr.remove(&addr);
        self.by_len.remove(&(len, addr));
        self.stats.free -= len;
    }

    fn map_of(&self, addr: usize) -> Option<usize> {
        self.maps.iter().position(|x| x.contains(addr))
    }
}

impl Arena {
    /// A block of at least `size` bytes, 4 KiB-aligned; `None` if nothing could be mapped.
    fn allocate(&self, size: usize) -> Option<NonNull<[u8]>> {
        let size = size.checked_next_multiple_of(PAGE)?;
        let mut inner = self.inner.lock();
        let m = &mut *inner;
        m.stats.in_use += size;
        // The smallest free range that fits, its rest left free.
        if let Some(&(len, addr)) = m.by_len.range((size, 0)..).next() {
            m.take_free(addr, len);
            if len > size {
                m.add_free(addr + size, len - size);
            }
            let i = m.map_of(addr).expect("a free range lies in a live map");
            return Some(m.maps[i].block(addr, size));
        }
        if m.maps.last().is_none_or(|x| x.top() + size > x.end) {
            let usable = m.stats.mapped.clamp(FIRST_MAP, MAX_MAP).max(size);
            let Some(map) = Map::new(usable) else {
                m.stats.in_use -= size;
                return None;
            };
            // The old map's rest (less than this block) stays unused, and untouched.
            m.stats.mapped += map.map.len();
            m.maps.push(map);
        }
        let map = m.maps.last_mut().expect("a map to carve from");
        let addr = map.top();
        map.bump += size;
        if map.bump > map.high {
            m.stats.touched += map.bump - map.high;
            map.high = map.bump;
        }
        Some(map.block(addr, size))
    }

    /// Takes back the block at `ptr` of `size` bytes if it is the arena's (`false`: it is not).
    fn release(&self, ptr: NonNull<u8>, size: usize) -> bool {
        let Some(size) = size.checked_next_multiple_of(PAGE) else {
            return false;
        };
        let addr = ptr.as_ptr() as usize;
        let mut inner = self.inner.lock();
        let m = &mut *inner;
        let Some(i) = m.map_of(addr) else {
            return false;
        };
        let last = i + 1 == m.maps.len();
        let (lo, top) = {
            let map = &mut m.maps[i];
            assert!(
                map.live > 0 && (addr - map.start).is_multiple_of(PAGE) && addr + size <= map.top(),
                "an arena block freed once, whole, from where it was handed out"
            );
            map.live -= 1;
            (map.start, map.top())
        };
        m.stats.in_use -= size;
        // Coalesce with the free ranges on either side (in this map only: another map may
        // happen to lie right next to it).
        let (mut start, mut len) = (addr, size);
        if let Some((&p, &pl)) = m.by_addr.range(..start).next_back()
            && p >= lo
            && p + pl == start
        {
            m.take_free(p, pl);
            (start, len) = (p, len + pl);
        }
        if start + len < top
            && let Some(&nl) = m.by_addr.get(&(start + len))
        {
            m.take_free(start + len, nl);
            len += nl;
        }
        if last && start + len == top {
            // The end of what the newest map handed out: back to carving.
            m.maps[i].bump = start - lo;
        } else {
            m.add_free(start, len);
        }
        if m.maps[i].live == 0 && !last {
            // Nothing of this map is in use, and no new block comes from it: unmap it, and
            // forget its free ranges.
            let gone = m.maps.remove(i);
            let ranges: Vec<(usize, usize)> = m
                .by_addr
                .range(gone.start..gone.end)
                .map(|(&a, &l)| (a, l))
                .collect();
            for (a, l) in ranges {
                m.take_free(a, l);
            }
            m.stats.mapped -= gone.map.len();
            m.stats.touched -= gone.high;
        }
        true
    }

    fn stats(&self) -> ArenaStats {
        self.inner.lock().stats
    }
}

#[cfg(test)]
#[expect(unsafe_code, reason = "the tests write into the blocks they allocate")]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The first and the last 64 bytes of a block (every block is at least 16 KiB).
    fn ends(block: NonNull<[u8]>) -> [*mut u8; 2] {
        let p = block.cast::<u8>().as_ptr();
        // SAFETY: within the block.
        [p, unsafe { p.add(block.len() - 64) }]
    }

    fn fill(block: NonNull<[u8]>, byte: u8) {
        for p in ends(block) {
            // SAFETY: 64 bytes of the block, ours.
            unsafe { std::ptr::write_bytes(p, byte, 64) }
        }
    }

    fn holds(block: NonNull<[u8]>, byte: u8) -> bool {
        ends(block).into_iter().all(|p| {
            // SAFETY: 64 bytes of the block, ours, written by `fill`.
            unsafe { std::slice::from_raw_parts(p, 64) }
                .iter()
                .all(|&b| b == byte)
        })
    }

    #[test]
    fn small_and_overaligned_blocks_go_to_the_global_allocator() {
        let a = TableAlloc::arena();
        let small = Layout::from_size_align(MIN_ARENA_BYTES - 1, 16).unwrap();
        let wide = Layout::from_size_align(MIN_ARENA_BYTES, 2 * PAGE).unwrap();
        let (p, q) = (a.allocate(small).unwrap(), a.allocate(wide).unwrap());
        assert_eq!(a.stats(), Some(ArenaStats::default()));
        assert!((q.cast::<u8>().as_ptr() as usize).is_multiple_of(2 * PAGE));
        // SAFETY: allocated above with these layouts.
        unsafe {
            a.deallocate(p.cast(), small);
            a.deallocate(q.cast(), wide);
        }
    }

    #[test]
    fn blocks_are_reused_by_size_and_maps_given_back() {
        let a = TableAlloc::arena();
        let layout = Layout::from_size_align(100_000, 16).unwrap();
        let rounded = 100_000usize.next_multiple_of(PAGE);
        // Enough blocks to need a second and a third map.
        let blocks: Vec<_> = (0..200).map(|_| a.allocate(layout).unwrap()).collect();
        let s = a.stats().unwrap();
        assert_eq!(s.in_use, 200 * rounded);
        assert!(
            s.mapped >= s.in_use && s.mapped > FIRST_MAP + HUGE_PAGE,
            "{s:?}"
        );
        for b in &blocks {
            assert_eq!(b.len(), rounded);
            assert!((b.cast::<u8>().as_ptr() as usize).is_multiple_of(PAGE));
        }
        // A freed block is what the next allocation of its size gets.
        let first = blocks[0];
        let free = a.stats().unwrap().free;
        // SAFETY: allocated above with this layout, freed once.
        unsafe { a.deallocate(first.cast(), layout) };
        assert_eq!(a.stats().unwrap().free, free + rounded);
        let again = a.allocate(layout).unwrap();
        assert_eq!(again.cast::<u8>(), first.cast::<u8>());
        // Freeing everything gives back every map but the one blocks are carved from.
        let peak = a.stats().unwrap();
        for b in std::iter::once(again).chain(blocks.into_iter().skip(1)) {
            // SAFETY: as above.
            unsafe { a.deallocate(b.cast(), layout) };
        }
        let s = a.stats().unwrap();
        assert_eq!(s.in_use, 0);
        assert!(s.mapped < peak.mapped, "{s:?} after {peak:?}");
        assert_eq!(s.free, 0, "every block went back to carving: {s:?}");
    }

    #[test]
    fn a_block_larger_than_any_map_gets_its_own() {
        let a = TableAlloc::arena();
        let layout = Layout::from_size_align(MAX_MAP + PAGE, 16).unwrap();
        let b = a.allocate(layout).unwrap();
        assert_eq!(b.len(), MAX_MAP + PAGE);
        // SAFETY: as above.
        unsafe { a.deallocate(b.cast(), layout) };
        assert_eq!(a.stats().unwrap().in_use, 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// Blocks in use never overlap, keep what was written into them, and the figures add
        /// up, whatever the order of allocations and frees.
        #[test]
        fn blocks_stay_disjoint_and_intact(
            ops in prop::collection::vec((0usize..6, any::<bool>(), any::<prop::sample::Index>()), 1..300)
        ) {
            let a = TableAlloc::arena();
            let sizes = [MIN_ARENA_BYTES, 20_000, 65_536, 200_000, 1 << 20, 3 << 20];
            let mut live: Vec<(NonNull<[u8]>, Layout, u8)> = Vec::new();
            for (n, (size, free, pick)) in ops.into_iter().enumerate() {
                if free && !live.is_empty() {
                    let (b, layout, byte) = live.swap_remove(pick.index(live.len()));
                    prop_assert!(holds(b, byte));
                    // SAFETY: allocated with this layout, freed once.
                    unsafe { a.deallocate(b.cast(), layout) };
                } else {
                    let layout = Layout::from_size_align(sizes[size], 16).unwrap();
                    let b = a.allocate(layout).unwrap();
                    let byte = n.to_le_bytes()[0];
                    fill(b, byte);
                    live.push((b, layout, byte));
                }
                let mut spans: Vec<(usize, usize)> = live
                    .iter()
                    .map(|(b, _, _)| (b.cast::<u8>().as_ptr() as usize, b.len()))
                    .collect();
                spans.sort_unstable();
                prop_assert!(spans.windows(2).all(|w| w[0].0 + w[0].1 <= w[1].0));
                let s = a.stats().unwrap();
                let in_use: usize = spans.iter().map(|s| s.1).sum();
                prop_assert_eq!(s.in_use, in_use);
                prop_assert!(s.in_use + s.free <= s.touched && s.touched <= s.mapped);
            }
            for (b, layout, byte) in live {
                prop_assert!(holds(b, byte));
                // SAFETY: as above.
                unsafe { a.deallocate(b.cast(), layout) };
            }
            prop_assert_eq!(a.stats().unwrap().in_use, 0);
        }
    }
}
