//! LL-HLS request parsing never panics, and what parses renders back to itself: the delivery
//! directives (`_HLS_msn`, `_HLS_part`, `_HLS_skip`) and the resource names under `/hls/`.
//! Whatever a query asks for, deciding it against any position does not panic either, and a
//! request for what already exists is always ready.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media::hls::{decide, part_is_next, Decision, Query, Resource};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Some(r) = Resource::parse(text) {
        assert_eq!(r.to_string(), text, "a name parsed but is not canonical");
    }
    let Ok(q) = Query::parse(text) else {
        return;
    };
    let rendered = q.render();
    assert_eq!(Query::parse(&rendered), Ok(q), "{rendered:?}");
    if let Some((msn, part)) = q.blocking() {
        // Positions around the request, and the extremes.
        let p = part.unwrap_or(0);
        for last in [
            (msn, p),
            (msn.saturating_add(1), 0),
            (msn.saturating_sub(1), p.saturating_add(3)),
            (0, 0),
            (u64::MAX, u32::MAX),
        ] {
            for pt in [1, 9_000, 27_000, 90_000, u32::MAX] {
                let d = decide(msn, part, last, pt);
                if (last.0 > msn) || (part.is_some() && last >= (msn, p)) {
                    assert_eq!(d, Decision::Ready, "{q:?} at {last:?}");
                }
                let _ = part_is_next((msn, p), last);
            }
        }
    }
});
