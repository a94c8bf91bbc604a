//! Checks that read the workspace's source rather than run it.

mod import_circles;
