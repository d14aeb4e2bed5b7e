//! The WASM layer: one wasmtime `Engine` (component model, async, pooling
//! allocator, epoch interruption), components compiled once and cached on
//! disk, an `InstancePre` per component, and a fresh sandboxed `Store` per
//! call with a memory limit and a deadline. WASI gets no preopened
//! directories, no environment, no network; stdio goes to the log.
//!
//! It may not touch the orchestrator's state or the manifest.

mod cache;
mod engine;
mod sandbox;
mod slots;
mod stdio;
mod step;
mod subscriber;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker};

pub use cache::ComponentCache;
pub use engine::EngineOptions;
pub use sandbox::{HostState, Limits};
pub use step::WasmStep;
pub use subscriber::SubscriberComponent;

use crate::capabilities::bindings::StepPre;
use crate::capabilities::http::ClientOptions;
use crate::capabilities::{OutboundClient, SecretSource};

/// A component failed to load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read component {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not a valid component, or compiling it failed.
    #[error("{path} is not a valid WebAssembly component: {message}")]
    Compile {
        /// The file.
        path: PathBuf,
        /// What wasmtime said.
        message: String,
    },
    /// A secret the manifest declares has no value on this host.
    #[error("{0}")]
    Secrets(String),
    /// The component does not fit the `step` world (wrong exports or imports).
    #[error(
        "{path} does not implement the wasaga:step/step world: {message}\n  (build it against wit/step.wit, e.g. with the wasaga-sdk crate)"
    )]
    Contract {
        /// The file.
        path: PathBuf,
        /// What did not match.
        message: String,
    },
}

/// A component ready to instantiate.
pub struct LoadedComponent {
    path: PathBuf,
    pre: StepPre<HostState>,
    /// Whether it came from the on-disk cache instead of being compiled.
    pub from_cache: bool,
    /// blake3 of the file's bytes when it was loaded.
    pub hash: String,
}

impl LoadedComponent {
    /// The component's file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The engine, the linker with every host import, the compiled-code cache and
/// the components loaded so far.
pub struct Runtime {
    engine: Engine,
    linker: Linker<HostState>,
    cache: ComponentCache,
    loaded: Mutex<HashMap<PathBuf, Arc<LoadedComponent>>>,
    outside: Outside,
    slots: slots::InvokeSlots,
    _epoch: engine::EpochTicker,
}

/// What the host gives steps from outside itself: the pooled HTTP client
/// and where secret values come from.
#[derive(Debug, Clone)]
pub struct Outside {
    /// The outbound HTTP client all calls share.
    pub http: Arc<OutboundClient>,
    /// Where secrets' values are read.
    pub secrets: SecretSource,
}

impl Default for Outside {
    fn default() -> Outside {
        Outside::new(ClientOptions::default(), SecretSource::environment())
    }
}

impl Outside {
    /// A client with `options`, secrets from `secrets`.
    pub fn new(options: ClientOptions, secrets: SecretSource) -> Outside {
        Outside {
            http: Arc::new(OutboundClient::new(options)),
            secrets,
        }
    }
}

impl Runtime {
    /// Builds the engine and linker and starts the epoch ticker.
    pub fn new(options: EngineOptions, cache: ComponentCache) -> wasmtime::Result<Arc<Runtime>> {
        Runtime::with_outside(options, cache, Outside::default())
    }

    /// [`Runtime::new`] with this HTTP client and secret source.
    pub fn with_outside(
        options: EngineOptions,
        cache: ComponentCache,
        outside: Outside,
    ) -> wasmtime::Result<Arc<Runtime>> {
        let engine = engine::build(&options)?;
        let slots = slots::InvokeSlots::new(options.max_instances);
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        crate::capabilities::registry::add_to_linker(&mut linker, HostState::capabilities)?;
        let epoch = engine::EpochTicker::start(engine.clone());
        Ok(Arc::new(Runtime {
            engine,
            linker,
            cache,
            loaded: Mutex::default(),
            outside,
            slots,
            _epoch: epoch,
        }))
    }

    /// Waits for a sandbox slot for an invoke of `workflow` (compensations
    /// take none: a share of the pool is theirs).
    pub async fn invoke_slot(&self, workflow: &Arc<str>) -> slots::InvokeSlot {
        self.slots.invoke(workflow).await
    }

    /// The outbound HTTP client.
    pub fn http(&self) -> &Arc<OutboundClient> {
        &self.outside.http
    }

    /// Where secrets' values come from.
    pub fn secrets(&self) -> &SecretSource {
        &self.outside.secrets
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker with every host import.
    pub fn linker(&self) -> &Linker<HostState> {
        &self.linker
    }

    /// The compiled component at `path`: from the on-disk cache when it
    /// holds this exact file's compiled code, else compiled (and cached).
    pub fn compile(&self, path: &Path) -> Result<Component, LoadError> {
        self.cache
            .load(&self.engine, path)
            .map(|(component, _)| component)
    }

    /// Loads the step component at `path` (once per runtime).
    pub fn load(&self, path: &Path) -> Result<Arc<LoadedComponent>, LoadError> {
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        if let Some(loaded) = self.loaded.lock().expect("loaded lock").get(&key) {
            return Ok(loaded.clone());
        }
        let (component, from_cache, hash) = self.cache.load_hashed(&self.engine, path)?;
        let loaded = Arc::new(self.prepare(path, component, from_cache, hash)?);
        self.loaded
            .lock()
            .expect("loaded lock")
            .insert(key, loaded.clone());
        Ok(loaded)
    }

    fn prepare(
        &self,
        path: &Path,
        component: Component,
        from_cache: bool,
        hash: String,
    ) -> Result<LoadedComponent, LoadError> {
        let contract = |e: wasmtime::Error| LoadError::Contract {
            path: path.to_path_buf(),
            message: format!("{e:#}"),
        };
        let instance_pre = self.linker.instantiate_pre(&component).map_err(contract)?;
        let pre = StepPre::new(instance_pre).map_err(contract)?;
        Ok(LoadedComponent {
            path: path.to_path_buf(),
            pre,
            from_cache,
            hash,
        })
    }
}
