//! Checks that read the workspace's source rather than run it.

mod file_lengths;
mod import_circles;
