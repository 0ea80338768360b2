//! Copy-on-write writes without `Arc::make_mut`'s compare-exchange.
//!
//! `Arc::make_mut` locks the weak count with a compare-exchange on every call, a locked
//! instruction that waits for every earlier load and store; two per heap write cost a value
//! update with TTL about a quarter of its speed (DESIGN §9, "Writes without locked
//! instructions"). Most writes find their table unshared (no snapshot holds it): then plain
//! loads of the counts decide, and the value is written in place.

use std::sync::Arc;

/// The value of `arc` for writing: in place when unshared ([`sole`]), else `Arc::make_mut`'s
/// copy, as a snapshot shares it.
#[inline]
pub(crate) fn make_mut<T: Clone>(arc: &mut Arc<T>) -> &mut T {
    if sole(arc) {
        sole_mut(arc)
    } else {
        copied(arc)
    }
}

/// `Arc::make_mut` out of line: the rare copy kept apart from the in-place path, which then
/// inlines into its callers without the copy's saved registers (DESIGN.md §9).
#[cold]
#[inline(never)]
fn copied<T: Clone>(arc: &mut Arc<T>) -> &mut T {
    Arc::make_mut(arc)
}

/// Whether `arc` is the only reference to its value: one strong reference, no weak one. With
/// `&mut` to that reference no other thread can make another (a clone or a downgrade needs one
/// to start from), so the answer cannot change before the caller writes.
#[inline]
pub(crate) fn sole<T: ?Sized>(arc: &Arc<T>) -> bool {
    Arc::strong_count(arc) == 1 && Arc::weak_count(arc) == 0
}

/// The value of `arc` for writing; `sole(arc)` must have held.
#[inline]
pub(crate) fn sole_mut<T: ?Sized>(arc: &mut Arc<T>) -> &mut T {
    debug_assert!(sole(arc), "written in place while shared");
    // `sole` read the count with a relaxed load; a snapshot that dropped its reference on
    // another thread released it (`Arc`'s drop is a release decrement), and this fence orders
    // that thread's last reads of the value before the writes that follow.
    std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
    #[expect(
        unsafe_code,
        reason = "Arc::get_mut without its locked compare-exchange; see SAFETY"
    )]
    // SAFETY: `arc` is the only strong reference and no weak one exists (`sole`), and the
    // caller holds it by `&mut`, so no other reference to the value exists or can be made while
    // the returned borrow lives (as `Arc::get_mut` establishes, minus locking the weak count,
    // which only guards against a weak reference that cannot exist here). `Arc::as_ptr` points
    // at the value with the allocation's provenance (std's `get_mut_unchecked` writes through
    // the same pointer).
    unsafe {
        &mut *Arc::as_ptr(arc).cast_mut()
    }
}
