//! Any bytes as a record value: the decoder never panics; what it accepts
//! keeps SPEC's rules, what it refuses says why on one line.
#![no_main]

use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;

static ENDPOINTS: LazyLock<hookrelay::event::Endpoints> = LazyLock::new(|| {
    let config = hookrelay::config::Config::from_toml(
        "[delivery]\nmax_payload_bytes = 65536\n[endpoints.billing]\nurl = \"https://billing.example.com/hooks\"\n",
    )
    .unwrap();
    hookrelay::event::Endpoints::new(&config)
});

fuzz_target!(|data: &[u8]| {
    match ENDPOINTS.decode(data, || "t-0-7".to_string()) {
        Ok(e) => {
            assert!((1..=256).contains(&e.id.len()) && e.id.bytes().all(|b| (0x21..=0x7e).contains(&b)));
            assert!(hookrelay::endpoint::guard::parse_target_url(e.url.as_str()).is_ok());
            assert!(e.body.len() <= 65536);
            for (_, value) in &e.headers {
                assert!(value.as_bytes().iter().all(|b| *b == b'\t' || (*b >= 0x20 && *b != 0x7f)));
            }
        }
        Err(e) => {
            let text = e.to_string();
            assert!(!text.trim().is_empty() && !text.contains(['\n', '\r']), "{text:?}");
        }
    }
    let _ = hookrelay::event::event_id(Some(data));
});
