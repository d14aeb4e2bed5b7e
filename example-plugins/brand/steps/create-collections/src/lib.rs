//! `create-collections`: creates a brand's collections in the `collection` collection;
//! compensation deletes them.

use brand_model::{BrandItems, Item};
use serde::Serialize;
use wasaga_sdk::{ErrorKind, StepContext, StepError, StepResponse};

#[derive(Serialize)]
struct Stored<'a> {
    brand_id: &'a str,
    title: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    handle: Option<&'a str>,
}

fn invoke(
    input: BrandItems,
    ctx: &StepContext,
) -> Result<StepResponse<Vec<Item>, Vec<String>>, StepError> {
    let store = ctx.entities("collection")?;
    let mut created: Vec<Item> = Vec::with_capacity(input.items.len());
    for item in &input.items {
        let row = Stored {
            brand_id: &input.brand_id,
            title: &item.title,
            handle: item.handle.as_deref(),
        };
        match store.create::<_, Item>(&row) {
            Ok(stored) => created.push(stored),
            // Hand what was created so far to this step's own compensation.
            Err(e) => {
                let ids: Vec<&str> = created.iter().map(|i| i.id.as_str()).collect();
                return Err(e.with_compensation(&ids));
            }
        }
    }
    let ids = created.iter().map(|i| i.id.clone()).collect();
    Ok(StepResponse::with_compensation(created, ids))
}

fn compensate(ids: Option<Vec<String>>, ctx: &StepContext) -> Result<(), StepError> {
    let store = ctx.entities("collection")?;
    for id in ids.unwrap_or_default() {
        match store.delete(&id) {
            Err(e) if e.kind() != ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

wasaga_sdk::create_step!(invoke, compensate);
