//! Files under a root directory, as the HTTP/3 examples serve them: read once, with a
//! SHA-256 validator that every server of a session computes alike.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use kwik_h3::Content;
use sha2::{Digest, Sha256};

/// The files of one directory, loaded on first request and kept.
#[derive(Debug, Clone)]
pub struct Files {
    root: PathBuf,
    cache: Arc<Mutex<HashMap<String, Content>>>,
}

impl Files {
    /// Serves the files under `root`.
    pub fn new(root: PathBuf) -> Self {
        Self {
            root,
            cache: Arc::default(),
        }
    }

    /// The content at URL path `path` (`/a/b.bin`): `None` if it names nothing under the
    /// root (or tries to leave it).
    pub fn get(&self, path: &str) -> Option<Content> {
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(path)
        {
            return Some(c.clone());
        }
        let relative = Path::new(path.trim_start_matches('/'));
        if relative
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return None;
        }
        let bytes = Bytes::from(std::fs::read(self.root.join(relative)).ok()?);
        let content = Content {
            validator: Bytes::copy_from_slice(&Sha256::digest(&bytes)),
            bytes,
        };
        self.cache
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(path.to_owned(), content.clone());
        Some(content)
    }
}

/// Spawns on the current tokio runtime (for [`kwik_h3::serve_stripes`]).
pub fn spawn(f: std::pin::Pin<Box<dyn Future<Output = ()> + Send>>) {
    tokio::spawn(f);
}
