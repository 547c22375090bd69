//! NalSplitter fed in arbitrary chunks must agree with split_annexb on the whole buffer, and
//! its output must be stable under re-encoding.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::annexb::{split_annexb, NalSplitter};

fuzz_target!(|data: &[u8]| {
    // The first two bytes seed the chunking; the rest is the stream.
    let (seed, stream) = match data {
        [a, b, rest @ ..] => (u32::from(*a) << 8 | u32::from(*b), rest),
        _ => return,
    };
    let whole = split_annexb(stream);

    let mut splitter = NalSplitter::new();
    let mut chunked = Vec::new();
    let mut rng = seed.wrapping_mul(2_654_435_761) | 1;
    let mut rest = stream;
    let mut expected_prefix: Option<Vec<u8>> = None;
    loop {
        // Chunks of 0..=32 bytes, with an occasional big one.
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = match (rng >> 16) % 8 {
            0 => 0,
            7 => (rng >> 8) as usize % 4096,
            _ => (rng >> 16) as usize % 33,
        };
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        splitter.push(piece);
        while let Some(nal) = splitter.pop() {
            if let Some(p) = expected_prefix.take() {
                assert!(nal.starts_with(&p), "pending_prefix was not a prefix");
            }
            chunked.push(nal);
        }
        expected_prefix = splitter.pending_prefix().map(<[u8]>::to_vec);
        rest = tail;
        if rest.is_empty() {
            break;
        }
    }
    while let Some(nal) = splitter.flush() {
        if let Some(p) = expected_prefix.take() {
            assert!(nal.starts_with(&p), "pending_prefix was not a prefix");
        }
        chunked.push(nal);
    }
    assert_eq!(whole, chunked, "chunking changed the NAL units");
    assert_eq!(splitter.buffered_len(), 0);

    for nal in &whole {
        assert!(!nal.is_empty());
        assert_ne!(nal.last(), Some(&0), "trailing zero kept");
        assert!(
            !nal.windows(3).any(|w| w == [0, 0, 1]),
            "a start code inside a NAL unit"
        );
    }
    // Start code + NAL units, concatenated, split back into the same NAL units.
    let mut reencoded = Vec::new();
    for nal in &whole {
        reencoded.extend_from_slice(&[0, 0, 0, 1]);
        reencoded.extend_from_slice(nal);
    }
    assert_eq!(
        split_annexb(&reencoded),
        whole,
        "not stable under re-encoding"
    );
});
