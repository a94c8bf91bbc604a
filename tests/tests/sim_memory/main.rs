//! Memory a hostile peer can make an engine hold, in virtual time. A binary of its own: it
//! installs a counting global allocator.
#![allow(clippy::unwrap_used)]

use std::alloc::System;
use std::sync::Mutex;

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

mod hostile_memory;
mod idle_sessions;
mod plain_flood;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// The counters are global: scenarios run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// Bytes allocated and not freed since `region` began (reallocations count in both).
fn live(region: &Region<'_, System>) -> i64 {
    let c = region.change();
    c.bytes_allocated as i64 - c.bytes_deallocated as i64
}
