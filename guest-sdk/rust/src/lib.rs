//! # wasaga-sdk: write Wasaga workflow steps in Rust
//!
//! A Wasaga step is a WebAssembly component with two functions: `invoke`
//! does the work, `compensate` undoes it when a later step of the workflow
//! fails. With this crate both are ordinary Rust functions over serde types;
//! [`create_step!`] turns them into the component's exports.
//!
//! ```no_run
//! use serde::{Deserialize, Serialize};
//! use wasaga_sdk::{StepContext, StepError, StepResponse};
//!
//! #[derive(Deserialize, Serialize)]
//! struct NewBrand { name: String }
//!
//! #[derive(Deserialize, Serialize)]
//! struct Brand { id: String, name: String }
//!
//! /// Creates the brand; its id is the compensation data.
//! fn invoke(input: NewBrand, ctx: &StepContext) -> Result<StepResponse<Brand, String>, StepError> {
//!     if input.name.len() < 2 {
//!         return Err(StepError::invalid_data("a brand name needs at least 2 characters").permanent());
//!     }
//!     let brand: Brand = ctx.entities("brand")?.create(&input)?;
//!     let id = brand.id.clone();
//!     Ok(StepResponse::with_compensation(brand, id))
//! }
//!
//! /// Deletes the brand again. `None` when `invoke` itself failed.
//! fn compensate(id: Option<String>, ctx: &StepContext) -> Result<(), StepError> {
//!     match id {
//!         Some(id) => ctx.entities("brand")?.delete(&id),
//!         None => Ok(()),
//!     }
//! }
//!
//! wasaga_sdk::create_step!(invoke, compensate);
//! ```
//!
//! Build it as a `cdylib` with `cargo build --release --target wasm32-wasip2`;
//! the `.wasm` file in `target/wasm32-wasip2/release/` is the component a
//! workflow manifest names.
//!
//! Capabilities are reached through the [`StepContext`]: [`StepContext::entities`],
//! [`StepContext::events`] and [`StepContext::settings`] return handles only when
//! the manifest grants them to the step; otherwise a `not-allowed` [`StepError`]
//! that shows the manifest line to add. [`log`] needs no grant.
//!
//! Outbound HTTP: [`StepContext::http`] sends requests through the standard
//! `wasi:http` interface to the hosts the step's `http` grant allows;
//! [`StepContext::secret`] gives a placeholder the host swaps for a secret's
//! value on requests to that secret's hosts (the step never sees the value).

// The generated bindings name this crate by its path so that the export
// macro also works from the step author's crate.
extern crate self as wasaga_sdk;

mod context;
mod entities;
mod error;
mod events;
pub mod http;
pub mod log;
mod response;
mod settings;

#[doc(hidden)]
pub mod __private;

pub use context::StepContext;
pub use entities::{Entities, Query};
pub use error::{ErrorKind, StepError};
pub use events::Events;
pub use http::{Http, Request, Response};
pub use response::StepResponse;
pub use settings::Settings;

/// Re-exported so step crates need no direct serde_json dependency.
pub use serde_json::{Value, json};

/// Makes a component of a step: `create_step!(invoke, compensate)`, or
/// `create_step!(invoke)` for a step with nothing to undo.
///
/// `invoke` is `fn(I, &StepContext) -> Result<StepResponse<O, C>, StepError>`
/// and `compensate` is `fn(Option<C>, &StepContext) -> Result<(), StepError>`,
/// where `I` and `C` implement `Deserialize` and `O` and `C` implement
/// `Serialize`. Input that does not deserialize into `I` fails the step with a
/// permanent `invalid-data` error.
#[macro_export]
macro_rules! create_step {
    ($invoke:path, $compensate:path) => {
        struct __WasagaStep;

        impl $crate::__private::Guest for __WasagaStep {
            fn invoke(
                input: ::std::string::String,
                ctx: $crate::__private::WitContext,
            ) -> ::std::result::Result<$crate::__private::WitResponse, $crate::__private::WitError> {
                $crate::__private::invoke(input, ctx, $invoke)
            }

            fn compensate(
                data: ::std::option::Option<::std::string::String>,
                ctx: $crate::__private::WitContext,
            ) -> ::std::result::Result<(), $crate::__private::WitError> {
                $crate::__private::compensate(data, ctx, $compensate)
            }
        }

        $crate::__private::export_step!(__WasagaStep with_types_in $crate::__private::bindings);
    };
    ($invoke:path) => {
        fn __wasaga_no_compensation(
            _data: ::std::option::Option<$crate::Value>,
            _ctx: &$crate::StepContext,
        ) -> ::std::result::Result<(), $crate::StepError> {
            Ok(())
        }
        $crate::create_step!($invoke, __wasaga_no_compensation);
    };
}
