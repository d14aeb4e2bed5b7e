//! `query` flow entries: a built-in step that reads entities with no
//! component (like Medusa's `useQueryGraphStep`): the input is the filters
//! map, the output the list. It is assembled into workflows here, beside the
//! component steps, not among the capabilities a guest is granted.

use std::sync::Arc;

use futures::future::BoxFuture;
use serde_json::Value;

use crate::app::QuerySpec;
use crate::capabilities::entities::{EntityStore, Filter, Query};
use crate::json::Json;
use crate::saga::{FailureKind, Invoked, Step, StepCall, StepFailure};

/// The built-in step behind a `query` entry.
pub struct QueryStep {
    store: Arc<EntityStore>,
    spec: QuerySpec,
}

impl QueryStep {
    /// A query of `spec.entity` in `store`.
    pub fn new(store: Arc<EntityStore>, spec: QuerySpec) -> QueryStep {
        QueryStep { store, spec }
    }

    fn run(&self, filters: &Value) -> Result<Json, StepFailure> {
        let filters = match filters {
            Value::Null => Vec::new(),
            Value::Object(map) => map
                .iter()
                .map(|(field, value)| Filter {
                    field: field.clone(),
                    value: value.clone(),
                })
                .collect(),
            other => {
                return Err(StepFailure::new(
                    FailureKind::InvalidArgument,
                    format!("a query's filters must be a map of field to value, not {other}"),
                )
                .permanent());
            }
        };
        let query = Query {
            filters,
            with_deleted: self.spec.with_deleted,
            limit: self.spec.limit,
            offset: 0,
        };
        let rows = self
            .store
            .list(&self.spec.entity, &query)
            .map_err(|e| StepFailure {
                kind: e.kind,
                message: e.message,
                permanent: e.permanent,
                compensation_data: None,
            })?;
        let rows: Vec<Value> = rows.into_iter().map(|row| self.project(row)).collect();
        Ok(Json::from_value(Value::Array(rows)))
    }

    /// Keeps only the requested fields (all when none are named).
    fn project(&self, row: Value) -> Value {
        if self.spec.fields.is_empty() {
            return row;
        }
        let Value::Object(map) = row else { return row };
        Value::Object(
            map.into_iter()
                .filter(|(k, _)| self.spec.fields.contains(k))
                .collect(),
        )
    }
}

impl Step for QueryStep {
    fn invoke<'a>(
        &'a self,
        input: &'a Json,
        _call: &'a StepCall,
    ) -> BoxFuture<'a, Result<Invoked, StepFailure>> {
        Box::pin(async move { self.run(input.value()).map(Invoked::done) })
    }

    fn compensate<'a>(
        &'a self,
        _data: Option<&'a Json>,
        _call: &'a StepCall,
    ) -> BoxFuture<'a, Result<(), StepFailure>> {
        Box::pin(async { Ok(()) })
    }
}
