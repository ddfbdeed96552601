//! Property tests at scale over what producers control: record values (the
//! decoder, [`decode`]) and record headers (the byte-keyed reader and writer,
//! hop state, relay headers, the replay seal, dead letters, trace context:
//! [`headers`]).
//!
//! The coverage-guided targets for `cargo fuzz` (`fuzz/`) need a nightly
//! toolchain and an instrumented build of the whole dependency tree,
//! librdkafka included; these run on stable, in `make test`. Each property
//! runs a modest number of cases by default; `PROPTEST_CASES` raises it for a
//! run at scale:
//! `PROPTEST_CASES=200000 cargo test --locked --lib fuzz`.
//! Failure files are not written: whatever a run finds is kept as a plain
//! regression test next to the code it fixes.

mod decode;
mod events;
mod headers;

use proptest::prelude::*;
use proptest::test_runner::Config;

/// `PROPTEST_CASES` when set, else `default`; no failure persistence files.
pub fn config(default: u32) -> Config {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(default);
    Config { cases, failure_persistence: None, ..Config::default() }
}

/// Text a producer might send: any unicode, ASCII with control characters,
/// the characters that break headers and logs, and now and then a huge string.
pub fn nasty_text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        4 => "[\\x00-\\x7f]{0,40}",
        2 => prop::sample::select(vec![
            "", " ", "\r\n", "\n", "\r", "\0", "\t", "\u{7f}", "\u{1b}[31m", "é", "caf\u{e9}", "\u{202e}",
            "\u{feff}", "\u{fffd}", "😀", "\u{85}", "\u{2028}",
        ])
        .prop_map(String::from),
        1 => (0usize..70_000, any::<char>()).prop_map(|(n, c)| c.to_string().repeat(n)),
    ]
}

/// Bytes a non-Java client might put in a header key or value: any, Latin-1,
/// NUL, empty, and now and then a huge run.
pub fn nasty_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..40),
        2 => "[ -~]{0,30}".prop_map(String::into_bytes),
        2 => prop::collection::vec(0x80u8..=0xff, 1..10),
        1 => prop::sample::select(vec![&b""[..], b"\0", b"\xff", b"\xc3\x28", b"\r\n", b"\xef\xbb\xbf"])
            .prop_map(<[u8]>::to_vec),
        1 => (0usize..20_000, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ]
}
