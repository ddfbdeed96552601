//! A record's headers as bytes: read and written through librdkafka directly, because rdkafka's accessors
//! assume UTF-8 keys.
//!
//! Kafka header keys are strings to the Java client, but the protocol carries
//! bytes and other clients write any. rdkafka's `Headers::get`, `iter` and
//! `try_get` unwrap the key as UTF-8 and panic on anything else, and
//! `OwnedHeaders::insert` only takes `&str` keys. A record with such a header
//! is still a record: the relay keeps its headers byte for byte on tier and
//! dead records and ignores the odd ones for its own purposes. This is the one
//! module with `unsafe`: two small calls into librdkafka, each with its reason.

use std::ffi::CStr;

use rdkafka::bindings::{rd_kafka_header_add, rd_kafka_header_get_all, rd_kafka_headers_t};
use rdkafka::message::{BorrowedHeaders, Headers, OwnedHeaders};
use rdkafka::types::RDKafkaRespErr;

/// A record's headers in order, keys and values as bytes (`None` = a null value).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordHeaders(Vec<(Vec<u8>, Option<Vec<u8>>)>);

impl RecordHeaders {
    /// Copies every header of `headers`, whatever its key's bytes.
    pub fn read(headers: &BorrowedHeaders) -> RecordHeaders {
        let mut pairs = Vec::with_capacity(headers.count());
        each(headers, |key, value| pairs.push((key.to_vec(), value.map(<[u8]>::to_vec))));
        RecordHeaders(pairs)
    }

    /// Headers from (key, value) pairs, for building records and in tests.
    pub fn from_pairs<K: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: impl IntoIterator<Item = (K, V)>) -> RecordHeaders {
        RecordHeaders(pairs.into_iter().map(|(k, v)| (k.as_ref().to_vec(), Some(v.as_ref().to_vec()))).collect())
    }

    /// The last value of header `name` (a repeated header's last value wins), if it is UTF-8.
    pub fn last(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k == name.as_bytes())
            .and_then(|(_, v)| std::str::from_utf8(v.as_deref().unwrap_or_default()).ok())
    }

    /// Every header in order.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
        self.0.iter().map(|(k, v)| (k.as_slice(), v.as_deref()))
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Splits the headers in two, in order: those whose key `keep` accepts, and the rest.
    pub fn split(&self, keep: impl Fn(&[u8]) -> bool) -> (RecordHeaders, RecordHeaders) {
        let (kept, rest) = self.0.iter().cloned().partition(|(k, _)| keep(k));
        (RecordHeaders(kept), RecordHeaders(rest))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Bytes of `headers`' names and values, whatever their keys' bytes (rdkafka's
/// `iter` panics on a name that is not UTF-8), without copying them.
pub fn byte_size(headers: &BorrowedHeaders) -> usize {
    let mut bytes = 0;
    each(headers, |key, value| bytes += key.len() + value.map_or(0, <[u8]>::len));
    bytes
}

/// Calls `f` with each header's name and value (`None` = a null value), in order.
fn each(headers: &BorrowedHeaders, mut f: impl FnMut(&[u8], Option<&[u8]>)) {
    // rdkafka's own accessors make this pointer the same way: a
    // `BorrowedHeaders` reference is the native list's address.
    let native = headers as *const BorrowedHeaders as *const rd_kafka_headers_t;
    for idx in 0..headers.count() {
        let mut name = std::ptr::null();
        let mut value = std::ptr::null();
        let mut size = 0usize;
        // SAFETY: `native` points to the live header list `headers` borrows
        // (it outlives this function); librdkafka writes a pointer to the
        // NUL-terminated name it stores, and to the value and its size (null
        // for a null value), both owned by the list; `idx` < count, and an
        // error (index out of range) leaves them untouched.
        let err = unsafe { rd_kafka_header_get_all(native, idx, &mut name, &mut value, &mut size) };
        if err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR || name.is_null() {
            break;
        }
        // SAFETY: as above, `name` is NUL-terminated and `value` holds `size`
        // bytes while the list lives, which outlasts this call of `f`.
        let (key, value) = unsafe {
            let key = CStr::from_ptr(name).to_bytes();
            let value = (!value.is_null()).then(|| std::slice::from_raw_parts(value.cast::<u8>(), size));
            (key, value)
        };
        f(key, value);
    }
}

/// Appends a header with any key bytes to a list the caller built.
///
/// A key with a NUL byte is cut there (librdkafka's names are C strings).
pub fn add(headers: OwnedHeaders, key: &[u8], value: Option<&[u8]>) -> OwnedHeaders {
    let native = headers.as_borrowed() as *const BorrowedHeaders as *mut rd_kafka_headers_t;
    let (value_ptr, value_len) = match value {
        Some(v) => (v.as_ptr().cast(), v.len() as isize),
        None => (std::ptr::null(), 0),
    };
    // SAFETY: `native` is the list `headers` owns, alive and not shared (we
    // hold it by value); rdkafka's own `insert` makes the same call on it.
    // librdkafka copies `key_len` bytes of the name and `value_len` bytes of
    // the value; neither pointer is kept.
    let err = unsafe { rd_kafka_header_add(native, key.as_ptr().cast(), key.len() as isize, value_ptr, value_len) };
    // An `OwnedHeaders` built by the relay is always writable, as rdkafka asserts in `insert`.
    debug_assert_eq!(err, RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR);
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn any_key_bytes_survive_a_write_and_a_read() {
        let mut written = OwnedHeaders::new();
        written = add(written, b"plain", Some(b"1"));
        written = add(written, b"\xff\xfe-latin1-\xe9", Some(b"\x00\x01binary"));
        written = add(written, b"null-value", None);
        written = add(written, b"plain", Some(b"2"));
        let read = RecordHeaders::read(written.as_borrowed());
        let pairs: Vec<_> = read.iter().collect();
        assert_eq!(
            pairs,
            vec![
                (&b"plain"[..], Some(&b"1"[..])),
                (&b"\xff\xfe-latin1-\xe9"[..], Some(&b"\x00\x01binary"[..])),
                (&b"null-value"[..], None),
                (&b"plain"[..], Some(&b"2"[..])),
            ]
        );
        assert_eq!(read.last("plain"), Some("2"), "the last value wins");
        assert_eq!(read.last("null-value"), Some(""));
        assert_eq!(read.last("missing"), None);
    }

    /// Kept from fuzzing (`fuzz_headers_any_bytes_read_back_as_written`): the one
    /// way a key does not come back byte for byte. librdkafka hands header names
    /// out as C strings, so a key ends at its first NUL; values are sized and
    /// keep theirs. A Java producer cannot write such a key from a string without one.
    #[test]
    fn a_nul_byte_ends_a_header_key() {
        let written = add(OwnedHeaders::new(), b"nul\x00key", Some(b"v\x00v"));
        let written = add(written, b"\x00", None);
        let read = RecordHeaders::read(written.as_borrowed());
        let pairs: Vec<_> = read.iter().collect();
        assert_eq!(pairs, vec![(&b"nul"[..], Some(&b"v\x00v"[..])), (&b""[..], None)]);
    }

    #[test]
    fn a_non_utf8_value_reads_as_absent() {
        let headers = RecordHeaders::from_pairs([("k", &b"\xff"[..])]);
        assert_eq!(headers.last("k"), None);
        assert_eq!(headers.len(), 1);
    }
}
