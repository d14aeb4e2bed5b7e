//! What a successful `invoke` returns (Medusa's `StepResponse`).

/// The result of a successful `invoke`: an output and, optionally, separate
/// data for `compensate`; or a skip.
///
/// `O` is the output type; `C` the compensation data type (the output's by
/// default).
#[derive(Debug, Clone, PartialEq)]
pub enum StepResponse<O, C = O> {
    /// The step did its work.
    Done {
        /// The step's result, bound to the flow entry's `as` name.
        output: O,
        /// What `compensate` receives; `None` means the output.
        compensation: Option<C>,
    },
    /// The step chose not to run: its `as` name is bound to `null` and it
    /// is not compensated.
    Skip,
}

impl<O, C> StepResponse<O, C> {
    /// An output that is also the compensation data.
    pub fn new(output: O) -> Self {
        StepResponse::Done {
            output,
            compensation: None,
        }
    }

    /// An output, and other data for `compensate` (Medusa's
    /// `new StepResponse(output, compensationData)`).
    pub fn with_compensation(output: O, compensation: C) -> Self {
        StepResponse::Done {
            output,
            compensation: Some(compensation),
        }
    }

    /// Skips the step (Medusa's `StepResponse.skip()`).
    pub fn skip() -> Self {
        StepResponse::Skip
    }
}
