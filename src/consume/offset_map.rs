//! The decided offsets above a partition's committed one, as ASCII text for the commit's metadata.
//!
//! Only the contiguous prefix of decided offsets can be the committed offset:
//! one slow record at a partition's head pins it while thousands behind it are
//! decided. The commit's metadata carries those thousands, and a consumer that
//! takes the partition over (after a rebalance or a crash) skips them.
//!
//! # Format
//! `hr1` (the version), then `r` (run lengths) or `b` (a bitset), then
//! base64url without padding of: the committed offset as a LEB128 varint,
//! then
//! - `r`: varints of alternating run lengths over the offsets after the
//!   committed one, starting with an undecided run (possibly 0 long): undecided,
//!   decided, undecided, ...;
//! - `b`: one bit per offset after the committed one, least significant bit
//!   first; a set bit is decided.
//!
//! The committed offset itself is never decided (it is the first undecided
//! one). The smaller of the two encodings is written; a map longer than the
//! cap is not written at all (the commit degrades to the contiguous offset).
//! Metadata that is not ours, of another version, garbled, or written for a
//! different committed offset decodes to nothing: it is ignored.

use std::ops::Range;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

/// The version and the encodings' prefixes.
const RUNS: &str = "hr1r";
const BITS: &str = "hr1b";

/// The largest map written, in bytes: under the broker's `offset.metadata.max.bytes`
/// default (4096) with room to spare; a broker set lower answers
/// OFFSET_METADATA_TOO_LARGE, and the commit is retried without the map.
pub const MAX_METADATA: usize = 4000;

/// Decided offsets above a committed one: sorted, disjoint, non-adjacent ranges, all above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OffsetMap {
    committed: i64,
    decided: Vec<Range<i64>>,
}

impl OffsetMap {
    /// The map of a partition whose first undecided offset is `committed`, whose
    /// other undecided ones are `pending` (increasing), and one past whose last
    /// read record is `next`. Every offset in between that is not pending is decided
    /// (or is no record at all: compaction, transaction markers).
    pub fn between(committed: i64, pending: impl IntoIterator<Item = i64>, next: i64) -> OffsetMap {
        let mut decided = Vec::new();
        let mut from = committed + 1;
        for offset in pending.into_iter().filter(|&o| o > committed) {
            if offset > from {
                decided.push(from..offset);
            }
            from = from.max(offset + 1);
        }
        if next > from {
            decided.push(from..next);
        }
        OffsetMap { committed, decided }
    }

    /// Whether nothing above the committed offset is decided.
    pub fn is_empty(&self) -> bool {
        self.decided.is_empty()
    }

    /// The committed offset this map is relative to.
    pub fn committed(&self) -> i64 {
        self.committed
    }

    /// One past the highest decided offset; the committed offset when none is.
    pub fn end(&self) -> i64 {
        self.decided.last().map_or(self.committed, |r| r.end)
    }

    /// Whether `offset` is decided according to the map.
    pub fn contains(&self, offset: i64) -> bool {
        let i = self.decided.partition_point(|r| r.end <= offset);
        self.decided.get(i).is_some_and(|r| r.contains(&offset))
    }

    /// Decided offsets in the map.
    pub fn len(&self) -> u64 {
        self.decided.iter().map(|r| (r.end - r.start) as u64).sum()
    }

    /// The metadata text: empty when nothing is decided, `None` when the map would be longer than `cap`.
    pub fn encode(&self, cap: usize) -> Option<String> {
        if self.is_empty() {
            return Some(String::new());
        }
        let mut head = Vec::new();
        varint(&mut head, self.committed as u64);
        let runs = self.runs(&head);
        // The bitset's size is known before it is built: skip it when it cannot win.
        let span = (self.end() - self.committed - 1) as u64;
        let bits_len = head.len() as u64 + span.div_ceil(8);
        let text = if bits_len < runs.len() as u64 { encoded(BITS, &self.bits(head)) } else { encoded(RUNS, &runs) };
        (text.len() <= cap).then_some(text)
    }

    fn runs(&self, head: &[u8]) -> Vec<u8> {
        let mut out = head.to_vec();
        let mut at = self.committed + 1;
        for range in &self.decided {
            varint(&mut out, (range.start - at) as u64);
            varint(&mut out, (range.end - range.start) as u64);
            at = range.end;
        }
        out
    }

    fn bits(&self, mut out: Vec<u8>) -> Vec<u8> {
        let base = out.len();
        let span = (self.end() - self.committed - 1) as usize;
        out.resize(base + span.div_ceil(8), 0);
        for range in &self.decided {
            for offset in range.clone() {
                let bit = (offset - self.committed - 1) as usize;
                out[base + bit / 8] |= 1 << (bit % 8);
            }
        }
        out
    }

    /// The map in `metadata`, if it is one of ours written for the offset `committed`.
    pub fn decode(metadata: &str, committed: i64) -> Option<OffsetMap> {
        let (bitset, body) = match metadata.get(..RUNS.len())? {
            RUNS => (false, &metadata[RUNS.len()..]),
            BITS => (true, &metadata[BITS.len()..]),
            _ => return None,
        };
        let bytes = URL_SAFE_NO_PAD.decode(body).ok()?;
        let mut input = bytes.as_slice();
        let written_for = i64::try_from(read_varint(&mut input)?).ok()?;
        if written_for != committed {
            return None;
        }
        let decided = if bitset { from_bits(committed, input)? } else { from_runs(committed, input)? };
        Some(OffsetMap { committed, decided })
    }
}

fn encoded(prefix: &str, bytes: &[u8]) -> String {
    let mut text = String::with_capacity(prefix.len() + bytes.len().div_ceil(3) * 4);
    text.push_str(prefix);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    text
}

fn from_runs(committed: i64, mut input: &[u8]) -> Option<Vec<Range<i64>>> {
    let mut decided = Vec::new();
    let mut at = committed.checked_add(1)?;
    while !input.is_empty() {
        let start = at.checked_add(i64::try_from(read_varint(&mut input)?).ok()?)?;
        let end = start.checked_add(i64::try_from(read_varint(&mut input)?).ok()?)?;
        // Runs are never empty, and two decided runs are never adjacent, in what we write.
        if end == start || (start == at && !decided.is_empty()) {
            return None;
        }
        decided.push(start..end);
        at = end;
    }
    Some(decided)
}

fn from_bits(committed: i64, input: &[u8]) -> Option<Vec<Range<i64>>> {
    let mut decided: Vec<Range<i64>> = Vec::new();
    for (i, byte) in input.iter().enumerate() {
        for bit in 0..8 {
            if byte & (1 << bit) == 0 {
                continue;
            }
            let offset = committed.checked_add(1 + (i * 8 + bit) as i64)?;
            match decided.last_mut() {
                Some(last) if last.end == offset => last.end += 1,
                _ => decided.push(offset..offset + 1),
            }
        }
    }
    Some(decided)
}

fn varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn read_varint(input: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = input.split_first()?;
        *input = rest;
        value |= u64::from(byte & 0x7f).checked_shl(shift)?;
        if byte & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn map(committed: i64, decided: &[i64]) -> OffsetMap {
        let next = decided.iter().max().map_or(committed + 1, |m| m + 1);
        let decided: std::collections::HashSet<i64> = decided.iter().copied().collect();
        let pending: Vec<i64> = (committed..next).filter(|o| !decided.contains(o)).collect();
        OffsetMap::between(committed, pending, next)
    }

    #[test]
    fn between_takes_what_is_not_pending() {
        let m = OffsetMap::between(10, [10, 12, 13, 17], 20);
        assert_eq!(m.decided, vec![11..12, 14..17, 18..20]);
        assert!(m.contains(11) && m.contains(16) && m.contains(19));
        assert!(!m.contains(10) && !m.contains(12) && !m.contains(17) && !m.contains(20));
        assert_eq!(m.len(), 6);
        assert!(OffsetMap::between(10, [10], 11).is_empty(), "only the committed one: nothing decided above it");
    }

    #[test]
    fn the_smaller_encoding_is_written() {
        // A long run: a handful of bytes as runs, 625 as a bitset.
        let long = OffsetMap::between(1_000, [1_000], 6_001);
        let text = long.encode(MAX_METADATA).unwrap();
        assert!(text.starts_with(RUNS) && text.len() < 16, "{text}");
        // Every other offset: runs take two bytes per offset, a bitset a quarter.
        let pending: Vec<i64> = (0..2_000).map(|i| i * 2).collect();
        let sparse = OffsetMap::between(0, pending, 4_000);
        let text = sparse.encode(MAX_METADATA).unwrap();
        assert!(text.starts_with(BITS) && text.len() < 700, "{}", text.len());
        assert_eq!(OffsetMap::decode(&text, 0), Some(sparse));
        assert_eq!(map(5, &[]).encode(MAX_METADATA).as_deref(), Some(""));
    }

    #[test]
    fn what_is_not_ours_is_ignored() {
        let text = map(7, &[9, 10]).encode(MAX_METADATA).unwrap();
        assert!(OffsetMap::decode(&text, 7).is_some());
        assert_eq!(OffsetMap::decode(&text, 8), None, "written for another committed offset");
        for other in ["", "hr", "hello", "hr2rAAA", "hr1x", "hr1r!!!", "hr1r\u{e9}\u{e9}", "{\"app\":1}", "hr1r_w"] {
            assert_eq!(OffsetMap::decode(other, 7), None, "{other:?}");
        }
        // A varint longer than 64 bits, a run that overflows i64.
        let mut huge = Vec::new();
        varint(&mut huge, 7);
        varint(&mut huge, u64::MAX);
        varint(&mut huge, u64::MAX);
        assert_eq!(OffsetMap::decode(&encoded(RUNS, &huge), 7), None);
        assert_eq!(
            OffsetMap::decode(&encoded(RUNS, &[7, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]), 7),
            None
        );
    }

    #[test]
    fn a_map_over_the_cap_degrades_to_none() {
        // Alternating decided and undecided over 40,000 offsets: 5,000 bytes as a bitset.
        let pending: Vec<i64> = (0..20_000).map(|i| i * 2).collect();
        let m = OffsetMap::between(0, pending, 40_000);
        assert_eq!(m.encode(MAX_METADATA), None);
        assert!(m.encode(1_000_000).is_some_and(|t| t.len() > MAX_METADATA));
    }

    proptest! {
        #[test]
        fn round_trip(
            committed in 0i64..1 << 40,
            flags in proptest::collection::vec(any::<bool>(), 0..3_000),
            runs in proptest::collection::vec((1u16..300, 1u16..300), 0..40),
            use_runs in any::<bool>(),
        ) {
            let decided: Vec<i64> = if use_runs {
                let mut at = committed + 1;
                let mut out = Vec::new();
                for (gap, len) in runs {
                    at += i64::from(gap);
                    out.extend(at..at + i64::from(len));
                    at += i64::from(len);
                }
                out
            } else {
                flags.iter().enumerate().filter(|(_, &f)| f).map(|(i, _)| committed + 1 + i as i64).collect()
            };
            let m = map(committed, &decided);
            let text = m.encode(usize::MAX).unwrap();
            prop_assert!(text.is_ascii());
            let back = if text.is_empty() { map(committed, &[]) } else { OffsetMap::decode(&text, committed).unwrap() };
            prop_assert_eq!(&back, &m);
            for &o in &decided {
                prop_assert!(back.contains(o));
            }
            prop_assert!(!back.contains(committed));
        }

        /// Any map spanning up to 20,000 offsets past the committed one fits the cap
        /// (a bitset of at most 2,500 bytes); a cap is never exceeded.
        #[test]
        fn size_bound(
            committed in 0i64..i64::MAX / 2,
            flags in proptest::collection::vec(any::<bool>(), 0..20_000),
            cap in 0usize..5_000,
        ) {
            let decided: Vec<i64> =
                flags.iter().enumerate().filter(|(_, &f)| f).map(|(i, _)| committed + 1 + i as i64).collect();
            let m = map(committed, &decided);
            prop_assert!(m.encode(MAX_METADATA).is_some());
            if let Some(text) = m.encode(cap) {
                prop_assert!(text.len() <= cap);
            }
        }

        /// Whatever the text, decoding neither panics nor yields a map that is not well formed.
        #[test]
        fn garbage_is_safe(text in "hr1[rb][A-Za-z0-9_-]{0,64}", committed in 0i64..1_000) {
            if let Some(m) = OffsetMap::decode(&text, committed) {
                prop_assert!(m.decided.windows(2).all(|w| w[0].end < w[1].start));
                prop_assert!(m.decided.iter().all(|r| r.start > committed && r.start < r.end));
            }
        }
    }
}
