//! Golden LL-HLS playlists for fixed inputs, compared line by line, plus the invariants every
//! rendered playlist must keep whatever the input (checked on the goldens and on a sweep).
//!
//! To accept a deliberate change: `UPDATE_GOLDEN=1 cargo test -p media --test hls_golden`,
//! then review the diff of `tests/golden/*.m3u8`.

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;

use media::hls::{
    bandwidth_bps, frame_rate, render_multivariant, MediaPlaylist, PartInfo, Variant, WindowOptions,
};

const T0_US: u64 = 1_717_243_200_000_000; // 2024-06-01T12:00:00Z

/// A ring as the daemon sees it: `gops` GOPs of `gop_frames` frames at `frame_90k`, cut into
/// parts of `part_frames` frames (an IDR starts a new part), then `tail_frames` more frames.
struct Stream {
    frame_90k: u32,
    gop_frames: u32,
    part_frames: u32,
    first_msn: u64,
    generation: u64,
}

impl Stream {
    fn parts(&self, frames: u32) -> Vec<PartInfo> {
        let mut out = Vec::new();
        let mut msn = self.first_msn;
        let mut index = 0;
        let mut f = 0;
        while f < frames {
            let in_gop = f % self.gop_frames;
            let n = self
                .part_frames
                .min(self.gop_frames - in_gop)
                .min(frames - f);
            if in_gop == 0 && f > 0 {
                msn += 1;
                index = 0;
            }
            out.push(PartInfo {
                msn,
                index,
                start_90k: u64::from(f) * u64::from(self.frame_90k),
                duration_90k: n * self.frame_90k,
                independent: in_gop == 0,
                capture_unix_us: T0_US + u64::from(f) * u64::from(self.frame_90k) * 100 / 9,
                init_generation: self.generation,
                discontinuity: false,
                bytes: 1_000 * n + if in_gop == 0 { 20_000 } else { 0 },
                frames: n,
            });
            index += 1;
            f += n;
        }
        out
    }
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// `UPDATE_GOLDEN=1` rewrites the golden files instead of comparing; unset, empty or `0`
/// compares. Any other value is a mistake (`UPDATE_GOLDEN=true` would otherwise compare, or
/// rewrite, silently) and fails. The same rule in every golden test (fmp4_golden, hls_golden).
fn update_golden() -> bool {
    match std::env::var("UPDATE_GOLDEN").as_deref() {
        Ok("1") => true,
        Ok("" | "0") | Err(std::env::VarError::NotPresent) => false,
        Ok(other) => {
            panic!("UPDATE_GOLDEN={other:?}: set it to 1 to rewrite the golden files, or unset it")
        }
        Err(e) => panic!("UPDATE_GOLDEN: {e}"),
    }
}

fn check_golden(name: &str, text: &str) {
    let path = golden_dir().join(name);
    if update_golden() {
        std::fs::write(&path, text).unwrap();
        return;
    }
    let want = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e} (UPDATE_GOLDEN=1 writes it)", path.display()));
    let (got_lines, want_lines): (Vec<&str>, Vec<&str>) =
        (text.lines().collect(), want.lines().collect());
    for (n, (g, w)) in got_lines.iter().zip(&want_lines).enumerate() {
        assert_eq!(g, w, "{name} line {}", n + 1);
    }
    assert_eq!(
        got_lines.len(),
        want_lines.len(),
        "{name}: line count differs"
    );
    assert!(text.ends_with('\n'), "{name}: no final newline");
}

fn attr(line: &str, key: &str) -> Option<String> {
    let rest = line.split_once(':')?.1;
    for kv in rest.split(',') {
        if let Some(v) = kv.strip_prefix(&format!("{key}=")) {
            return Some(v.trim_matches('"').to_string());
        }
    }
    None
}

fn seconds(s: &str) -> f64 {
    s.trim_end_matches(',').parse().unwrap()
}

/// What any client relies on, checked on the text alone.
fn check_invariants(text: &str, full_window: bool) {
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "#EXTM3U");
    let get = |tag: &str| lines.iter().find(|l| l.starts_with(tag)).copied();
    let td: f64 = seconds(
        get("#EXT-X-TARGETDURATION:")
            .unwrap()
            .split_once(':')
            .unwrap()
            .1,
    );
    let pt = seconds(&attr(get("#EXT-X-PART-INF:").unwrap(), "PART-TARGET").unwrap());
    let sc = get("#EXT-X-SERVER-CONTROL:").unwrap();
    assert_eq!(attr(sc, "CAN-BLOCK-RELOAD").as_deref(), Some("YES"));
    assert!(seconds(&attr(sc, "PART-HOLD-BACK").unwrap()) >= 3.0 * pt - 1e-9);
    assert!(seconds(&attr(sc, "HOLD-BACK").unwrap()) >= 3.0 * td - 1e-9);
    assert!(get("#EXT-X-SKIP").is_none() && attr(sc, "CAN-SKIP-UNTIL").is_none());
    let mut msn: u64 = get("#EXT-X-MEDIA-SEQUENCE:")
        .unwrap()
        .split_once(':')
        .unwrap()
        .1
        .parse()
        .unwrap();
    let mut seen_map = false;
    let mut next_part = 0u32;
    let mut part_sum = 0.0;
    let mut listed_parts = false;
    let mut last_part = None;
    let mut i = 0;
    while i < lines.len() {
        let l = lines[i];
        if l.starts_with("#EXT-X-MAP:") {
            seen_map = true;
        } else if l.starts_with("#EXT-X-PART:") {
            assert!(seen_map, "a part before any EXT-X-MAP");
            let d = seconds(&attr(l, "DURATION").unwrap());
            assert!(d > 0.0 && d <= pt, "part {d} > PART-TARGET {pt}: {l}");
            let uri = attr(l, "URI").unwrap();
            assert_eq!(uri, format!("part-{msn}-{next_part}.m4s"), "part numbering");
            assert_eq!(
                attr(l, "INDEPENDENT").as_deref() == Some("YES"),
                next_part == 0,
                "{l}"
            );
            last_part = Some((msn, next_part));
            next_part += 1;
            part_sum += d;
            listed_parts = true;
        } else if let Some(d) = l.strip_prefix("#EXTINF:") {
            let d = seconds(d);
            assert!(d <= td, "segment {d} > TARGETDURATION {td}");
            if listed_parts {
                assert!((d - part_sum).abs() < 1e-4 * f64::from(next_part.max(1)));
            }
            assert_eq!(
                lines[i + 1],
                format!("seg-{msn}.m4s"),
                "EXTINF without its URI"
            );
            msn += 1;
            next_part = 0;
            part_sum = 0.0;
            listed_parts = false;
            i += 1;
        } else if l.starts_with("#EXT-X-PRELOAD-HINT:") {
            let (m, p) = last_part.expect("a hint without any part");
            assert_eq!(attr(l, "TYPE").as_deref(), Some("PART"));
            assert_eq!(attr(l, "URI").unwrap(), format!("part-{m}-{}.m4s", p + 1));
            assert_eq!(i, lines.len() - 1, "the hint is the last line");
        } else {
            assert!(l.starts_with('#'), "a URI without EXTINF: {l}");
        }
        i += 1;
    }
    // A plain HLS client that drops every LL tag still has ≥ 3 target durations to play.
    let plain: f64 = lines
        .iter()
        .filter_map(|l| l.strip_prefix("#EXTINF:"))
        .map(seconds)
        .sum();
    if full_window {
        assert!(
            plain >= 3.0 * td,
            "only {plain} s of complete segments:\n{text}"
        );
    }
}

#[test]
fn steady_720p30_one_second_gops_of_100_ms_parts() {
    // 12.4 s of a 30 fps, 1 s GOP stream in 3-frame parts: what testsrc gives by default.
    let s = Stream {
        frame_90k: 3_000,
        gop_frames: 30,
        part_frames: 3,
        first_msn: 1_717_243_200_000,
        generation: 1_717_243_199_990,
    };
    let p = MediaPlaylist::from_parts(&s.parts(372), &WindowOptions::default());
    let text = p.render();
    check_golden("steady.m3u8", &text);
    check_invariants(&text, true);
}

#[test]
fn parts_of_25_fps_are_120_ms_and_raise_the_part_target() {
    // 100 ms asked, 40 ms frames: parts of 3 frames (120 ms), 2 s GOPs.
    let s = Stream {
        frame_90k: 3_600,
        gop_frames: 50,
        part_frames: 3,
        first_msn: 40,
        generation: 3,
    };
    let p = MediaPlaylist::from_parts(&s.parts(50 * 5 + 7), &WindowOptions::default());
    assert_eq!(p.part_target_90k(), 10_800);
    assert_eq!(p.target_duration_s(), 2);
    let text = p.render();
    check_golden("pal_120ms_parts.m3u8", &text);
    check_invariants(&text, true);
}

#[test]
fn a_source_restart_and_a_new_init_show_as_discontinuities() {
    let a = Stream {
        frame_90k: 3_000,
        gop_frames: 30,
        part_frames: 3,
        first_msn: 100,
        generation: 7,
    };
    let mut parts = a.parts(90); // msn 100..=102
    let b = Stream {
        first_msn: 103,
        generation: 8,
        ..a
    };
    let mut more = b.parts(95); // msn 103..=106, a new init after a restart
    more[0].discontinuity = true;
    for p in &mut more {
        p.capture_unix_us += 5_000_000; // the source was away for 5 s
        p.start_90k += 90 * 3_000 + 5 * 90_000; // after the first run, plus the outage
    }
    parts.extend(more);
    let mut p = MediaPlaylist::from_parts(&parts, &WindowOptions::default());
    p.discontinuity_sequence = 4;
    let text = p.render();
    check_golden("discontinuity.m3u8", &text);
    check_invariants(&text, true);
    assert_eq!(text.matches("#EXT-X-DISCONTINUITY\n").count(), 1);
}

#[test]
fn the_multivariant_playlist() {
    let s = Stream {
        frame_90k: 3_000,
        gop_frames: 30,
        part_frames: 3,
        first_msn: 0,
        generation: 1,
    };
    let parts = s.parts(100);
    let (peak, avg) = bandwidth_bps(&parts).unwrap();
    let text = render_multivariant(&Variant {
        bandwidth_bps: peak,
        average_bandwidth_bps: Some(avg),
        codecs: "avc1.64001f".into(),
        width: 1280,
        height: 720,
        frame_rate: frame_rate(&parts),
    });
    check_golden("multivariant.m3u8", &text);
}

#[test]
fn every_window_of_a_long_run_keeps_the_invariants() {
    // Slide over a 40 s stream with jittery part lengths and uneven GOPs, rendering at
    // every part, as the daemon does on every publish.
    let mut parts: Vec<PartInfo> = Vec::new();
    let mut msn = 0;
    let mut index = 0;
    let mut t = T0_US;
    let mut start_90k = 0;
    for n in 0..400u32 {
        // GOPs of 7 to 11 parts (0.6 to 1.4 s).
        let new_gop = n == 0 || index >= 7 + (msn * 3 % 5) as u32;
        if new_gop && n > 0 {
            msn += 1;
            index = 0;
        }
        let d = 8_000 + (n * 7919) % 4_000;
        parts.push(PartInfo {
            msn,
            index,
            start_90k,
            duration_90k: d,
            independent: new_gop || n == 0,
            capture_unix_us: t,
            init_generation: 1 + msn / 15,
            discontinuity: false,
            bytes: 10_000,
            frames: 3,
        });
        t += u64::from(d) * 100 / 9;
        start_90k += u64::from(d);
        index += 1;
        // The daemon's ring keeps about 12 s.
        let keep_from = parts.len().saturating_sub(120);
        let p = MediaPlaylist::from_parts(&parts[keep_from..], &WindowOptions::default());
        // Once the ring is full (12 s), the window must reach three target durations.
        let ring_90k: u64 = parts[keep_from..]
            .iter()
            .map(|p| u64::from(p.duration_90k))
            .sum();
        if p.segments.len() > 1 {
            check_invariants(&p.render(), ring_90k >= 11 * 90_000);
        }
    }
}
