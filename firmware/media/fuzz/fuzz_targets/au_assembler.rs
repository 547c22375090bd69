//! The access unit assembler never panics, emits only non-empty AUs holding a picture with
//! flags that match their NAL units, and the streaming AnnexBReader (with its early release)
//! agrees with whole-buffer assembly at any chunking.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::annexb::split_annexb;
use media::h264::{is_vcl, nal_type, AccessUnit, AnnexBReader, AuAssembler, H264Error};

fn check(au: &AccessUnit) {
    assert!(!au.nals.is_empty(), "empty AU");
    assert!(
        au.nals.iter().all(|n| !n.is_empty()),
        "empty NAL unit in an AU"
    );
    assert!(
        au.nals.iter().any(|n| is_vcl(nal_type(n))),
        "AU without a picture"
    );
    assert_eq!(
        &AccessUnit::from_nals(au.nals.clone()),
        au,
        "flags disagree"
    );
}

fuzz_target!(|data: &[u8]| {
    let (seed, stream) = match data {
        [a, rest @ ..] => (u32::from(*a), rest),
        _ => return,
    };

    let nals = split_annexb(stream);
    let mut assembler = AuAssembler::new();
    let mut whole: Vec<Result<AccessUnit, H264Error>> = Vec::new();
    for nal in nals.iter().cloned() {
        match assembler.push(nal) {
            Ok(Some(au)) => whole.push(Ok(au)),
            Ok(None) => {}
            Err(e) => whole.push(Err(e)),
        }
    }
    whole.extend(assembler.flush().map(Ok));
    assert!(assembler.flush().is_none());
    let mut in_aus = 0;
    for au in whole.iter().flatten() {
        check(au);
        in_aus += au.nals.len();
    }
    assert!(in_aus <= nals.len());

    let mut reader = AnnexBReader::new();
    let mut streamed = Vec::new();
    let mut rng = seed.wrapping_mul(2_654_435_761) | 1;
    let mut rest = stream;
    while !rest.is_empty() {
        rng = rng.wrapping_mul(1_103_515_245).wrapping_add(12_345);
        let n = (rng >> 16) as usize % 24;
        let (piece, tail) = rest.split_at(n.min(rest.len()));
        reader.push(piece);
        while let Some(r) = reader.next_au() {
            streamed.push(r);
        }
        rest = tail;
    }
    reader.finish();
    while let Some(r) = reader.next_au() {
        streamed.push(r);
    }
    assert_eq!(
        streamed, whole,
        "streaming and whole-buffer assembly disagree"
    );
});
