//! The on-disk cache of compiled components, keyed by the component's content
//! hash and the engine's compatibility hash: a second start does not recompile.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::Instant;

use wasmtime::Engine;
use wasmtime::component::Component;

use super::LoadError;

/// Where compiled components are kept (`None`: compile every time).
#[derive(Debug, Clone)]
pub struct ComponentCache {
    dir: Option<PathBuf>,
}

impl ComponentCache {
    /// A cache in `dir` (created on first write).
    pub fn new(dir: Option<PathBuf>) -> ComponentCache {
        ComponentCache { dir }
    }

    /// The default: `$WASAGA_CACHE_DIR`, else `$XDG_CACHE_HOME/wasaga`, else
    /// `~/.cache/wasaga`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("WASAGA_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("wasaga"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache").join("wasaga"))
    }

    /// The cache directory, if any.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// The component at `path`, and whether it came from the cache.
    pub fn load(&self, engine: &Engine, path: &Path) -> Result<(Component, bool), LoadError> {
        self.load_hashed(engine, path)
            .map(|(component, from_cache, _)| (component, from_cache))
    }

    /// [`ComponentCache::load`], with the blake3 hash of the file's bytes
    /// (what a run pins).
    pub fn load_hashed(
        &self,
        engine: &Engine,
        path: &Path,
    ) -> Result<(Component, bool, String), LoadError> {
        let bytes = std::fs::read(path).map_err(|source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let started = Instant::now();
        let cached = self
            .dir
            .as_ref()
            .map(|dir| dir.join(format!("{}.cwasm", key(engine, &hash))));
        if let Some(file) = cached.as_ref().filter(|f| f.exists()) {
            // SAFETY: the file is one this cache wrote with `serialize` for an
            // engine with the same compatibility hash (part of its name);
            // wasmtime also checks the header and refuses a mismatch.
            match unsafe { Component::deserialize_file(engine, file) } {
                Ok(component) => {
                    tracing::debug!(component = %path.display(), ms = started.elapsed().as_secs_f64() * 1e3, "component loaded from cache");
                    return Ok((component, true, hash));
                }
                Err(e) => {
                    tracing::warn!(file = %file.display(), "ignoring a cached component that does not load: {e}")
                }
            }
        }
        let component = Component::new(engine, &bytes).map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(component = %path.display(), ms = (started.elapsed().as_secs_f64() * 1e3).round(), "component compiled");
        if let Some(file) = cached
            && let Err(e) = store(&component, &file)
        {
            tracing::warn!(file = %file.display(), "could not cache the compiled component: {e}");
        }
        Ok((component, false, hash))
    }
}

/// `<content hash>-<engine hash>`.
fn key(engine: &Engine, content_hash: &str) -> String {
    let mut engine_hash = std::collections::hash_map::DefaultHasher::new();
    engine
        .precompile_compatibility_hash()
        .hash(&mut engine_hash);
    env!("CARGO_PKG_VERSION").hash(&mut engine_hash);
    format!("{content_hash}-{:016x}", engine_hash.finish())
}

/// Writes atomically: a reader never sees half a file.
fn store(component: &Component, file: &Path) -> anyhow::Result<()> {
    let bytes = component.serialize()?;
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}
