//! Who watches the runs a host executes: the observers of their committed
//! transitions (live streams, metrics) and the trace exporter, with the
//! trace context a new run gets. It may not execute or record runs.

use std::sync::Arc;

use super::Host;
use crate::journal::Observer;
use crate::saga::RunRequest;

impl Host {
    /// Tells `observer` about every transition of the runs this host
    /// executes (after the observers given before).
    pub fn observed(mut self, observer: Arc<dyn Observer>) -> Host {
        self.observer = Some(match self.observer.take() {
            Some(before) => Arc::new(crate::journal::Observers(vec![before, observer])),
            None => observer,
        });
        self
    }

    /// Exports the spans of the runs this host executes to `telemetry`; a
    /// run started here without a caller's trace gets a trace of its own.
    pub fn traced(mut self, telemetry: Option<Arc<crate::otel::Telemetry>>) -> Host {
        match telemetry {
            Some(telemetry) => {
                let spans = Arc::new(crate::otel::RunSpans::new(telemetry, self.journal.clone()));
                self.spans = Some(spans.clone());
                self.observed(spans)
            }
            None => self,
        }
    }

    /// The trace a run of `request` belongs to: the caller's, or, when this
    /// host exports traces, a root of its own (derived from the run's id, so
    /// recording the run and executing it agree).
    pub(super) fn trace_context_of(
        &self,
        request: &RunRequest,
    ) -> Option<crate::telemetry::TraceContext> {
        request.trace_context.or_else(|| {
            self.spans
                .as_ref()
                .map(|_| crate::telemetry::TraceContext::root(&request.run_id))
        })
    }
}
