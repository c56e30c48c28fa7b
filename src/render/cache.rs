//! Renders cached by (commit, path): N Environments on one commit and path render once.
//!
//! Bounded by bytes, not entries: one render may be a few hundred bytes or tens of MiB, so a count says
//! nothing about memory. The least recently used renders go first; a render bigger than the whole budget is
//! returned but not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;

use super::disk::Rendered;

/// Bytes kept when nothing else is configured (`--render-cache-bytes`).
pub const DEFAULT_CACHE_BYTES: u64 = 128 << 20;

struct Entry {
    rendered: Arc<Rendered>,
    bytes: u64,
    last_used: u64,
}

#[derive(Default)]
struct Entries {
    map: HashMap<(String, String), Entry>,
    bytes: u64,
    clock: u64,
}

pub struct RenderCache {
    max_bytes: u64,
    entries: Mutex<Entries>,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::new(DEFAULT_CACHE_BYTES)
    }
}

impl RenderCache {
    pub fn new(max_bytes: u64) -> Self {
        RenderCache {
            max_bytes,
            entries: Mutex::default(),
        }
    }

    pub fn get(&self, commit: &str, path: &str) -> Option<Arc<Rendered>> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.clock += 1;
        let now = entries.clock;
        let entry = entries.map.get_mut(&(commit.to_string(), path.to_string()))?;
        entry.last_used = now;
        Some(entry.rendered.clone())
    }

    pub fn insert(&self, commit: &str, path: &str, rendered: Rendered) -> Arc<Rendered> {
        let bytes = rendered_bytes(&rendered);
        let rendered = Arc::new(rendered);
        if bytes > self.max_bytes {
            return rendered;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let key = (commit.to_string(), path.to_string());
        if let Some(old) = entries.map.remove(&key) {
            entries.bytes -= old.bytes;
        }
        while entries.bytes + bytes > self.max_bytes {
            let Some(oldest) = entries
                .map
                .iter()
                .min_by_key(|(_, e)| e.last_used)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some(gone) = entries.map.remove(&oldest) {
                entries.bytes -= gone.bytes;
            }
        }
        entries.clock += 1;
        let last_used = entries.clock;
        entries.bytes += bytes;
        entries.map.insert(
            key,
            Entry {
                rendered: rendered.clone(),
                bytes,
                last_used,
            },
        );
        rendered
    }

    /// Bytes held now (an estimate of the heap the renders use).
    pub fn bytes(&self) -> u64 {
        self.entries.lock().unwrap_or_else(|e| e.into_inner()).bytes
    }
}

/// An estimate of a render's heap size: its YAML, plus each object's strings and a fixed cost per JSON node.
fn rendered_bytes(r: &Rendered) -> u64 {
    const NODE: u64 = 32;
    fn value_bytes(v: &Value) -> u64 {
        NODE + match v {
            Value::String(s) => s.len() as u64,
            Value::Array(items) => items.iter().map(value_bytes).sum(),
            Value::Object(map) => map.iter().map(|(k, v)| k.len() as u64 + value_bytes(v)).sum(),
            _ => 0,
        }
    }
    r.yaml.len() as u64
        + r.objects
            .iter()
            .map(|o| o.source.len() as u64 + value_bytes(&o.object))
            .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderedObject;

    fn render(bytes: usize) -> Rendered {
        let objects = vec![RenderedObject {
            source: "a.yaml".to_string(),
            object: serde_json::json!({"kind": "ConfigMap"}),
        }];
        Rendered::new("x".repeat(bytes), objects, false, Vec::new())
    }

    #[test]
    fn the_cache_evicts_by_bytes_least_recently_used_first() {
        let size = rendered_bytes(&render(1000));
        let cache = RenderCache::new(3 * size);
        cache.insert("c1", "a", render(1000));
        cache.insert("c2", "a", render(1000));
        cache.insert("c3", "a", render(1000));
        assert_eq!(cache.bytes(), 3 * size);
        assert!(cache.get("c1", "a").is_some(), "c1 is now the most recently used");
        // One render of twice the size pushes out the two least recently used: c2, then c3.
        cache.insert("big", "a", render(2000 + rendered_bytes(&render(0)) as usize));
        assert_eq!(
            rendered_bytes(&render(2000 + rendered_bytes(&render(0)) as usize)),
            2 * size
        );
        assert!(cache.bytes() <= 3 * size, "{} > {}", cache.bytes(), 3 * size);
        assert!(cache.get("c2", "a").is_none() && cache.get("c3", "a").is_none());
        assert!(cache.get("c1", "a").is_some() && cache.get("big", "a").is_some());
    }

    #[test]
    fn a_render_bigger_than_the_cache_is_returned_not_kept() {
        let cache = RenderCache::new(100);
        let r = cache.insert("c", "a", render(1000));
        assert_eq!(r.yaml.len(), 1000);
        assert!(cache.get("c", "a").is_none());
        assert_eq!(cache.bytes(), 0);
    }

    #[test]
    fn many_small_renders_fit_where_the_old_entry_count_would_not_matter() {
        // 10_000 renders of ~100 bytes stay within 1 MiB; the cache never holds more than its budget.
        let cache = RenderCache::new(1 << 20);
        for i in 0..10_000 {
            cache.insert(&format!("c{i}"), "a", render(100));
            assert!(cache.bytes() <= 1 << 20);
        }
        assert!(cache.get("c9999", "a").is_some());
    }
}
