//! A run's W3C trace context: the `traceparent` a run was started under (or
//! a root of its own), its stored form, and the span ids of the run, of each
//! call attempt and of each outbound request, derived from their names, so
//! every host computes the same id for the same span with nothing stored but
//! the run's context. It may not export spans (the host's telemetry does).

use crate::saga::Action;

/// Where a run's spans belong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceContext {
    /// The trace (never all zeros).
    pub trace_id: [u8; 16],
    /// The caller's span the run was started under; none when the run is
    /// its trace's root.
    pub parent: Option<[u8; 8]>,
    /// Whether the caller records this trace (its `sampled` flag; a root is
    /// sampled). An unsampled run still passes its context on.
    pub sampled: bool,
}

impl TraceContext {
    /// Reads a `traceparent` header as W3C Trace Context (level 1) defines
    /// it: `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`, lowercase,
    /// ids not all zeros; a later version is read by the same rule when it
    /// is at least as long. `None` for anything else: the spec says a bad
    /// header starts a new trace rather than failing the request.
    pub fn from_traceparent(header: &str) -> Option<TraceContext> {
        let header = header.trim();
        let bytes = header.as_bytes();
        // ASCII first: the fields are sliced by byte (an environment
        // variable, unlike a header, may hold any UTF-8).
        if bytes.len() < 55 || !header.is_ascii() {
            return None;
        }
        let version = hex_bytes::<1>(&header[0..2])?[0];
        let exact = version == 0;
        if version == 0xff
            || (exact && bytes.len() != 55)
            || (!exact && bytes.len() > 55 && bytes[55] != b'-')
        {
            return None;
        }
        if bytes[2] != b'-' || bytes[35] != b'-' || bytes[52] != b'-' {
            return None;
        }
        let trace_id = hex_bytes::<16>(&header[3..35])?;
        let parent = hex_bytes::<8>(&header[36..52])?;
        let flags = hex_bytes::<1>(&header[53..55])?[0];
        if trace_id == [0; 16] || parent == [0; 8] {
            return None;
        }
        Some(TraceContext {
            trace_id,
            parent: Some(parent),
            sampled: flags & 1 == 1,
        })
    }

    /// A root context for the run `run_id` (a trace of its own, sampled; the
    /// trace id is derived from the run's id, which is unique).
    pub fn root(run_id: &str) -> TraceContext {
        let high = mix(&[b"trace", run_id.as_bytes()]);
        let low = mix(&[b"trace-low", run_id.as_bytes()]);
        let mut trace_id = [0; 16];
        trace_id[..8].copy_from_slice(&high.to_be_bytes());
        trace_id[8..].copy_from_slice(&low.to_be_bytes());
        TraceContext {
            trace_id,
            parent: None,
            sampled: true,
        }
    }

    /// How the journal keeps it: a `traceparent` of the caller's span, whose
    /// parent id is all zeros for a root.
    pub fn to_stored(&self) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&self.parent.unwrap_or([0; 8])),
            u8::from(self.sampled)
        )
    }

    /// Reads [`TraceContext::to_stored`] back (`None` for a damaged value:
    /// the run then has no spans, which never stops it).
    pub fn from_stored(stored: &str) -> Option<TraceContext> {
        if stored.len() != 55 || !stored.starts_with("00-") {
            return None;
        }
        let trace_id = hex_bytes::<16>(stored.get(3..35)?)?;
        let parent = hex_bytes::<8>(stored.get(36..52)?)?;
        let flags = hex_bytes::<1>(stored.get(53..55)?)?[0];
        (trace_id != [0; 16]).then_some(TraceContext {
            trace_id,
            parent: (parent != [0; 8]).then_some(parent),
            sampled: flags & 1 == 1,
        })
    }

    /// The span of the run itself.
    pub fn run_span(&self, run_id: &str) -> [u8; 8] {
        span_id(&[&self.trace_id, run_id.as_bytes()])
    }

    /// The span of one call attempt.
    pub fn call_span(&self, run_id: &str, node: &str, action: Action, attempt: u32) -> [u8; 8] {
        self.attempt_part(run_id, node, action, attempt, None)
    }

    /// The span of the `ordinal`-th (from 1) outbound request of a call attempt.
    pub fn request_span(
        &self,
        run_id: &str,
        node: &str,
        action: Action,
        attempt: u32,
        ordinal: u32,
    ) -> [u8; 8] {
        self.attempt_part(run_id, node, action, attempt, Some(ordinal))
    }

    /// A call attempt's span, or (with an ordinal) one of its requests'.
    fn attempt_part(
        &self,
        run_id: &str,
        node: &str,
        action: Action,
        attempt: u32,
        ordinal: Option<u32>,
    ) -> [u8; 8] {
        let attempt = attempt.to_be_bytes();
        let ordinal = ordinal.map(u32::to_be_bytes);
        let mut fields: Vec<&[u8]> = vec![
            &self.trace_id,
            run_id.as_bytes(),
            node.as_bytes(),
            action.as_str().as_bytes(),
            &attempt,
        ];
        fields.extend(ordinal.as_ref().map(|o| &o[..]));
        span_id(&fields)
    }

    /// The `traceparent` header that makes `span` of this trace the parent
    /// of what the receiver does.
    pub fn traceparent_of(&self, span: [u8; 8]) -> String {
        format!(
            "00-{}-{}-{:02x}",
            hex(&self.trace_id),
            hex(&span),
            u8::from(self.sampled)
        )
    }
}

/// One call attempt in its run's trace: what its outbound requests need to
/// name their spans and tell the receiver its parent.
#[derive(Debug, Clone)]
pub struct CallSpan {
    /// The run's trace.
    pub context: TraceContext,
    /// The run.
    pub run_id: std::sync::Arc<str>,
    /// The call.
    pub node: std::sync::Arc<str>,
    /// Invoke or compensate.
    pub action: Action,
    /// From 1.
    pub attempt: u32,
}

impl CallSpan {
    /// The `traceparent` the `ordinal`-th (from 1) request of the attempt
    /// carries: its own span, a child of the attempt's.
    pub fn request_traceparent(&self, ordinal: u32) -> String {
        let span =
            self.context
                .request_span(&self.run_id, &self.node, self.action, self.attempt, ordinal);
        self.context.traceparent_of(span)
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// `N` bytes from exactly `2N` lowercase hex digits.
fn hex_bytes<const N: usize>(text: &str) -> Option<[u8; N]> {
    let digits = text.as_bytes();
    if digits.len() != 2 * N {
        return None;
    }
    let value = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0; N];
    for (i, pair) in digits.chunks(2).enumerate() {
        out[i] = value(pair[0])? << 4 | value(pair[1])?;
    }
    Some(out)
}

/// A span id from the fields that name the span (never all zeros).
fn span_id(fields: &[&[u8]]) -> [u8; 8] {
    match mix(fields) {
        0 => 1u64.to_be_bytes(),
        id => id.to_be_bytes(),
    }
}

/// FNV-1a over the fields (each closed by a byte no UTF-8 text holds, so
/// `("ab", "c")` and `("a", "bc")` differ), then SplitMix64's finaliser to
/// spread similar names apart. Written out rather than `std`'s hasher,
/// whose algorithm may change between Rust releases: hosts built by
/// different compilers must agree on a resumed run's ids.
fn mix(fields: &[&[u8]]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for field in fields {
        for byte in field.iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    hash = (hash ^ (hash >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    hash = (hash ^ (hash >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    hash ^ (hash >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_header_is_read_and_a_bad_one_is_not() {
        let context = TraceContext::from_traceparent(HEADER).unwrap();
        assert_eq!(hex(&context.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            context.parent.map(|p| hex(&p)).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert!(context.sampled);
        let unsampled = TraceContext::from_traceparent(&HEADER.replace("-01", "-00")).unwrap();
        assert!(!unsampled.sampled);
        // A later version may carry more fields after a dash.
        assert!(TraceContext::from_traceparent(&format!("01{}-extra", &HEADER[2..])).is_some());
        for bad in [
            "",
            "garbage",
            &HEADER.to_uppercase(),
            &format!("ff{}", &HEADER[2..]),
            &format!("{HEADER}-extra"),
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-600f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
            "00-4bf92f3577b34da6a3ce929d0e0e47é6-00f067aa0ba902b7-01",
            &format!("0é{}", "a".repeat(53)),
        ] {
            assert_eq!(TraceContext::from_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_stored_form_reads_back_for_a_child_and_a_root() {
        let child = TraceContext::from_traceparent(HEADER).unwrap();
        assert_eq!(child.to_stored(), HEADER);
        assert_eq!(TraceContext::from_stored(&child.to_stored()), Some(child));
        let root = TraceContext::root("0193a000-0000-7000-8000-000000000001");
        assert_eq!(root.parent, None);
        assert_eq!(TraceContext::from_stored(&root.to_stored()), Some(root));
        assert_eq!(TraceContext::from_stored("not a context"), None);
    }

    #[test]
    fn span_ids_are_stable_and_distinct_per_call_attempt_and_request() {
        let context = TraceContext::from_traceparent(HEADER).unwrap();
        let run = "run-1";
        let first = context.call_span(run, "charge", Action::Invoke, 1);
        assert_eq!(first, context.call_span(run, "charge", Action::Invoke, 1));
        let mut ids = std::collections::HashSet::new();
        ids.insert(context.run_span(run));
        ids.insert(first);
        ids.insert(context.call_span(run, "charge", Action::Invoke, 2));
        ids.insert(context.call_span(run, "charge", Action::Compensate, 1));
        ids.insert(context.call_span(run, "refund", Action::Invoke, 1));
        ids.insert(context.call_span("run-2", "charge", Action::Invoke, 1));
        ids.insert(context.request_span(run, "charge", Action::Invoke, 1, 1));
        ids.insert(context.request_span(run, "charge", Action::Invoke, 1, 2));
        assert_eq!(ids.len(), 8);
        assert_ne!(
            TraceContext::root("a").trace_id,
            TraceContext::root("b").trace_id
        );
        assert_eq!(
            context.traceparent_of(first),
            format!("00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01", hex(&first))
        );
    }
}
