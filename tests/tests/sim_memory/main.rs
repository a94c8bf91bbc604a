//! Memory a hostile peer can make an engine hold, in virtual time. A binary of its own: it
//! installs a counting global allocator.

mod hostile_memory;
