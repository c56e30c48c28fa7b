//! Renders cached by (commit, path): N Environments on one commit and path render once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::disk::Rendered;

/// Entries kept before the cache starts over; renders are cheap to redo, memory is not free.
const MAX_ENTRIES: usize = 512;

#[derive(Default)]
pub struct RenderCache {
    entries: Mutex<HashMap<(String, String), Arc<Rendered>>>,
}

impl RenderCache {
    pub fn get(&self, commit: &str, path: &str) -> Option<Arc<Rendered>> {
        let entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.get(&(commit.to_string(), path.to_string())).cloned()
    }

    pub fn insert(&self, commit: &str, path: &str, rendered: Rendered) -> Arc<Rendered> {
        let rendered = Arc::new(rendered);
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert((commit.to_string(), path.to_string()), rendered.clone());
        rendered
    }
}
