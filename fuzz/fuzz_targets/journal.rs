//! The journal's record decoding: what a resume reads back from a row
//! (its kind, then its JSON body). A damaged row is an error, never a panic,
//! and a decoded record's JSON reads back. Also read as a run's records
//! around a started record that takes its input by reference (`RunDecoder`):
//! the body after one, and the body as the finished call it points to.
//! Input: one byte choosing the kind, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasaga_core::journal::{RecordKind, RunDecoder};

const KINDS: [&str; 6] = ["started", "finished", "requests", "event", "compensating", "other"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(body) else {
        return;
    };
    let kind = KINDS[selector as usize % KINDS.len()];
    in_a_run(kind, body);
    let Ok(record) = RecordKind::decode(kind, Some("node".into()), Some("invoke"), Some(1), body) else {
        return;
    };
    match record {
        RecordKind::Started { input: Some(input), .. } => {
            let _ = input.value();
        }
        RecordKind::Finished { record, .. } => {
            let _ = serde_json::to_string(&record).expect("a decoded record serializes");
        }
        RecordKind::Event(event) => {
            let _ = event.data.value();
        }
        _ => {}
    }
});

/// The body as record 2 after a finished call, and as record 1 before a
/// start whose input refers to it: an error or a readable record, never a
/// panic.
fn in_a_run(kind: &str, body: &str) {
    let finished = r#"{"outcome":"done","output":{"a":1}}"#;
    let by_reference = r#"{"step":"s","input_of":1}"#;
    let mut after = RunDecoder::new();
    after
        .decode(1, "finished", Some("node".into()), Some("invoke"), Some(1), finished)
        .expect("a well-formed finished record decodes");
    if let Ok(RecordKind::Started { input: Some(input), .. }) =
        after.decode(2, kind, Some("node".into()), Some("invoke"), Some(1), body)
    {
        let _ = input.value();
    }
    let mut before = RunDecoder::new();
    if before
        .decode(1, kind, Some("node".into()), Some("invoke"), Some(1), body)
        .is_ok()
        && let Ok(RecordKind::Started { input: Some(input), .. }) =
            before.decode(2, "started", Some("node".into()), Some("invoke"), Some(1), by_reference)
    {
        let _ = input.value();
    }
}
