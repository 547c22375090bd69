//! SPS parsing never panics; whatever parses can be rewritten for low delay, and the rewrite
//! parses back to the same SPS apart from the bitstream restriction.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::sps::{parse_pps, parse_sps, rewrite_low_delay};

fuzz_target!(|data: &[u8]| {
    // The input is the payload; the header is fixed so no time goes on other NAL types.
    let mut nal = Vec::with_capacity(data.len() + 1);
    nal.push(0x67);
    nal.extend_from_slice(data);

    let mut pps = nal.clone();
    pps[0] = 0x68;
    let _ = parse_pps(&pps);

    let Ok(before) = parse_sps(&nal) else {
        assert!(
            rewrite_low_delay(&nal).is_err(),
            "rewrote what does not parse"
        );
        return;
    };
    let _ = before.codec_string();
    let _ = before.frame_rate();
    assert!(before.width > 0 && before.height > 0);

    match rewrite_low_delay(&nal).expect("an SPS that parses can be rewritten") {
        None => assert_eq!(before.max_num_reorder_frames(), Some(0)),
        Some(out) => {
            assert_eq!(out[0], nal[0]);
            let after = parse_sps(&out).expect("the rewrite parses");
            assert!(
                before.eq_ignoring_bitstream_restriction(&after),
                "fields changed:\n{before:?}\n{after:?}"
            );
            assert_eq!(after.max_num_reorder_frames(), Some(0));
            assert_eq!(
                after.max_dec_frame_buffering(),
                Some(before.max_num_ref_frames.max(1))
            );
            assert_eq!(rewrite_low_delay(&out), Ok(None), "not idempotent");
        }
    }
});
