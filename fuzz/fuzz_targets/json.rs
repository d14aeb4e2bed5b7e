//! The JSON boundary: what a guest returns (output, compensation data, an
//! error's data, an entity's payload) and what a caller posts (a run's input,
//! an async step's answer) all enter through `Json::parse`. Whatever it
//! accepts must be readable by every later use without a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasaga_core::Json;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(json) = Json::parse(text) else {
        return;
    };
    let _ = json.value();
    let _ = json.cel();
    let _ = json.shape();
    // Journaled as text, read back on resume.
    let again = Json::parse(json.text().to_string()).expect("accepted JSON reads back");
    assert_eq!(again.value(), json.value());
    // Wrapped into an event, as `step.completed` carries an output.
    let _ = Json::object(&[("output", &json)]).value();
});
