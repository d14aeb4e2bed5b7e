//! A step's input stored once: in a run's usual flow a call's input is the
//! previous call's output, committed in the same transaction (the finished
//! record is held back until the next start). The writer stores such an
//! input as a reference to that output's record, and a run's records are
//! decoded in order so that the reference is resolved. It owns that body
//! format only; which backend writes references is the backend's choice.

use std::collections::HashMap;

use super::RecordKind;
use crate::json::Json;
use crate::saga::CallRecord;

/// Decodes one run's records, read in order of their sequence numbers.
#[derive(Default)]
pub struct RunDecoder {
    /// The outputs of the finished calls read so far, by record number.
    outputs: HashMap<u64, Json>,
}

impl RunDecoder {
    /// A decoder for a run's first record.
    pub fn new() -> RunDecoder {
        RunDecoder::default()
    }

    /// Record `seq` from its columns (see [`RecordKind::decode`]); a
    /// started record's input stored as a reference to an earlier record
    /// is that record's output.
    pub fn decode(
        &mut self,
        seq: u64,
        kind: &str,
        node: Option<String>,
        action: Option<&str>,
        attempt: Option<u32>,
        body: &str,
    ) -> Result<RecordKind, String> {
        let outputs = &self.outputs;
        let decoded = RecordKind::decode_in_run(kind, node, action, attempt, body, |of| {
            (of < seq).then(|| outputs.get(&of).cloned()).flatten()
        })?;
        // The decoded output is the text the step wrote (not rebuilt through
        // a `Value`), so an input read back by reference is what the step
        // was given.
        if let RecordKind::Finished {
            record: CallRecord::Done { output, .. },
            ..
        } = &decoded
        {
            self.outputs.insert(seq, output.clone());
        }
        Ok(decoded)
    }
}

/// Goes through a batch of one run's records, in order, and finds the
/// started records whose input is, text for text, the output of the
/// batch's latest finished call.
#[derive(Default)]
pub struct StartedByReference<'a> {
    latest_output: Option<(u64, &'a Json)>,
}

impl<'a> StartedByReference<'a> {
    /// At the batch's first record.
    pub fn new() -> StartedByReference<'a> {
        StartedByReference::default()
    }

    /// The body to store for record `seq` instead of its whole one: for a
    /// started record whose input is the latest finished call's output,
    /// the step and the number of that record. Call it for every record of
    /// the batch, in order.
    pub fn body(&mut self, seq: u64, kind: &'a RecordKind) -> Option<String> {
        match kind {
            RecordKind::Finished {
                record: CallRecord::Done { output, .. },
                ..
            } => {
                self.latest_output = Some((seq, output));
                None
            }
            RecordKind::Started {
                step,
                input: Some(input),
                ..
            } => {
                let (of, output) = self.latest_output?;
                // A `null` input is stored whole: it reads back as no
                // input, as it always did.
                let same =
                    (output.same(input) || output.text() == input.text()) && input.text() != "null";
                same.then(|| {
                    serde_json::to_string(&ByReference { step, input_of: of })
                        .expect("a string and a number serialize")
                })
            }
            _ => None,
        }
    }
}

/// The body of a started record whose input is another record's output.
#[derive(serde::Serialize)]
struct ByReference<'a> {
    step: &'a str,
    input_of: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::saga::Action;

    fn finished(output: &Json) -> RecordKind {
        RecordKind::Finished {
            node: "a".into(),
            action: Action::Invoke,
            attempt: 1,
            record: CallRecord::Done {
                output: output.clone(),
                compensation: None,
            },
        }
    }

    fn started(input: &Json) -> RecordKind {
        RecordKind::Started {
            node: "b".into(),
            step: "b-step".into(),
            action: Action::Invoke,
            attempt: 1,
            input: Some(input.clone()),
        }
    }

    #[test]
    fn an_input_that_is_the_previous_output_is_stored_once_and_read_back_whole() {
        // Keys out of order and an integer past 64 bits: read back by
        // reference, the input is still this very text.
        let output =
            Json::parse(r#"{"name":"x","items":[1,2,3],"n":18446744073709551616}"#.to_string())
                .unwrap();
        // Equal text, another document: still the same input.
        let input = Json::parse(output.text().to_string()).unwrap();
        let (first, second) = (finished(&output), started(&input));
        let mut writer = StartedByReference::new();
        assert_eq!(writer.body(4, &first), None);
        let body = writer.body(5, &second).expect("stored as a reference");
        assert_eq!(body, r#"{"step":"b-step","input_of":4}"#);

        let mut decoder = RunDecoder::new();
        let finished_body = serde_json::to_string(&CallRecord::Done {
            output: output.clone(),
            compensation: None,
        })
        .unwrap();
        decoder
            .decode(
                4,
                "finished",
                Some("a".into()),
                Some("invoke"),
                Some(1),
                &finished_body,
            )
            .unwrap();
        let read = decoder
            .decode(
                5,
                "started",
                Some("b".into()),
                Some("invoke"),
                Some(1),
                &body,
            )
            .unwrap();
        let RecordKind::Started {
            node,
            step,
            input: Some(read),
            ..
        } = read
        else {
            panic!("not a started record with an input: {read:?}")
        };
        assert_eq!((node.as_str(), step.as_str()), ("b", "b-step"));
        assert_eq!(read.text(), input.text());
    }

    #[test]
    fn a_finished_calls_output_reads_back_as_the_text_the_step_wrote() {
        let text = r#"{"zeta":1,"alpha":[true],"big":18446744073709551616}"#;
        let data = r#"{"y":2,"x":1}"#;
        let output = Json::parse(text.to_string()).unwrap();
        let records = [
            CallRecord::Done {
                output: output.clone(),
                compensation: Some(Json::parse(data.to_string()).unwrap()),
            },
            CallRecord::Waiting {
                output: output.clone(),
                until: Some(42),
            },
        ];
        for record in records {
            let body = serde_json::to_string(&record).unwrap();
            let read = RecordKind::decode("finished", None, None, None, &body).unwrap();
            let RecordKind::Finished { record: read, .. } = read else {
                panic!("{read:?}")
            };
            match read {
                CallRecord::Done {
                    output,
                    compensation: Some(compensation),
                } => {
                    assert_eq!(output.text(), text);
                    assert_eq!(compensation.text(), data);
                }
                CallRecord::Waiting {
                    output,
                    until: Some(42),
                } => assert_eq!(output.text(), text),
                other => panic!("{other:?}"),
            }
        }
        // No compensation data, and the outcomes that carry no step output.
        for record in [
            CallRecord::Done {
                output: Json::null(),
                compensation: None,
            },
            CallRecord::Skipped,
            CallRecord::Compensated,
        ] {
            let body = serde_json::to_string(&record).unwrap();
            let RecordKind::Finished { record: read, .. } =
                RecordKind::decode("finished", None, None, None, &body).unwrap()
            else {
                panic!()
            };
            assert_eq!(read, record);
        }
        // A done record without its output is damaged, not a panic.
        let error =
            RecordKind::decode("finished", None, None, None, r#"{"outcome":"done"}"#).unwrap_err();
        assert!(error.contains("damaged 'finished' record"), "{error}");
    }

    #[test]
    fn another_input_is_stored_whole() {
        let output = Json::parse(r#"{"a":1}"#.to_string()).unwrap();
        let other = Json::parse(r#"{"a": 1}"#.to_string()).unwrap();
        let (first, second) = (finished(&output), started(&other));
        let mut writer = StartedByReference::new();
        writer.body(1, &first);
        // Equal values, other text: kept as it was given.
        assert_eq!(writer.body(2, &second), None);
        // No finished call before it in the batch.
        assert_eq!(StartedByReference::new().body(3, &started(&output)), None);
        // A `null` input stays whole (it reads back as no input).
        let null = Json::null();
        let (done, start) = (finished(&null), started(&null));
        let mut writer = StartedByReference::new();
        writer.body(4, &done);
        assert_eq!(writer.body(5, &start), None);
    }

    #[test]
    fn a_reference_to_no_earlier_output_is_a_damaged_record() {
        let body = r#"{"step":"b","input_of":7}"#;
        for (seq, decoder) in [(8, RunDecoder::new()), (3, RunDecoder::new())] {
            let mut decoder = decoder;
            let error = decoder
                .decode(
                    seq,
                    "started",
                    Some("b".into()),
                    Some("invoke"),
                    Some(1),
                    body,
                )
                .unwrap_err();
            assert!(error.contains("output of record 7"), "{error}");
        }
        let error = RecordKind::decode("started", None, None, None, body).unwrap_err();
        assert!(error.contains("damaged 'started' record"), "{error}");
    }
}
