//! The store's behaviour, from one source on both backends: a real
//! SQLite state file and a real PostgreSQL server (a schema per test).
use super::*;
use crate::journal::{Begin, Journal, NewRun, Owner, SyncMode};
use serde_json::json;

type Guard = Box<dyn std::any::Any>;

/// A store, and the journal of the same database (for fenced writes).
fn open_sqlite() -> (EntityStore, Arc<dyn Journal>, Guard) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let (journal, store) = crate::durable::open_state_file(&path, SyncMode::Normal).unwrap();
    let store = Arc::try_unwrap(store).ok().unwrap();
    (store, journal, Box::new(dir))
}

fn open_postgres() -> (EntityStore, Arc<dyn Journal>, Guard) {
    let schema = crate::postgres::testing::TestSchema::new();
    let database = crate::postgres::Database::connect(&schema.url, SyncMode::Normal).unwrap();
    let journal = Arc::new(crate::journal::PgJournal::new(database.clone()));
    (EntityStore::postgres(database), journal, Box::new(schema))
}

macro_rules! on_both_backends {
    ($($test:ident),* $(,)?) => {
        mod sqlite {
            $(#[test]
            fn $test() {
                let (store, journal, _guard) = super::open_sqlite();
                futures::executor::block_on(super::$test(&store, &journal));
            })*
        }
        mod postgres {
            $(#[test]
            fn $test() {
                let (store, journal, _guard) = super::open_postgres();
                futures::executor::block_on(super::$test(&store, &journal));
            })*
        }
    };
}

on_both_backends!(
    a_call_that_runs_again_gets_back_the_entities_it_created,
    a_row_planted_at_a_derived_id_is_not_taken_for_the_creates_own,
    create_get_update_soft_delete_restore_delete,
    ids_are_kept_and_duplicates_refused,
    list_filters_by_typed_equality_in_creation_order,
    a_host_that_lost_its_lease_writes_no_entity,
);

fn kind(err: StoreError) -> FailureKind {
    err.kind
}

async fn a_call_that_runs_again_gets_back_the_entities_it_created(
    store: &EntityStore,
    _journal: &Arc<dyn Journal>,
) {
    let call = "run1:create-products:invoke";
    let first = store
        .create_once("product", json!({"title": "A"}), Some((call, 0)), None)
        .await
        .unwrap();
    let second = store
        .create_once("product", json!({"title": "B"}), Some((call, 1)), None)
        .await
        .unwrap();
    assert_ne!(first["id"], second["id"]);
    // The same call again (a retry, a re-invoke after a crash).
    let again = store
        .create_once("product", json!({"title": "A"}), Some((call, 0)), None)
        .await
        .unwrap();
    assert_eq!(again, first);
    assert_eq!(store.count("product").unwrap(), 2);
    // Another run's call gets its own entity.
    let other = store
        .create_once(
            "product",
            json!({"title": "A"}),
            Some(("run2:create-products:invoke", 0)),
            None,
        )
        .await
        .unwrap();
    assert_ne!(other["id"], first["id"]);
    // Deleted for good (compensated): created anew.
    store
        .delete("product", first["id"].as_str().unwrap(), None)
        .await
        .unwrap();
    let anew = store
        .create_once("product", json!({"title": "A"}), Some((call, 0)), None)
        .await
        .unwrap();
    assert_eq!(anew["id"], first["id"]);
    assert_eq!(store.count("product").unwrap(), 3);
    // An id the step chose stays a duplicate.
    store
        .create_once("product", json!({"id": "p1"}), Some((call, 5)), None)
        .await
        .unwrap();
    assert_eq!(
        kind(
            store
                .create_once("product", json!({"id": "p1"}), Some((call, 5)), None)
                .await
                .unwrap_err()
        ),
        FailureKind::Duplicate
    );
}

/// A step granted the same collection can compute the id a later step's
/// create will derive (the hash's inputs are the run's call keys) and
/// plant a row there first. That row is not taken for the later create's
/// own: the create fails as a duplicate instead of returning planted data.
async fn a_row_planted_at_a_derived_id_is_not_taken_for_the_creates_own(
    store: &EntityStore,
    _journal: &Arc<dyn Journal>,
) {
    let victim = "run1:charge:invoke";
    let planted_id = derived_id("payment", victim, 0);
    store
        .create_once(
            "payment",
            json!({"id": planted_id, "amount": 0, "status": "paid"}),
            Some(("run1:attacker:invoke", 0)),
            None,
        )
        .await
        .unwrap();
    let err = store
        .create_once("payment", json!({"amount": 100}), Some((victim, 0)), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind, FailureKind::Duplicate);
    assert!(err.message.contains("not created by this call"), "{err}");
    assert_eq!(store.get("payment", &planted_id).unwrap()["amount"], 0);
}

async fn create_get_update_soft_delete_restore_delete(
    store: &EntityStore,
    _journal: &Arc<dyn Journal>,
) {
    let brand = store
        .create("brand", json!({"name": "Acme"}))
        .await
        .unwrap();
    let id = brand["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("brand_"));
    assert_eq!(store.get("brand", &id).unwrap()["name"], "Acme");
    let updated = store
        .update("brand", &id, json!({"logo_url": "x"}), None)
        .unwrap();
    assert_eq!(
        (updated["name"].as_str(), updated["logo_url"].as_str()),
        (Some("Acme"), Some("x"))
    );
    store.soft_delete("brand", &id, None).await.unwrap();
    assert_eq!(
        kind(store.get("brand", &id).unwrap_err()),
        FailureKind::NotFound
    );
    assert_eq!(store.list("brand", &Query::default()).unwrap().len(), 0);
    store.restore("brand", &id, None).await.unwrap();
    assert_eq!(
        kind(store.restore("brand", &id, None).await.unwrap_err()),
        FailureKind::UnexpectedState
    );
    store.delete("brand", &id, None).await.unwrap();
    assert_eq!(
        kind(store.delete("brand", &id, None).await.unwrap_err()),
        FailureKind::NotFound
    );
}

async fn ids_are_kept_and_duplicates_refused(store: &EntityStore, _journal: &Arc<dyn Journal>) {
    store
        .create("brand", json!({"id": "b1", "name": "A"}))
        .await
        .unwrap();
    assert_eq!(
        kind(
            store
                .create("brand", json!({"id": "b1"}))
                .await
                .unwrap_err()
        ),
        FailureKind::Duplicate
    );
    assert_eq!(
        kind(
            store
                .create("brand", json!({"created_at": "x"}))
                .await
                .unwrap_err()
        ),
        FailureKind::InvalidData
    );
    assert_eq!(
        kind(store.create("brand", json!([1])).await.unwrap_err()),
        FailureKind::InvalidData
    );
}

async fn list_filters_by_typed_equality_in_creation_order(
    store: &EntityStore,
    _journal: &Arc<dyn Journal>,
) {
    for (title, brand, n) in [("a", "b1", 1), ("b", "b2", 2), ("c", "b1", 3)] {
        store
            .create(
                "product",
                json!({"title": title, "brand_id": brand, "n": n, "meta": {"k": n}}),
            )
            .await
            .unwrap();
    }
    let query = |filters: Vec<Filter>| Query {
        filters,
        ..Query::default()
    };
    let titles = |rows: Vec<Value>| {
        rows.iter()
            .map(|r| r["title"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let eq = |field: &str, value: Value| Filter {
        field: field.into(),
        value,
    };
    assert_eq!(
        titles(
            store
                .list("product", &query(vec![eq("brand_id", json!("b1"))]))
                .unwrap()
        ),
        ["a", "c"]
    );
    assert_eq!(
        titles(
            store
                .list("product", &query(vec![eq("n", json!(2))]))
                .unwrap()
        ),
        ["b"]
    );
    assert_eq!(
        titles(
            store
                .list("product", &query(vec![eq("n", json!("2"))]))
                .unwrap()
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        titles(
            store
                .list("product", &query(vec![eq("meta.k", json!(3))]))
                .unwrap()
        ),
        ["c"]
    );
    assert_eq!(
        titles(
            store
                .list("product", &query(vec![eq("missing", json!(null))]))
                .unwrap()
        )
        .len(),
        3
    );
    let paged = Query {
        limit: Some(1),
        offset: 1,
        ..Query::default()
    };
    assert_eq!(titles(store.list("product", &paged).unwrap()), ["b"]);
    assert_eq!(
        kind(
            store
                .list("product", &query(vec![eq("x'; drop", json!(1))]))
                .unwrap_err()
        ),
        FailureKind::InvalidArgument
    );
}

/// The fence: a call of a host whose lease on the run was taken over
/// gets its entity writes refused (a permanent `host` failure), and the
/// rows stay as they were; the new holder's writes go through.
async fn a_host_that_lost_its_lease_writes_no_entity(
    store: &EntityStore,
    journal: &Arc<dyn Journal>,
) {
    let new_run = NewRun {
        trace_context: None,
        id: "r1".into(),
        transaction_id: "r1".into(),
        workflow: "w".into(),
        manifest: "/m.toml".into(),
        sources: vec![],
        extension_dirs: vec![],
        input: crate::json::Json::from_value(json!({})),
        metadata: crate::json::Json::from_value(json!({})),
        idempotent: false,
        components: vec![],
        rerun_of: None,
        tick: None,
        queue: None,
    };
    let paused = Owner::from_id("other-machine:1:1");
    let Begin::Started { epoch } = journal
        .begin(&new_run, &paused, std::time::Duration::ZERO)
        .unwrap()
    else {
        panic!("a new run");
    };
    let old = Fence {
        run: "r1".into(),
        epoch,
    };
    let kept = store
        .create_once(
            "brand",
            json!({"name": "A"}),
            Some(("r1:a:invoke", 0)),
            Some(&old),
        )
        .await
        .unwrap();
    let id = kept["id"].as_str().unwrap().to_string();
    std::thread::sleep(std::time::Duration::from_millis(5));
    let taken = journal
        .claim("r1", &Owner::current(), std::time::Duration::from_secs(30))
        .unwrap()
        .unwrap();
    let refused = |err: StoreError| {
        assert_eq!(err.kind, FailureKind::Host, "{err}");
        assert!(
            err.permanent && err.message.contains("lost its lease"),
            "{err}"
        );
    };
    refused(
        store
            .create_once(
                "brand",
                json!({"name": "B"}),
                Some(("r1:a:invoke", 1)),
                Some(&old),
            )
            .await
            .unwrap_err(),
    );
    refused(
        store
            .update("brand", &id, json!({"name": "Z"}), Some(&old))
            .unwrap_err(),
    );
    refused(
        store
            .soft_delete("brand", &id, Some(&old))
            .await
            .unwrap_err(),
    );
    refused(store.delete("brand", &id, Some(&old)).await.unwrap_err());
    assert_eq!(store.count("brand").unwrap(), 1);
    assert_eq!(store.get("brand", &id).unwrap()["name"], "A");
    let new = Fence {
        run: "r1".into(),
        epoch: taken,
    };
    store
        .update("brand", &id, json!({"name": "N"}), Some(&new))
        .unwrap();
    store.delete("brand", &id, Some(&new)).await.unwrap();
    assert_eq!(store.count("brand").unwrap(), 0);
}
