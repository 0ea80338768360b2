//! A segmented copy-on-write hash table: the heap engine's storage for one key group of one
//! state.
//!
//! Entries live in `2^bits` segments (hashbrown tables) chosen by bits 32.. of the entry's
//! hash; the segment array and every segment sit behind an `Arc`. A snapshot clones the outer
//! `Arc` — O(1), no entry is touched — and keeps seeing the table as it was, while later writes
//! copy, on first touch, only the pointer array and the one segment they modify
//! (`Arc::make_mut`). So the synchronous part of a snapshot costs O(states × key groups), and a
//! write pays at most one copy of a bounded segment per snapshot. The directory doubles (every
//! segment splits by one more hash bit) when segments average more than
//! [`SEGMENT_TARGET_LEN`] entries, which keeps each copy small however large the state grows.
//!
//! A lookup in a large table costs two dependent cache misses: the segment's control bytes,
//! then the bucket they point to. The map remembers where each segment's buckets lie (a
//! [`Hint`], learned from every entry it finds or places) and prefetches the bucket at the
//! hash's home position before the probe reads the control bytes, so the two misses overlap:
//! most entries sit at or next to their home position. A stale hint (the segment was copied
//! or grew since) only prefetches a useless line until the next hit corrects it; a prefetch
//! never faults and never changes what a lookup returns.
//!
//! Incremental TTL cleanup walks the segments' buckets in order ([`CowMap::sweep`]). Each
//! segment keeps a floor of its entries' stamps ([`SegmentFloor`]), so the walk passes over a
//! segment in which nothing can have expired without reading it.

use std::cell::Cell;
use std::sync::Arc;

use hashbrown::HashTable as RawTable;
use hashbrown::hash_table::{Entry as HtEntry, OccupiedEntry};

use super::arena::TableAlloc;
use super::unshared;

/// A segment: a hashbrown table in the engine's table memory.
type HashTable<T> = RawTable<T, TableAlloc>;

/// Average entries per segment above which the directory doubles.
pub(crate) const SEGMENT_TARGET_LEN: usize = 2048;
/// At most `2^16` segments per key group (then segments just grow).
const MAX_BITS: u32 = 16;
/// How many buckets ahead of its position incremental cleanup prefetches.
const SWEEP_AHEAD: usize = 16;
/// What passing over a segment with a fresh floor costs a cleanup step, in probes: one entry's
/// worth, so a step over fresh segments ends after as many segments as it would visit entries.
const SKIP_PROBES: usize = 8;

type Segments<T> = Arc<[Arc<HashTable<T>>]>;

/// Segment `i` of `segments` for writing: the directory and the segment each written in place
/// when unshared, copied first when a snapshot shares it ([`unshared`]).
#[inline]
fn writable<T: Clone>(segments: &mut Segments<T>, i: usize) -> &mut HashTable<T> {
    // The directory is a slice, which `unshared::make_mut` cannot take (`Arc::make_mut` of an
    // unsized value needs a trait std keeps unstable): the same two steps, spelled out, the
    // copy out of line.
    let directory = if unshared::sole(segments) {
        unshared::sole_mut(segments)
    } else {
        copied_directory(segments)
    };
    unshared::make_mut(&mut directory[i])
}

/// A directory a snapshot shares, copied for writing ([`writable`]'s rare path).
#[cold]
#[inline(never)]
fn copied_directory<T: Clone>(segments: &mut Segments<T>) -> &mut [Arc<HashTable<T>>] {
    Arc::make_mut(segments)
}

/// See the module documentation.
pub(crate) struct CowMap<T> {
    segments: Segments<T>,
    /// One per segment of this (live) map; snapshots need none.
    hints: Vec<Cell<Hint>>,
    /// One per segment of this (live) map: what incremental cleanup knows of its stamps.
    floors: Vec<SegmentFloor>,
    bits: u32,
    len: usize,
    /// Where new segments get their memory.
    alloc: TableAlloc,
}

/// Where a segment's buckets lay when an entry was last found or placed in it: hashbrown
/// keeps bucket `i` at `end - (i + 1) * size_of::<T>()`, and a probe starts at bucket
/// `hash & mask` (module documentation). Kept beside the map rather than read from the
/// segment, so that the prefetch does not wait for the segment's header to load.
#[derive(Debug, Clone, Copy, Default)]
struct Hint {
    /// `end`; 0 while unknown.
    end: usize,
    /// The segment's bucket count minus one.
    mask: usize,
}

/// The `end` of a segment whose bucket `index` is at `entry` (hashbrown keeps bucket `i` at
/// `end - (i + 1) * size_of::<T>()`; the layout test pins it).
#[inline]
fn bucket_end<T>(entry: &T, index: usize) -> usize {
    std::ptr::from_ref(entry).addr() + (index + 1) * size_of::<T>()
}

/// The address of bucket `index` of a segment ending at `end` (wrapping: a stale or guessed
/// `end` only makes a useless prefetch).
#[inline]
fn bucket_addr<T>(end: usize, index: usize) -> usize {
    end.wrapping_sub(index.wrapping_add(1).wrapping_mul(size_of::<T>()))
}

impl Hint {
    /// The hint for a segment of `buckets` buckets whose bucket `index` is at `entry`.
    #[inline]
    fn learn<T>(entry: &T, index: usize, buckets: usize) -> Hint {
        Hint {
            end: bucket_end(entry, index),
            mask: buckets.wrapping_sub(1),
        }
    }

    /// Asks the processor to start loading the home bucket of `hash`, and with `control` its
    /// control bytes too (which start at `end`, one byte per bucket).
    #[inline]
    fn prefetch<T>(self, hash: u64, control: bool) {
        if self.end == 0 {
            return;
        }
        #[expect(
            clippy::cast_possible_truncation,
            reason = "hashbrown takes the low bits"
        )]
        let home = (hash as usize) & self.mask;
        let first = bucket_addr::<T>(self.end, home);
        prefetch_line(first);
        // An entry larger than a line (an inline list or map: 150-300 bytes) spans several,
        // and a scan of its elements would wait for each in turn: ask for all of them. Small
        // entries keep the one line (also asking for a second line when one straddles two
        // measured slower, DESIGN.md §9).
        if size_of::<T>() > LINE {
            let lines = (first % LINE + size_of::<T>()).div_ceil(LINE);
            for i in 1..lines {
                prefetch_line((first & !(LINE - 1)).wrapping_add(i * LINE));
            }
        }
        if control {
            prefetch_line(self.end.wrapping_add(home));
        }
    }
}

/// The entry of `occupied`, after setting `hint` from it. `buckets` is the segment's bucket
/// count before the entry was looked up: if placing it grew the segment, the hint's mask is
/// stale until the segment's next access relearns it (a useless prefetch, nothing worse).
#[inline]
fn learned<'a, T>(
    occupied: OccupiedEntry<'a, T, TableAlloc>,
    hint: &Cell<Hint>,
    buckets: usize,
) -> &'a mut T {
    let index = occupied.bucket_index();
    let entry = occupied.into_mut();
    hint.set(Hint::learn(&*entry, index, buckets));
    entry
}

/// What incremental cleanup knows of one segment's stamps, so that it can pass over a segment
/// in which nothing can have expired without visiting its entries.
///
/// `floor` is a lower bound of the stamps of every entry in the segment (0, the start: nothing
/// known). Writes lower it to what they write ([`CowMap::lower_floor`]); a pass of the sweep
/// over the whole segment sets it exactly. A pass collects in `pass` the bounds of the entries
/// it keeps, and writes lower `pass` too, so an entry written behind the sweep still counts. A
/// pass only counts if no entry moved during it: `pass_buckets` is the segment's bucket count
/// when it started, and `usize::MAX` once an insertion may have rehashed the segment.
#[derive(Debug, Clone, Copy, Default)]
struct SegmentFloor {
    floor: u64,
    pass: u64,
    pass_buckets: usize,
}

/// The cache line size of the processors this is tuned for.
const LINE: usize = 64;

/// A prefetch of the cache line holding `addr`: a hint that never faults, whatever `addr` is.
#[inline]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        #[expect(unsafe_code, reason = "an intrinsic; see SAFETY")]
        // SAFETY: SSE is part of the x86_64 baseline, and `prefetcht0` reads no memory the
        // program can observe and never faults, whatever the address.
        unsafe {
            _mm_prefetch::<_MM_HINT_T0>(std::ptr::without_provenance::<i8>(addr));
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// A place for one entry, found by [`CowMap::slot`].
pub(crate) enum Slot<'a, T> {
    /// The entry exists.
    Occupied(&'a mut T),
    /// It does not; [`Vacant::insert`] creates it.
    Vacant(Vacant<'a, T>),
}

/// An empty place for an entry.
pub(crate) struct Vacant<'a, T> {
    entry: hashbrown::hash_table::VacantEntry<'a, T, TableAlloc>,
    len: &'a mut usize,
    hint: &'a Cell<Hint>,
    buckets: usize,
}

impl<'a, T> Vacant<'a, T> {
    /// Fills the place.
    pub(crate) fn insert(self, value: T) -> &'a mut T {
        *self.len += 1;
        learned(self.entry.insert(value), self.hint, self.buckets)
    }
}

/// What incremental cleanup decides about one entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Keep,
    Remove,
    Rewrite,
}

/// Where incremental cleanup resumes: a segment and a bucket in it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Cursor {
    segment: usize,
    bucket: usize,
}

/// A frozen view of a [`CowMap`], unaffected by later writes (what heap snapshots encode).
pub(crate) struct CowSnapshot<T> {
    segments: Segments<T>,
    len: usize,
}

impl<T> CowSnapshot<T> {
    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Every entry (segment order, then hash order).
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.segments.iter().flat_map(|s| s.iter())
    }
}

impl<T: Clone> Default for CowMap<T> {
    /// An empty map on the global allocator.
    fn default() -> Self {
        CowMap::new(TableAlloc::global())
    }
}

/// Where the entry of one hash would be in a [`CowMap`]: its segment and that segment's hint,
/// borrowed from the map. A batch locates each item once and keeps these between requesting the
/// item's lines and looking it up, so neither indexes the directory again (DESIGN.md §9).
pub(crate) struct Located<'a, T> {
    segment: &'a HashTable<T>,
    hint: &'a Cell<Hint>,
    hash: u64,
}

// Not derived: a derive would ask `T: Copy`, and only references and the hash are copied.
impl<T> Clone for Located<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Located<'_, T> {}

impl<'a, T> Located<'a, T> {
    /// Starts loading the control bytes and the bucket where the entry most likely is.
    #[inline]
    pub(crate) fn prefetch(self) {
        self.hint.get().prefetch::<T>(self.hash, true);
    }

    /// The entry matching `eq`, if any (its lines requested already or not: this asks for
    /// none), learning the segment's hint from it.
    #[inline]
    pub(crate) fn get(self, eq: impl FnMut(&T) -> bool) -> Option<&'a T> {
        let index = self.segment.find_bucket_index(self.hash, eq)?;
        let found = self.segment.get_bucket(index)?;
        self.hint
            .set(Hint::learn(found, index, self.segment.num_buckets()));
        Some(found)
    }
}

impl<T: Clone> CowMap<T> {
    /// An empty map whose segments get their memory from `alloc`.
    pub(crate) fn new(alloc: TableAlloc) -> Self {
        // One segment, no buckets allocated until the first insert.
        Self::with_capacity(0, alloc)
    }

    /// An empty map sized for `n` entries: the directory it would have grown to and each
    /// segment's table reserved for its share, so filling it (a restore, which knows its count)
    /// neither doubles the directory nor rehashes a segment on the way.
    pub(crate) fn with_capacity(n: usize, alloc: TableAlloc) -> Self {
        let bits = Self::bits_for(n);
        let (segments, hints, floors) = Self::directory(Self::sized_segments(n, bits, &alloc));
        CowMap {
            segments,
            hints,
            floors,
            bits,
            len: 0,
            alloc,
        }
    }

    /// `2^bits` empty segments, each reserved for its [`share`](Self::share) of `n` entries.
    fn sized_segments(n: usize, bits: u32, alloc: &TableAlloc) -> Vec<HashTable<T>> {
        let per_segment = Self::share(n, bits);
        (0..1usize << bits)
            .map(|_| HashTable::with_capacity_in(per_segment, alloc.clone()))
            .collect()
    }

    /// A directory of these segments, with a fresh hint and floor for each.
    fn directory(segments: Vec<HashTable<T>>) -> (Segments<T>, Vec<Cell<Hint>>, Vec<SegmentFloor>) {
        let count = segments.len();
        (
            segments.into_iter().map(Arc::new).collect(),
            (0..count).map(|_| Cell::default()).collect(),
            vec![SegmentFloor::default(); count],
        )
    }

    /// For a map of `n` entries built by [`CowMap::with_capacity`]: a sort key of hashes that
    /// orders entries by segment, then by home bucket in the segment's table, the order in
    /// which inserting them touches one segment at a time, front to back.
    pub(crate) fn fill_order(n: usize) -> impl Fn(u64) -> u64 {
        let bits = Self::bits_for(n);
        // hashbrown's bucket count for a segment's share: a power of two at most 7/8 full.
        let buckets = (Self::share(n, bits).max(8) * 8 / 7).next_power_of_two() as u64;
        let segments = (1u64 << bits) - 1;
        move |hash| (((hash >> 32) & segments) << 32) | (hash & (buckets - 1))
    }

    /// The entries a segment is sized for when `n` are spread over `2^bits` segments: the mean
    /// and an eighth, for uneven segments (what `maybe_grow` gives too).
    fn share(n: usize, bits: u32) -> usize {
        let count = 1usize << bits;
        n / count + n / (count * 8)
    }

    /// Directory bits for `n` entries: segments of at most [`SEGMENT_TARGET_LEN`] on average.
    fn bits_for(n: usize) -> u32 {
        let mut bits = 0;
        while n > SEGMENT_TARGET_LEN << bits && bits < MAX_BITS {
            bits += 1;
        }
        bits
    }

    #[inline]
    fn segment_of(&self, hash: u64) -> usize {
        // `2^bits` hints, one per segment: their count minus one is the mask, loaded rather
        // than computed from `bits` (a shift by a variable, three instructions more a lookup).
        debug_assert_eq!(self.hints.len(), 1 << self.bits);
        ((hash >> 32) as usize) & (self.hints.len() - 1)
    }

    /// Number of entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The entry matching `eq`, if any.
    // Always: left to itself the compiler kept this a call from the tables' single reads, with
    // registers saved twice over (14 of a read's 249 instructions, DESIGN.md §9).
    #[inline(always)]
    pub(crate) fn get(&self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&T> {
        let at = self.locate(hash);
        at.hint.get().prefetch::<T>(hash, false);
        at.get(eq)
    }

    /// The segment of `hash` and its hint, found once for a batch item's prefetch and lookup.
    #[inline]
    pub(crate) fn locate(&self, hash: u64) -> Located<'_, T> {
        let i = self.segment_of(hash);
        Located {
            segment: &self.segments[i],
            hint: &self.hints[i],
            hash,
        }
    }

    /// Starts loading the control bytes and the bucket where the entry of `hash` most likely
    /// is (a batch issues these a few items ahead of its lookups).
    #[inline]
    pub(crate) fn prefetch(&self, hash: u64) {
        self.locate(hash).prefetch();
    }

    /// The segment `i`, copied first if a snapshot shares it.
    fn segment_mut(&mut self, i: usize) -> &mut HashTable<T> {
        writable(&mut self.segments, i)
    }

    /// The entry matching `eq` for modification (copying its segment only if it exists and a
    /// snapshot shares it).
    pub(crate) fn get_mut(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        self.get(hash, &mut eq)?;
        let i = self.segment_of(hash);
        self.segment_mut(i).find_mut(hash, eq)
    }

    /// The place of the entry matching `eq`; `hasher` recomputes an entry's hash when a segment
    /// grows.
    pub(crate) fn slot(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        hasher: impl Fn(&T) -> u64,
    ) -> Slot<'_, T> {
        self.maybe_grow(&hasher);
        let i = self.segment_of(hash);
        let hint = &self.hints[i];
        hint.get().prefetch::<T>(hash, false);
        let segment = writable(&mut self.segments, i);
        let buckets = segment.num_buckets();
        if segment.len() == segment.capacity() {
            // No room left: an insertion rehashes the segment, moving entries behind a pass.
            self.floors[i].pass_buckets = usize::MAX;
        }
        match segment.entry(hash, eq, hasher) {
            HtEntry::Occupied(o) => Slot::Occupied(learned(o, hint, buckets)),
            HtEntry::Vacant(entry) => Slot::Vacant(Vacant {
                entry,
                len: &mut self.len,
                hint,
                buckets,
            }),
        }
    }

    /// A lower bound of every stamp in the map: its least segment floor.
    pub(crate) fn floor(&self) -> u64 {
        self.floors
            .iter()
            .map(|f| f.floor)
            .min()
            .unwrap_or(u64::MAX)
    }

    /// Lowers the cleanup's floor of the segment of `hash` to `bound`, a lower bound of the
    /// stamps just written there (every write of a stamp must call it, or the cleanup may pass
    /// over expired entries).
    #[inline]
    pub(crate) fn lower_floor(&mut self, hash: u64, bound: u64) {
        let i = self.segment_of(hash);
        let f = &mut self.floors[i];
        f.floor = f.floor.min(bound);
        f.pass = f.pass.min(bound);
    }

    /// Removes and returns the entry matching `eq` (no copy when it is absent).
    pub(crate) fn remove(&mut self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Option<T> {
        self.get(hash, &mut eq)?;
        let i = self.segment_of(hash);
        let removed = self.segment_mut(i).find_entry(hash, eq).ok()?.remove().0;
        self.len -= 1;
        Some(removed)
    }

    /// Every entry.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &T> {
        self.segments.iter().flat_map(|s| s.iter())
    }

    /// An O(1) frozen view (see the module documentation).
    pub(crate) fn snapshot(&self) -> CowSnapshot<T> {
        CowSnapshot {
            segments: self.segments.clone(),
            len: self.len,
        }
    }

    /// Bytes held by the segments' tables and the directory, for metrics.
    pub(crate) fn allocation_size(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.allocation_size())
            .sum::<usize>()
            + self.segments.len() * size_of::<Arc<HashTable<T>>>()
    }

    /// Doubles the directory when segments average more than [`SEGMENT_TARGET_LEN`] entries.
    #[inline]
    fn maybe_grow(&mut self, hasher: &impl Fn(&T) -> u64) {
        // The test inline, the doubling out of line: as one function, every write paid the
        // doubling's saved registers for the test (DESIGN.md §9).
        if self.len > SEGMENT_TARGET_LEN << self.bits && self.bits < MAX_BITS {
            self.grow(hasher);
        }
    }

    /// Doubles the directory: every segment splits by one more hash bit.
    #[cold]
    #[inline(never)]
    fn grow(&mut self, hasher: &impl Fn(&T) -> u64) {
        let bits = self.bits + 1;
        let mut fresh = Self::sized_segments(self.len, bits, &self.alloc);
        let mask = fresh.len() - 1;
        let mut place = |v: T| {
            let h = hasher(&v);
            fresh[((h >> 32) as usize) & mask].insert_unique(h, v, hasher);
        };
        let mut old = std::mem::replace(&mut self.segments, Arc::from(Vec::new()));
        // Move entries out of segments nobody else holds; copy the ones a snapshot shares.
        if let Some(segments) = Arc::get_mut(&mut old) {
            for segment in segments.iter_mut() {
                match Arc::get_mut(segment) {
                    Some(table) => table.drain().for_each(&mut place),
                    None => segment.iter().cloned().for_each(&mut place),
                }
            }
        } else {
            old.iter()
                .flat_map(|s| s.iter())
                .cloned()
                .for_each(&mut place);
        }
        (self.segments, self.hints, self.floors) = Self::directory(fresh);
        self.bits = bits;
        debug_assert_eq!(
            self.iter().count(),
            self.len,
            "doubling must keep every entry"
        );
    }

    /// Incremental cleanup: visits entries from `cursor` while `visits` and `probes` (buckets
    /// looked at, so a sparse table costs no more than a few budgets) last, spending both,
    /// asking `judge` about each entry and applying its verdict (`rewrite` for
    /// [`Verdict::Rewrite`]). A segment whose floor is `fresh` (nothing at or above it can have
    /// expired) is passed over for [`SKIP_PROBES`] probes; `bound` is a lower bound of an
    /// entry's stamps, for the floor a pass sets. Returns `true` when the cursor wrapped past
    /// the last segment (the caller moves on to the next key group with what is left of both
    /// budgets).
    pub(crate) fn sweep(
        &mut self,
        cursor: &mut Cursor,
        (visits, probes): (&mut usize, &mut usize),
        fresh: impl Fn(u64) -> bool,
        judge: impl Fn(&T) -> Verdict,
        rewrite: impl Fn(&mut T),
        bound: impl Fn(&T) -> u64,
    ) -> bool {
        while *visits > 0 && *probes > 0 {
            let Some(segment) = self.segments.get(cursor.segment) else {
                *cursor = Cursor::default();
                return true;
            };
            let seg = cursor.segment;
            if cursor.bucket == 0 {
                let f = &mut self.floors[seg];
                if fresh(f.floor) {
                    *probes = probes.saturating_sub(SKIP_PROBES);
                    cursor.segment += 1;
                    continue;
                }
                f.pass = u64::MAX;
                f.pass_buckets = segment.num_buckets();
            }
            if cursor.bucket >= segment.num_buckets() {
                let f = &mut self.floors[seg];
                if f.pass_buckets == segment.num_buckets() {
                    debug_assert!(
                        segment.iter().all(|e| bound(e) >= f.pass),
                        "a pass's floor above a stamp hides it from cleanup"
                    );
                    f.floor = f.pass;
                }
                cursor.segment += 1;
                cursor.bucket = 0;
                continue;
            }
            let bucket = cursor.bucket;
            cursor.bucket += 1;
            *probes -= 1;
            let Some(entry) = segment.get_bucket(bucket) else {
                continue;
            };
            // Entries the sweep reaches were seldom touched lately: ask for the one
            // `SWEEP_AHEAD` buckets on now (hashbrown lays buckets downwards from `end`), so
            // the loads of a step overlap instead of waiting one after another.
            prefetch_line(bucket_addr::<T>(
                bucket_end(entry, bucket),
                bucket + SWEEP_AHEAD,
            ));
            *visits -= 1;
            match judge(entry) {
                Verdict::Keep => {
                    let f = &mut self.floors[seg];
                    f.pass = f.pass.min(bound(entry));
                }
                Verdict::Remove => {
                    if let Ok(e) = self.segment_mut(seg).get_bucket_entry(bucket) {
                        e.remove();
                        self.len -= 1;
                    }
                }
                Verdict::Rewrite => {
                    if let Some(e) = self.segment_mut(seg).get_bucket_mut(bucket) {
                        rewrite(e);
                        let b = bound(e);
                        let f = &mut self.floors[seg];
                        f.pass = f.pass.min(b);
                    }
                }
            }
        }
        false
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, reason = "small test values")]
mod tests {
    use super::*;
    use crate::key::hash_bytes;

    fn h(k: u64) -> u64 {
        hash_bytes(&k.to_be_bytes())
    }

    fn put(m: &mut CowMap<(u64, u64)>, k: u64, v: u64) {
        match m.slot(h(k), |e| e.0 == k, |e| h(e.0)) {
            Slot::Occupied(e) => e.1 = v,
            Slot::Vacant(slot) => {
                slot.insert((k, v));
            }
        }
    }

    /// Both allocators: the global one, and an arena, whose blocks must all come back once
    /// the map and its snapshots are gone.
    fn on_each_allocator(test: impl Fn(CowMap<(u64, u64)>)) {
        test(CowMap::new(TableAlloc::global()));
        let alloc = TableAlloc::arena();
        test(CowMap::new(alloc.clone()));
        let stats = alloc.stats().expect("an arena");
        assert!(stats.mapped > 0, "the segments came from the arena");
        assert_eq!(stats.in_use, 0, "every segment was given back");
    }

    #[test]
    fn grows_past_many_segments_and_keeps_every_entry() {
        on_each_allocator(grows_past_many_segments);
    }

    fn grows_past_many_segments(mut m: CowMap<(u64, u64)>) {
        let n = SEGMENT_TARGET_LEN as u64 * 9;
        for k in 0..n {
            put(&mut m, k, k * 2);
        }
        assert_eq!(m.len(), n as usize);
        assert!(m.bits >= 3, "directory doubled: {} bits", m.bits);
        for k in 0..n {
            assert_eq!(m.get(h(k), |e| e.0 == k), Some(&(k, k * 2)));
        }
        for k in (0..n).step_by(2) {
            assert_eq!(m.remove(h(k), |e| e.0 == k), Some((k, k * 2)));
        }
        assert_eq!(m.len(), n as usize / 2);
        assert_eq!(m.iter().count(), n as usize / 2);
        assert!(m.get(h(0), |e| e.0 == 0).is_none());
    }

    #[test]
    fn a_map_sized_up_front_fills_in_its_order_without_growing() {
        let n = SEGMENT_TARGET_LEN * 9 + 5;
        let mut m = CowMap::with_capacity(n, TableAlloc::global());
        assert_eq!(m.bits, 4, "the directory a map of {n} grows to");
        let buckets = |m: &CowMap<(u64, u64)>| {
            m.segments
                .iter()
                .map(|s| s.num_buckets())
                .collect::<Vec<_>>()
        };
        let before = buckets(&m);
        let order = CowMap::<(u64, u64)>::fill_order(n);
        let mut keys: Vec<u64> = (0..n as u64).collect();
        keys.sort_by_key(|&k| order(h(k)));
        assert!(
            keys.windows(2)
                .all(|w| m.segment_of(h(w[0])) <= m.segment_of(h(w[1]))),
            "one segment after another"
        );
        for &k in &keys {
            put(&mut m, k, k + 1);
        }
        assert_eq!((m.len(), m.bits), (n, 4), "no doubling");
        assert_eq!(buckets(&m), before, "no segment rehashed");
        // The order's bucket count is the tables': within a segment, home buckets ascend.
        let mask = before[0] as u64 - 1;
        assert!(before.iter().all(|&b| b == before[0]));
        assert!(keys.windows(2).all(|w| {
            m.segment_of(h(w[0])) < m.segment_of(h(w[1])) || h(w[0]) & mask <= h(w[1]) & mask
        }));
        for k in 0..n as u64 {
            assert_eq!(m.get(h(k), |e| e.0 == k), Some(&(k, k + 1)));
        }
    }

    #[test]
    fn snapshot_is_isolated_from_later_writes_including_growth() {
        on_each_allocator(snapshot_is_isolated);
    }

    fn snapshot_is_isolated(mut m: CowMap<(u64, u64)>) {
        for k in 0..1000 {
            put(&mut m, k, 1);
        }
        let snap = m.snapshot();
        for k in 0..1000 {
            put(&mut m, k, 2);
        }
        m.remove(h(5), |e| e.0 == 5);
        for k in 1000..(SEGMENT_TARGET_LEN as u64 * 4) {
            put(&mut m, k, 3); // forces doubling while the snapshot holds the old segments
        }
        assert_eq!(snap.len(), 1000);
        let mut seen: Vec<(u64, u64)> = snap.iter().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..1000).map(|k| (k, 1)).collect::<Vec<_>>());
        assert_eq!(m.get(h(7), |e| e.0 == 7), Some(&(7, 2)));
        assert!(m.get(h(5), |e| e.0 == 5).is_none());
    }

    /// The hint's arithmetic is hashbrown's layout: one `end` locates every bucket, and most
    /// entries sit within a control group (16 buckets) of their home `hash & mask`. If a
    /// hashbrown upgrade changed either, lookups would stay correct but prefetch the wrong
    /// lines; this test says so.
    #[test]
    fn hints_locate_every_bucket_and_most_homes() {
        let mut m = CowMap::default();
        let n = SEGMENT_TARGET_LEN as u64 * 3;
        for k in 0..n {
            put(&mut m, k, k);
        }
        assert!(m.bits >= 1, "several segments");
        let (mut near_home, mut checked) = (0, 0);
        for k in 0..n {
            let hash = h(k);
            let i = m.segment_of(hash);
            let hint = m.hints[i].get();
            let segment = &m.segments[i];
            let index = segment
                .find_bucket_index(hash, |e| e.0 == k)
                .expect("present");
            let entry = segment.get_bucket(index).expect("full");
            let end = std::ptr::from_ref(entry).addr() + (index + 1) * size_of::<(u64, u64)>();
            if hint.end != 0 {
                checked += 1;
                assert_eq!(
                    hint.end - (index + 1) * size_of::<(u64, u64)>(),
                    std::ptr::from_ref(entry).addr(),
                    "bucket {index} of segment {i}"
                );
                let mask = segment.num_buckets() - 1;
                let home = (hash as usize) & mask;
                if index.wrapping_sub(home) & mask < 16 {
                    near_home += 1;
                }
            }
            // A lookup (re)learns its segment's hint.
            assert!(m.get(hash, |e| e.0 == k).is_some());
            assert_eq!(m.hints[i].get().end, end);
        }
        assert!(
            checked > n as usize / 2,
            "hints were known for {checked} lookups"
        );
        assert!(
            near_home * 10 >= checked * 9,
            "{near_home} of {checked} entries within 16 buckets of home"
        );
    }

    #[test]
    fn a_copied_segment_relearns_its_hint_on_the_next_write() {
        let mut m = CowMap::default();
        for k in 0..100 {
            put(&mut m, k, k);
        }
        let before = m.hints[0].get().end;
        assert_ne!(before, 0, "writes learn the hint");
        let snap = m.snapshot();
        put(&mut m, 7, 70); // copies the shared segment
        let after = m.hints[0].get().end;
        assert_ne!(
            after, before,
            "the copy lives elsewhere, and the hint follows it"
        );
        let entry = m.get(h(7), |e| e.0 == 7).expect("present");
        assert_eq!(entry.1, 70);
        assert_eq!(snap.iter().find(|e| e.0 == 7).map(|e| e.1), Some(7));
    }

    /// Entries `(key, stamp)`, rewritten in rounds with the round's stamp; then cleanup
    /// steps that keep everything, interleaved with removals and insertions (the map splits its
    /// directory, its segments grow and rehash) and with late writes of ever older stamps (as
    /// merges and restores write), each the new oldest, so a pass that missed one would set a
    /// floor above it. Every write lowers its segment's floor, as the heap table's do. After
    /// every operation each segment's floor must bound its entries' stamps, or the cleanup
    /// would pass over expired ones.
    #[test]
    fn segment_floors_bound_every_stamp_through_writes_growth_and_passes() {
        const KEYS: u64 = 5_000;
        let mut m: CowMap<(u64, u64)> = CowMap::default();
        let mut cursor = Cursor::default();
        let mut rng = 0x9E37_79B9_7F4A_7C15_u64;
        let mut next = move || {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            rng
        };
        let write = |m: &mut CowMap<(u64, u64)>, key: u64, stamp: u64| {
            put(m, key, stamp);
            m.lower_floor(h(key), stamp);
        };
        let (mut skipped, mut exact) = (0, 0);
        let mut live: Vec<u64> = (0..KEYS).collect();
        let mut fresh_key = KEYS;
        for round in 1..=8u64 {
            let stamp = round << 32;
            for &key in &live {
                write(&mut m, key, stamp);
            }
            let mut oldest = stamp;
            // Every third round, segments whose floor is this round's may be passed over.
            let horizon = if round % 3 == 0 {
                stamp - 1_000_000
            } else {
                u64::MAX
            };
            for _ in 0..5_000 {
                let r = next();
                let at = usize::try_from((r >> 16) % KEYS).expect("small");
                let key = live[at];
                match r % 10 {
                    0..=4 => {
                        skipped += m.floors.iter().filter(|f| f.floor > horizon).count();
                        m.sweep(
                            &mut cursor,
                            (&mut 8, &mut 64),
                            |floor| floor > horizon,
                            |_| Verdict::Keep,
                            |_| {},
                            |e| e.1,
                        );
                    }
                    5 => {
                        oldest -= 1;
                        write(&mut m, key, oldest);
                    }
                    _ => {
                        // Another key's place: tombstones pile up until a segment rehashes.
                        m.remove(h(key), |e| e.0 == key);
                        live[at] = fresh_key;
                        write(&mut m, fresh_key, stamp);
                        fresh_key += 1;
                    }
                }
                for (i, segment) in m.segments.iter().enumerate() {
                    let floor = m.floors[i].floor;
                    for e in segment.iter() {
                        assert!(floor <= e.1, "round {round}: floor {floor} above {}", e.1);
                    }
                    exact += usize::from(segment.iter().any(|e| e.1 == floor));
                }
            }
        }
        assert!(m.bits >= 1, "the directory split");
        assert!(
            skipped > 0 && exact > 0,
            "passes set floors and steps met fresh ones"
        );
    }

    /// A segment whose room went to tombstones (keys removed and others inserted, over and
    /// over) rehashes in place on the next insertion, moving entries across a pass's cursor
    /// without changing its bucket count: the pass must not set a floor from what it saw.
    #[test]
    fn a_rehash_in_place_during_a_pass_sets_no_floor() {
        let mut rehashed = 0;
        for seed in 0..40u64 {
            let mut m: CowMap<(u64, u64)> = CowMap::default();
            let stamp = |k: u64| (k ^ seed).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 8;
            let write = |m: &mut CowMap<(u64, u64)>, k: u64| {
                put(m, k, stamp(k));
                m.lower_floor(h(k), stamp(k));
            };
            for k in 0..1_500 {
                write(&mut m, k);
            }
            for k in 0..900 {
                m.remove(h(k), |e| e.0 == k);
            }
            // Churn at 600 entries until no room is left (tombstones hold it).
            let (mut oldest, mut next) = (900, 1_500);
            while m.segments[0].len() < m.segments[0].capacity() && next < 1_000_000 {
                m.remove(h(oldest), |e| e.0 == oldest);
                write(&mut m, next);
                (oldest, next) = (oldest + 1, next + 1);
            }
            let buckets = m.segments[0].num_buckets();
            let mut cursor = Cursor::default();
            let sweep = |m: &mut CowMap<(u64, u64)>, cursor: &mut Cursor| {
                m.sweep(
                    cursor,
                    (&mut 64, &mut 512),
                    |_| false,
                    |_| Verdict::Keep,
                    |_| {},
                    |e| e.1,
                )
            };
            // No pass has completed yet: the floor is still 0, "nothing known".
            assert_eq!(m.floors[0].floor, 0);
            sweep(&mut m, &mut cursor);
            write(&mut m, next);
            let room = m.segments[0].capacity() - m.segments[0].len();
            if m.segments[0].num_buckets() != buckets || room < 100 {
                continue; // it grew, or did not rehash: not the case under test
            }
            rehashed += 1;
            while !sweep(&mut m, &mut cursor) {}
            assert_eq!(
                m.floors[0].floor, 0,
                "seed {seed}: a pass across a rehash set a floor"
            );
            // The next pass, undisturbed, sets it exactly.
            while !sweep(&mut m, &mut cursor) {}
            let oldest = m.segments[0].iter().map(|e| e.1).min();
            assert_eq!(Some(m.floors[0].floor), oldest, "seed {seed}");
        }
        assert!(rehashed > 0, "no segment rehashed in place");
    }

    #[test]
    fn sweep_visits_every_entry_within_bounded_steps() {
        let mut m = CowMap::default();
        for k in 0..5000 {
            put(&mut m, k, k);
        }
        let mut cursor = Cursor::default();
        let mut steps = 0;
        // Remove odd values; every call visits at most 7 entries.
        while !m.sweep(
            &mut cursor,
            (&mut 7, &mut 56),
            |_| false,
            |e| {
                if e.1 % 2 == 1 {
                    Verdict::Remove
                } else {
                    Verdict::Keep
                }
            },
            |_| {},
            |_| 0,
        ) {
            steps += 1;
            assert!(steps < 5000, "sweep must terminate");
        }
        assert_eq!(m.len(), 2500);
        assert!(m.iter().all(|e| e.1 % 2 == 0));
    }
}
