//! One column family's handle, kept beside the database that lends it.
//!
//! With `multi-threaded-cf`, `rocksdb` hands out a column family by name: a read lock on its
//! map of handles, a lookup of the name and an `Arc` clone, then the `Arc`'s release, on
//! every call (1.6 % of a RocksDB `value_get` in the profile of DESIGN.md §9). A handle
//! borrows the database, so a table cannot simply keep one next to its `Arc<DbHandle>`;
//! [`Column`] owns both (a self-referential cell), and a table looks its column family up
//! once, when it is made. The engine never drops a column family, so the handle stays valid
//! for as long as the database is open, which the cell guarantees by owning it.

use std::sync::Arc;

use rocksdb::BoundColumnFamily;

use super::DbHandle;
use crate::error::{Error, Result};

/// A column family handle borrowed from the database for `'db`.
type CfRef<'db> = Arc<BoundColumnFamily<'db>>;

self_cell::self_cell!(
    /// The database and one of its column families' handles.
    pub(crate) struct Column {
        owner: Arc<DbHandle>,

        #[covariant]
        dependent: CfRef,
    }
);

impl Column {
    /// Looks `name` up in `handle`'s database; `state` names the error if it is not there.
    pub(crate) fn open(handle: Arc<DbHandle>, name: &str, state: &str) -> Result<Self> {
        Column::try_new(handle, |handle| {
            handle
                .db
                .cf_handle(name)
                .ok_or_else(|| Error::UnknownState(state.to_owned()))
        })
    }

    /// The database.
    pub(crate) fn db(&self) -> &super::Db {
        &self.borrow_owner().db
    }

    /// The column family's handle.
    pub(crate) fn cf(&self) -> &Arc<BoundColumnFamily<'_>> {
        self.borrow_dependent()
    }
}

impl std::fmt::Debug for Column {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Column").finish_non_exhaustive()
    }
}
