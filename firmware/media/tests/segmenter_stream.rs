//! Real x264 streams through the whole sans-IO path — `AnnexBReader` → `Segmenter` → framed
//! records — then read back as a client would: split the `[u32 BE length][payload]` records,
//! parse every part with `mp4-atom`, and let ffprobe read and decode the result.
#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use bytes::Bytes;
use media::h264::{AccessUnit, AnnexBReader};
use media::segmenter::{Frame, InitSegment, Output, Part, Segmenter, SegmenterConfig};
use mp4_atom::{Codec, Decode, Ftyp, Mdat, Moof, Moov, Prft};

const CAPTURE_START_US: u64 = 1_700_000_000_000_000;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name),
    )
    .unwrap()
}

fn access_units(annexb: &[u8]) -> Vec<AccessUnit> {
    let mut reader = AnnexBReader::new();
    // Pushed in odd-sized pieces, as a pipe delivers them.
    for chunk in annexb.chunks(97) {
        reader.push(chunk);
    }
    reader.finish();
    let mut aus = Vec::new();
    while let Some(au) = reader.next_au() {
        aus.push(au.unwrap());
    }
    aus
}

/// Pushes the access units as 30 fps frames; returns every output, flush included.
fn segment(aus: Vec<AccessUnit>, config: SegmenterConfig) -> (Segmenter, Vec<Output>) {
    let mut seg = Segmenter::new(config).unwrap();
    let mut out = Vec::new();
    for (i, au) in aus.into_iter().enumerate() {
        let i = i as u64;
        out.extend(
            seg.push(Frame {
                dts_90k: i * 3000,
                duration_90k: 3000,
                cts_offset_90k: 0,
                capture_unix_us: CAPTURE_START_US + i * 33_333,
                au,
            })
            .unwrap(),
        );
    }
    out.extend(seg.flush());
    (seg, out)
}

fn inits(out: &[Output]) -> Vec<Arc<InitSegment>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Init(i) => Some(i.clone()),
            Output::Part(_) => None,
        })
        .collect()
}

fn parts(out: &[Output]) -> Vec<Arc<Part>> {
    out.iter()
        .filter_map(|o| match o {
            Output::Part(p) => Some(p.clone()),
            Output::Init(_) => None,
        })
        .collect()
}

/// The body of `GET /api/video/cmaf` for these outputs.
fn chunked_body(out: &[Output]) -> Vec<u8> {
    let mut body = Vec::new();
    for o in out {
        match o {
            Output::Init(i) => body.extend_from_slice(&i.framed),
            Output::Part(p) => body.extend_from_slice(&p.framed),
        }
    }
    body
}

/// Splits a chunked body into its payloads, as the player does.
fn records(mut body: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while !body.is_empty() {
        let len = u32::from_be_bytes(body[..4].try_into().unwrap()) as usize;
        out.push(&body[4..4 + len]);
        body = &body[4 + len..];
    }
    out
}

/// The SPS in an init segment's avcC.
fn init_sps(init: &InitSegment) -> Vec<u8> {
    let payload = init.payload();
    let buf = &mut payload.as_ref();
    Ftyp::decode(buf).unwrap();
    let moov = Moov::decode(buf).unwrap();
    let Codec::Avc1(avc1) = &moov.trak[0].mdia.minf.stbl.stsd.codecs[0] else {
        panic!("not avc1");
    };
    avc1.avcc.sequence_parameter_sets[0].clone()
}

#[test]
fn a_real_stream_becomes_parts_a_player_and_ffprobe_can_read() {
    let annexb = fixture("x264_high_720p30_gop6.h264");
    let aus = access_units(&annexb);
    assert_eq!(aus.len(), 9);
    let in_band_sps = aus[0].sps().unwrap().clone();
    let (seg, out) = segment(aus, SegmenterConfig::default());

    // Init first, then 100 ms parts: IDR at frames 0 and 6.
    assert!(matches!(out[0], Output::Init(_)));
    let init = &inits(&out)[0];
    assert_eq!(inits(&out).len(), 1);
    assert_eq!(init.codec, "avc1.64001f");
    assert_eq!((init.width, init.height, init.generation), (1280, 720, 1));
    // x264 already signals max_num_reorder_frames = 0: the SPS goes in unchanged.
    assert_eq!(init_sps(init), in_band_sps.to_vec());
    let parts = parts(&out);
    let shape: Vec<_> = parts
        .iter()
        .map(|p| (p.sequence, p.frame_count, p.independent))
        .collect();
    assert_eq!(shape, [(1, 3, true), (2, 3, false), (3, 3, true)]);
    let stats = seg.stats();
    assert_eq!((stats.frames_accepted, stats.parts, stats.inits), (9, 3, 1));

    // Each record parses, and its boxes agree with the Part's fields.
    let body = chunked_body(&out);
    let recs = records(&body);
    assert_eq!(recs.len(), 4);
    assert_eq!(recs[0], init.payload().as_ref());
    for (rec, part) in recs[1..].iter().zip(&parts) {
        assert_eq!(*rec, part.payload().as_ref());
        let buf = &mut &rec[..];
        let prft = Prft::decode(buf).unwrap();
        let moof = Moof::decode(buf).unwrap();
        let mdat = Mdat::decode(buf).unwrap();
        assert!(buf.is_empty());
        assert_eq!(u64::from(moof.mfhd.sequence_number), part.sequence);
        let traf = &moof.traf[0];
        let tfdt = traf.tfdt.as_ref().unwrap().base_media_decode_time;
        assert_eq!(tfdt, part.base_decode_time_90k);
        assert_eq!(prft.media_time, part.base_decode_time_90k);
        let unix_s = (prft.ntp_timestamp >> 32) - 2_208_988_800;
        assert_eq!(unix_s, part.capture_unix_us / 1_000_000);
        let samples: Vec<_> = traf.trun[0].entries.iter().collect();
        assert_eq!(samples.len() as u32, part.frame_count);
        let total: u32 = samples.iter().map(|s| s.duration.unwrap()).sum();
        assert_eq!(total, part.duration_90k);
        let sizes: u32 = samples.iter().map(|s| s.size.unwrap()).sum();
        assert_eq!(sizes as usize, mdat.data.len());
        assert_eq!(samples[0].flags == Some(0x0200_0000), part.independent);
        // No parameter sets or AUDs in the samples: the first NAL is a slice.
        let first_nal_type = mdat.data[4] & 0x1f;
        assert!(
            matches!(first_nal_type, 1 | 5),
            "first NAL type {first_nal_type}"
        );
    }

    // ffprobe reads the concatenated payloads as one fragmented MP4 and decodes every picture.
    let found = Command::new("ffprobe")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`ffprobe` is not installed; this test needs it as an independent reader of the output \
         (Debian: `apt-get install ffmpeg`)."
    );
    let file: Vec<u8> = recs.concat();
    let path = std::env::temp_dir().join(format!("pinhole-segmenter-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();
    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-show_packets"])
        .args([
            "-show_entries",
            "packet=pts,duration,flags:stream=nb_read_frames",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&probe.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&probe.stderr).into_owned();
    assert!(
        probe.status.success() && stderr.is_empty(),
        "ffprobe: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    // pts, duration, flags ("K_" or "K__" depending on the ffmpeg version) per packet.
    let packets: Vec<(String, bool)> = lines[..9]
        .iter()
        .map(|l| {
            let (time, flags) = l.rsplit_once(',').unwrap();
            (time.to_string(), flags.starts_with('K'))
        })
        .collect();
    let expected: Vec<(String, bool)> = (0..9)
        .map(|i| (format!("{},3000", i * 3000), i % 6 == 0))
        .collect();
    assert_eq!(packets, expected, "{stdout}");
    assert_eq!(lines[9], "9", "decoded frames: {stdout}");
}

#[test]
fn b_slices_in_a_real_stream_withdraw_the_low_delay_rewrite_at_the_next_idr() {
    // x264 main with B-frames: 10 frames, an IDR every 5, SPS/PPS before each IDR. Its VUI says
    // frames are reordered, so the first init gets a rewritten SPS; the B slices that follow
    // withdraw it, and the second IDR brings an init with x264's own SPS.
    let aus = access_units(&fixture("x264_main_bframes_aud_2slices.h264"));
    assert_eq!(aus.len(), 10);
    let in_band_sps = aus[0].sps().unwrap().clone();
    assert!(aus.iter().any(|au| au.has_b_slices));
    let (seg, out) = segment(aus, SegmenterConfig::default());
    let inits = inits(&out);
    assert_eq!(inits.len(), 2);
    let rewritten = media::sps::rewrite_low_delay(&in_band_sps)
        .unwrap()
        .unwrap();
    assert_eq!(init_sps(&inits[0]), rewritten);
    assert_eq!(init_sps(&inits[1]), in_band_sps.to_vec());
    assert_eq!(inits[1].generation, 2);
    assert!(seg.stats().low_delay_vui_disabled);
    let parts = parts(&out);
    assert!(parts.iter().all(|p| p.init_generation
        == if p.base_decode_time_90k < 15_000 {
            1
        } else {
            2
        }));
    // Frames are untouched by the rewrite: the payload bytes are the same either way.
    let (_, plain) = segment(
        access_units(&fixture("x264_main_bframes_aud_2slices.h264")),
        SegmenterConfig {
            fragment_duration_90k: 9000,
            low_delay_vui: false,
        },
    );
    let plain_parts: Vec<Bytes> = parts_framed(&plain);
    assert_eq!(
        plain_parts,
        parts.iter().map(|p| p.framed.clone()).collect::<Vec<_>>()
    );
}

fn parts_framed(out: &[Output]) -> Vec<Bytes> {
    parts(out).iter().map(|p| p.framed.clone()).collect()
}
