//! Any header list: read back as written (a key ends at its first NUL), hop
//! state and trace context read without panicking, relay headers written over
//! it keep the foreign ones first and are overwritten, never appended.
#![no_main]

use hookrelay::event::headers::{self, RecordHeaders};
use hookrelay::event::hop::{Coordinates, Destination, Hop, RelayHeaders};
use hookrelay::event::trust::trusted_on_event_topic;
use hookrelay::route::outcome::DeadReason;
use hookrelay::event::trace_context::TraceContext;
use libfuzzer_sys::fuzz_target;
use rdkafka::message::OwnedHeaders;

type Pairs = Vec<(Vec<u8>, Option<Vec<u8>>)>;

fn raw(headers: &RecordHeaders) -> Pairs {
    headers.iter().map(|(k, v)| (k.to_vec(), v.map(<[u8]>::to_vec))).collect()
}

fuzz_target!(|input: (Pairs, Vec<u8>, i64, bool)| {
    let (pairs, value, due_ms, dead) = input;
    let written = pairs.iter().fold(OwnedHeaders::new(), |h, (k, v)| headers::add(h, k, v.as_deref()));
    let read = RecordHeaders::read(written.as_borrowed());
    let cut: Pairs =
        pairs.iter().map(|(k, v)| (k.split(|b| *b == 0).next().unwrap_or_default().to_vec(), v.clone())).collect();
    assert_eq!(raw(&read), cut);

    let here = Coordinates { topic: "events".into(), partition: 0, offset: 1 };
    let (trusted, _) = trusted_on_event_topic(&read, &value, None);
    assert!(trusted.iter().all(|(k, _)| !k.starts_with(b"hookrelay-")));
    let _ = Hop::read(&trusted, here.clone(), Some(1)).origin.default_id();
    if let Some(context) = TraceContext::of(&read) {
        assert_eq!(context.trace_id().len(), 32);
    }

    // As if the record came from a tier: its relay headers are believed, then written again.
    let hop = Hop::read(&read, here.clone(), None);
    let destination =
        if dead { Destination::Dead { reason: DeadReason::InvalidEvent } } else { Destination::Tier { due_ms } };
    let write = |hop: &Hop, original: &RecordHeaders| {
        let relay = RelayHeaders { hop, destination, last_status: Some(503), last_error: Some("e"), endpoint: "x" };
        RecordHeaders::read(relay.write(original).as_borrowed())
    };
    let out = write(&hop, &read);
    let foreign: Pairs = raw(&read).into_iter().filter(|(k, _)| !k.starts_with(b"hookrelay-")).collect();
    assert_eq!(raw(&out)[..foreign.len()], foreign[..]);
    let again = write(&Hop::read(&out, here, None), &out);
    assert_eq!(raw(&again), raw(&out), "overwritten, never appended");
});
