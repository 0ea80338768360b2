//! Memory per entry: 1,000,000 `ValueState<u64>` entries on the heap engine against a raw
//! `HashMap<u64, u64>` with the same hasher, measured by a counting global allocator (live
//! bytes after building minus before), plus, with huge pages, the part of the memory the
//! engine mapped for its tables that it has written to. Target: the engine at most 2× the raw
//! map, with and without huge pages.
//!
//! Run `cargo test --release --test memory -- --nocapture` to see the figures.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::HashMap;
use std::sync::atomic::{AtomicIsize, Ordering};

use keyed_state::state::ValueStateDescriptor;
use keyed_state::{HeapEngine, KeyedStateBackend};

#[path = "support/arena.rs"]
mod arena;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts sizes.
#[expect(
    unsafe_code,
    reason = "a counting allocator that forwards to the system's"
)]
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const ENTRIES: u64 = 1_000_000;

fn keys() -> impl Iterator<Item = u64> {
    // The same SplitMix64 sequence as the benchmarks.
    let mut state = 42u64;
    (0..ENTRIES).map(move |_| {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    })
}

fn measure<T>(build: impl FnOnce() -> T) -> (T, f64) {
    let before = LIVE.load(Ordering::SeqCst);
    let built = build();
    let after = LIVE.load(Ordering::SeqCst);
    (built, (after - before) as f64 / ENTRIES as f64)
}

#[test]
fn heap_value_state_uses_at_most_twice_the_raw_map() {
    let (raw, raw_per_entry) = measure(|| {
        let mut m: HashMap<u64, u64, _> =
            HashMap::with_hasher(foldhash::fast::FixedState::with_seed(1));
        for k in keys() {
            m.insert(k, k);
        }
        m
    });
    assert_eq!(raw.len() as u64, ENTRIES);

    // On the global allocator, the counter sees every table; with huge pages (the default),
    // tables live in the engine's own maps, whose written bytes its `Debug` reports.
    for huge_pages in [false, true] {
        let (backend, counted_per_entry) = measure(|| {
            let backend =
                KeyedStateBackend::<u64>::new(HeapEngine::default().with_huge_pages(huge_pages));
            let state = backend
                .value_state(&ValueStateDescriptor::<u64>::new("v"))
                .unwrap();
            for k in keys() {
                state.update(&backend.key(k).unwrap(), &(), k).unwrap();
            }
            (backend, state)
        });
        let (backend, state) = backend;
        let probe = backend.key(keys().nth(777).unwrap()).unwrap();
        assert_eq!(state.get(&probe, &()).unwrap(), Some(*probe.key()));
        let touched = arena::arena_bytes(backend.engine(), "touched");
        assert_eq!(touched > 0, huge_pages);
        let heap_per_entry = counted_per_entry + touched as f64 / ENTRIES as f64;

        let ratio = heap_per_entry / raw_per_entry;
        eprintln!(
            "bytes per entry: heap (huge pages {huge_pages}) {heap_per_entry:.1}, raw HashMap {raw_per_entry:.1}, ratio {ratio:.2} (target <= 2.0)"
        );
        assert!(ratio <= 2.0, "heap uses {ratio:.2}x the raw map's memory");
    }
}
