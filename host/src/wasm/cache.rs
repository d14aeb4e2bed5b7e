//! The on-disk cache of compiled components, keyed by the component's content
//! hash and the engine's compatibility hash: a second start does not recompile.
//! Beside each compiled file it remembers the content hash of the source file
//! it came from, under the file's identity (device, inode, size, mtime, ctime),
//! so that a start does not read and hash an unchanged component (18 MiB for
//! a Python step: 7 of the 9.5 ms a cached start took).

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

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
        let read_error = |source| LoadError::Read {
            path: path.to_path_buf(),
            source,
        };
        // The identity is the open file's, taken before its bytes are read
        // from the same handle: a file replaced at the path is another
        // file, and one changed in between is recorded under its old
        // identity, which no longer matches.
        let mut file = std::fs::File::open(path).map_err(read_error)?;
        let identity = file.metadata().map_err(read_error)?;
        let remembered = self
            .dir
            .as_ref()
            .filter(|_| identity.is_file())
            .map(|dir| Remembered::at(dir, path, &identity));
        if let Some(hash) = remembered.as_ref().and_then(Remembered::hash)
            && let Some(component) = self.cached(engine, path, &hash)
        {
            return Ok((component, true, hash));
        }
        let mut bytes = Vec::with_capacity(identity.len() as usize);
        std::io::Read::read_to_end(&mut file, &mut bytes).map_err(read_error)?;
        let hash = blake3::hash(&bytes).to_hex().to_string();
        let (component, from_cache) = match self.cached(engine, path, &hash) {
            Some(component) => (component, true),
            None => (self.compile(engine, path, &bytes, &hash)?, false),
        };
        if let Some(remembered) = remembered {
            remembered.remember(&hash);
        }
        Ok((component, from_cache, hash))
    }

    /// The compiled code of the content `hash` from the cache, if it is there
    /// and loads.
    fn cached(&self, engine: &Engine, path: &Path, hash: &str) -> Option<Component> {
        let started = Instant::now();
        let file = self
            .dir
            .as_ref()?
            .join(format!("{}.cwasm", key(engine, hash)));
        if !file.exists() {
            return None;
        }
        // SAFETY: the file is one this cache wrote with `serialize` for an
        // engine with the same compatibility hash (part of its name);
        // wasmtime also checks the header and refuses a mismatch.
        match unsafe { Component::deserialize_file(engine, &file) } {
            Ok(component) => {
                tracing::debug!(component = %path.display(), ms = started.elapsed().as_secs_f64() * 1e3, "component loaded from cache");
                Some(component)
            }
            Err(e) => {
                tracing::warn!(file = %file.display(), "ignoring a cached component that does not load: {e}");
                None
            }
        }
    }

    /// Compiles `bytes` and keeps the result in the cache.
    fn compile(
        &self,
        engine: &Engine,
        path: &Path,
        bytes: &[u8],
        hash: &str,
    ) -> Result<Component, LoadError> {
        let started = Instant::now();
        let component = Component::new(engine, bytes).map_err(|e| LoadError::Compile {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        })?;
        tracing::info!(component = %path.display(), ms = (started.elapsed().as_secs_f64() * 1e3).round(), "component compiled");
        if let Some(dir) = &self.dir {
            let file = dir.join(format!("{}.cwasm", key(engine, hash)));
            if let Err(e) = store(&component, &file) {
                tracing::warn!(file = %file.display(), "could not cache the compiled component: {e}");
            }
        }
        Ok(component)
    }
}

/// How long a file must have been left alone before its identity stands for
/// its content: file times tick coarsely (milliseconds), so a file rewritten
/// within one tick of being read could keep its identity. Git's index has
/// the same rule ("racy" entries are rehashed).
const SETTLED: Duration = Duration::from_secs(2);

/// The content hash remembered for one source file, under its identity.
struct Remembered {
    /// `<cache>/<hash of the file's path>.source`.
    file: PathBuf,
    /// The file's identity now, if it has settled (else nothing is trusted
    /// or remembered).
    identity: Option<String>,
}

impl Remembered {
    fn at(dir: &Path, path: &Path, metadata: &std::fs::Metadata) -> Remembered {
        let absolute = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let name = blake3::hash(absolute.as_os_str().as_encoded_bytes()).to_hex();
        Remembered {
            file: dir.join(format!("{}.source", &name[..32])),
            identity: identity(metadata),
        }
    }

    /// The content hash remembered for this identity of the file.
    fn hash(&self) -> Option<String> {
        let identity = self.identity.as_ref()?;
        let text = std::fs::read_to_string(&self.file).ok()?;
        let (remembered, hash) = text.trim_end().split_once(' ')?;
        (remembered == identity && hash.len() == 64 && hash.bytes().all(|b| b.is_ascii_hexdigit()))
            .then(|| hash.to_string())
    }

    /// Remembers `hash` for this identity (best effort: a failure only costs
    /// the next start a hash).
    fn remember(&self, hash: &str) {
        let Some(identity) = &self.identity else {
            return;
        };
        let tmp = self.file.with_extension(unique_tmp());
        let written = std::fs::create_dir_all(self.file.parent().unwrap_or(Path::new(".")))
            .and_then(|()| std::fs::write(&tmp, format!("{identity} {hash}\n")))
            .and_then(|()| std::fs::rename(&tmp, &self.file));
        if let Err(e) = written {
            tracing::debug!(file = %self.file.display(), "could not remember a component's hash: {e}");
        }
    }
}

/// A file's identity: device, inode, size, and modification and change
/// times in nanoseconds (any write changes the ctime, which no tool can set
/// back); `None` for a file changed in the last [`SETTLED`].
#[cfg(unix)]
fn identity(metadata: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let now = SystemTime::now();
    let settled = |time: Option<SystemTime>| {
        time.and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age >= SETTLED)
    };
    let changed = u64::try_from(metadata.ctime()).ok().and_then(|seconds| {
        SystemTime::UNIX_EPOCH.checked_add(Duration::new(seconds, metadata.ctime_nsec() as u32))
    });
    if !settled(metadata.modified().ok()) || !settled(changed) {
        return None;
    }
    Some(format!(
        "{}:{}:{}:{}.{}:{}.{}",
        metadata.dev(),
        metadata.ino(),
        metadata.size(),
        metadata.mtime(),
        metadata.mtime_nsec(),
        metadata.ctime(),
        metadata.ctime_nsec()
    ))
}

/// Without a change time to trust, every start hashes the file.
#[cfg(not(unix))]
fn identity(_metadata: &std::fs::Metadata) -> Option<String> {
    None
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
    let tmp = file.with_extension(unique_tmp());
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, file)?;
    Ok(())
}

/// A temporary file's extension no other writer uses at the same time: two
/// threads of one process, or two containers (both pid 1) sharing a cache,
/// must not write one file.
fn unique_tmp() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        "tmp{}-{}-{nanos}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
