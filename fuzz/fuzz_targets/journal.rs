//! The journal's record decoding: what a resume reads back from a row
//! (its kind, then its JSON body). A damaged row is an error, never a panic,
//! and a decoded record's JSON reads back.
//! Input: one byte choosing the kind, then the body.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wasaga_core::journal::RecordKind;

const KINDS: [&str; 6] = ["started", "finished", "requests", "event", "compensating", "other"];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let Ok(body) = std::str::from_utf8(body) else {
        return;
    };
    let kind = KINDS[selector as usize % KINDS.len()];
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
