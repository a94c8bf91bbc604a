//! Checks that read the workspace's source rather than run it.

mod file_lengths;
mod generated_proto;
mod import_circles;
mod tree;
