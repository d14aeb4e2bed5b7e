//! The brand workflows end to end: real components through the real `host`
//! binary, checked against the SQLite state file.

mod common;

use common::{Sandbox, brand_manifest};
use serde_json::json;

#[test]
fn create_brand_stores_the_brand_and_returns_it() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&brand_manifest("create-brand.toml"), r#"{"name": "Acme"}"#);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "done");
    assert_eq!(report["workflow"], "create-brand");
    let brand = &report["output"];
    assert_eq!(brand["name"], "Acme");
    let id = brand["id"].as_str().unwrap();
    assert!(id.starts_with("brand_"), "{brand}");
    assert_eq!(
        run.calls(),
        ["invoke validate-brand", "invoke create-brand"]
    );
    let rows = sandbox.rows("brand");
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, id);
    assert_eq!(rows[0].1, json!({"name": "Acme"}));
    assert!(report["run"].as_str().unwrap().len() == 36);
    for field in ["run", "workflow", "status", "output", "error", "trace"] {
        assert!(report.get(field).is_some(), "report lacks {field}");
    }
}

#[test]
fn an_invalid_brand_name_is_rejected_before_anything_is_created() {
    let sandbox = Sandbox::new();
    let run = sandbox.run(&brand_manifest("create-brand.toml"), r#"{"name": "A"}"#);
    assert_eq!(run.code, 1);
    let report = run.report();
    assert_eq!(report["status"], "reverted");
    assert_eq!(report["error"]["kind"], "invalid-data");
    assert_eq!(report["error"]["step"], "validate-brand");
    assert!(
        report["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too short")
    );
    assert!(sandbox.rows("brand").is_empty());
}

#[test]
fn the_failing_workflow_compensates_in_reverse_and_restores_the_store() {
    let sandbox = Sandbox::new();
    // A brand that exists before the run must survive it untouched.
    let before = sandbox.run(
        &brand_manifest("create-brand.toml"),
        r#"{"name": "Existing"}"#,
    );
    assert_eq!(before.code, 0, "{}", before.stderr);
    let rows_before = sandbox.rows("brand");

    let run = sandbox.run(
        &brand_manifest("create-brand-fails.toml"),
        r#"{"brand": {"name": "Acme"}, "products": [{"title": "Anvil"}, {"title": "Rocket"}]}"#,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    let report = run.report();
    assert_eq!(report["status"], "reverted");
    assert_eq!(
        run.calls(),
        [
            "invoke create-brand",
            "invoke create-products",
            "invoke validate-brand",
            "compensate validate-brand",
            "compensate create-products",
            "compensate create-brand",
        ]
    );
    let trace = report["trace"].as_array().unwrap();
    // The failing step's compensation gets no data; the others get theirs.
    assert_eq!(trace[3]["input"], json!(null));
    let product_ids = trace[4]["input"].as_array().unwrap();
    assert_eq!(product_ids.len(), 2);
    assert!(trace[5]["input"].as_str().unwrap().starts_with("brand_"));
    assert!(
        trace
            .iter()
            .all(|t| t["outcome"] != "error" || t["action"] == "invoke")
    );
    assert_eq!(report["error"]["kind"], "invalid-data");
    assert_eq!(sandbox.rows("brand"), rows_before);
    assert!(sandbox.rows("product").is_empty());
}

#[test]
fn setup_brand_creates_products_and_collections_in_parallel() {
    let sandbox = Sandbox::new();
    let input = std::fs::read_to_string(brand_manifest("setup-brand.input.json")).unwrap();
    let run = sandbox.run(&brand_manifest("setup-brand.toml"), &input);
    assert_eq!(run.code, 0, "{}", run.stderr);
    let output = &run.report()["output"];
    let brand_id = output["brand"]["id"].as_str().unwrap();
    assert_eq!(output["products"].as_array().unwrap().len(), 2);
    assert_eq!(output["collections"][0]["title"], "Spring 2026");
    assert_eq!(output["products"][1]["handle"], "giant-magnet");
    let products = sandbox.rows("product");
    assert_eq!(products.len(), 2);
    assert!(
        products
            .iter()
            .all(|(_, data, _)| data["brand_id"] == brand_id)
    );
    assert_eq!(sandbox.rows("collection").len(), 1);
    let calls = run.calls();
    assert_eq!(calls[0], "invoke create-brand");
    let mut parallel = calls[1..].to_vec();
    parallel.sort();
    assert_eq!(
        parallel,
        ["invoke create-collections", "invoke create-products"]
    );
}

#[test]
fn process_brand_assigns_the_default_logo_only_when_missing() {
    let sandbox = Sandbox::new();
    let manifest = brand_manifest("process-brand.toml");
    let without = sandbox.run(&manifest, r#"{"name": "Acme"}"#);
    assert_eq!(without.code, 0, "{}", without.stderr);
    assert_eq!(
        without.report()["output"]["logo_url"],
        "https://cdn.example.com/brands/default-logo.png"
    );
    assert_eq!(
        without.calls(),
        ["invoke create-brand", "invoke assign-default-logo"]
    );

    let with = sandbox.run(
        &manifest,
        r#"{"name": "Beta", "logo_url": "https://beta.example/logo.svg"}"#,
    );
    assert_eq!(with.code, 0, "{}", with.stderr);
    assert_eq!(
        with.report()["output"]["logo_url"],
        "https://beta.example/logo.svg"
    );
    assert_eq!(with.calls(), ["invoke create-brand"]);
    let rows = sandbox.rows("brand");
    assert_eq!(
        rows[0].1["logo_url"],
        "https://cdn.example.com/brands/default-logo.png"
    );
    assert_eq!(rows[1].1["logo_url"], "https://beta.example/logo.svg");
}

#[test]
fn update_brand_transforms_the_input_into_changes() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&brand_manifest("create-brand.toml"), r#"{"name": "Acme"}"#)
        .report();
    let id = created["output"]["id"].as_str().unwrap();
    let run = sandbox.run(
        &brand_manifest("update-brand.toml"),
        &json!({"id": id, "name": "Acme Co"}).to_string(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    let output = &run.report()["output"];
    assert_eq!(output["name"], "Acme Co");
    assert_eq!(output["description"], "Products by Acme Co");
    assert_eq!(
        sandbox.rows("brand")[0].1,
        json!({"name": "Acme Co", "description": "Products by Acme Co"})
    );

    // A name that fails validation after the update was read changes nothing.
    let bad = sandbox.run(
        &brand_manifest("update-brand.toml"),
        &json!({"id": id, "name": "X"}).to_string(),
    );
    assert_eq!(bad.code, 1);
    assert_eq!(sandbox.rows("brand")[0].1["name"], "Acme Co");
}

#[test]
fn delete_brand_soft_deletes_and_an_unknown_id_is_not_found() {
    let sandbox = Sandbox::new();
    let created = sandbox
        .run(&brand_manifest("create-brand.toml"), r#"{"name": "Acme"}"#)
        .report();
    let id = created["output"]["id"].as_str().unwrap();
    let run = sandbox.run(
        &brand_manifest("delete-brand.toml"),
        &json!({"id": id}).to_string(),
    );
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert_eq!(
        run.report()["output"],
        json!({"id": id, "name": "Acme", "deleted": true})
    );
    let rows = sandbox.rows("brand");
    assert!(rows[0].2.is_some(), "soft-deleted: {rows:?}");

    let again = sandbox.run(
        &brand_manifest("delete-brand.toml"),
        &json!({"id": id}).to_string(),
    );
    assert_eq!(again.code, 1);
    assert_eq!(again.report()["error"]["kind"], "not-found");
}
