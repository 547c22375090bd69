//! What an RTSP camera controls reaches two parsers: its decoder configuration record
//! (`avcc::parameter_sets`, from the SDP's sprop-parameter-sets) and its RTP timestamps
//! (`rtp_timeline`). Neither panics, and the timeline keeps its invariants whatever the camera
//! sends: each frame starts no earlier than the previous one ends, and every duration is within
//! MIN_DUR_90K..=MAX_DUR_90K.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::avcc::parameter_sets;
use media::h264::nal_type;
use media::rtp_timeline::{RtpTimeline, MAX_DUR_90K, MIN_DUR_90K};

fuzz_target!(|data: &[u8]| {
    // The whole input as a decoder configuration record.
    if let Ok(sets) = parameter_sets(data) {
        for sps in &sets.sps {
            assert_eq!(nal_type(sps), nal_type::SPS);
        }
        for pps in &sets.pps {
            assert_eq!(nal_type(pps), nal_type::PPS);
        }
    }

    // The same bytes as a camera's timing: a clock rate, then 12-byte frames of
    // (raw or extended timestamp step, arrival step).
    let Some((rate, frames)) = data.split_first_chunk::<4>() else {
        return;
    };
    let mut tl = RtpTimeline::new(u32::from_le_bytes(*rate) % 200_000, 5);
    let mut source: i64 = 0;
    let mut arrival: u64 = 0;
    let mut end: Option<u64> = None;
    for f in frames.chunks_exact(12) {
        let step = i64::from_le_bytes(f[0..8].try_into().unwrap_or_default());
        let wall = u32::from_le_bytes(f[8..12].try_into().unwrap_or_default());
        // Low bit of the wall step: feed a raw 32-bit timestamp through the unwrapper instead.
        source = if wall & 1 == 1 {
            tl.extend_rtp32(source.wrapping_add(step) as u32)
        } else {
            source.wrapping_add(step)
        };
        arrival = arrival.saturating_add(u64::from(wall >> 8));
        let s = tl.stamp(source, arrival);
        assert!((MIN_DUR_90K..=MAX_DUR_90K).contains(&s.duration_90k), "{s:?}");
        if let Some(e) = end {
            assert!(s.dts_90k >= e, "went backwards: {s:?} before {e}");
        }
        end = Some(s.dts_90k.saturating_add(u64::from(s.duration_90k)));
    }
});
