//! The bytes `media::fmp4` writes, pinned: golden files, a field-by-field parse with `mp4-atom`,
//! and ffprobe reading and decoding a real x264 stream muxed with it.
//!
//! Golden files live in `tests/golden/NAME.v{FORMAT_VERSION}.hex`. When the output changes on
//! purpose, bump `fmp4::FORMAT_VERSION` and run `UPDATE_GOLDEN=1 cargo test -p media --test
//! fmp4_golden`; that writes the new files and deletes those of other versions.
#![allow(clippy::unwrap_used)] // a panic is how a test fails

use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;
use media::fmp4::{self, FragmentSpec, SampleInfo, VideoTrack, FORMAT_VERSION};
use mp4_atom::{Codec, Decode, Ftyp, Mdat, Moof, Moov, Prft, ReferenceTime};

/// x264 High 3.1 1280x720 (the fixture's): High profile, so avcC has the chroma trailer.
const SPS: &[u8] = &[
    0x67, 0x64, 0x00, 0x1f, 0xac, 0xb4, 0x02, 0x80, 0x2d, 0xd8, 0x08, 0x80, 0x00, 0x00, 0x03, 0x00,
    0x80, 0x00, 0x00, 0x1e, 0x47, 0x8c, 0x19, 0x50,
];
const PPS: &[u8] = &[0x68, 0xef, 0x0f, 0xcb];

/// Past 2^32 ticks (13.25 h at 90 kHz), so a 32-bit tfdt would be visibly wrong.
const BASE_DECODE_TIME: u64 = 5_000_000_000;
/// 2023-11-14T22:13:20.123456Z.
const CAPTURE_UNIX_US: u64 = 1_700_000_000_123_456;

fn track() -> VideoTrack {
    VideoTrack {
        width: 1280,
        height: 720,
        sps: vec![Bytes::from_static(SPS)],
        pps: vec![Bytes::from_static(PPS)],
        timescale: 90_000,
    }
}

/// AVCC sample from NAL units.
fn avcc(nals: &[&[u8]]) -> Bytes {
    let mut out = Vec::new();
    for nal in nals {
        out.extend_from_slice(&(nal.len() as u32).to_be_bytes());
        out.extend_from_slice(nal);
    }
    Bytes::from(out)
}

/// Three frames: IDR with an SEI, then two P frames; fixed, made-up slice payloads.
fn fragment_input() -> (FragmentSpec, Vec<Bytes>) {
    let samples = vec![
        avcc(&[
            &[0x06, 0x05, 0x02, 0xab, 0xcd, 0x80],
            &[0x65, 0x88, 0x84, 0x00, 0x33, 0xff, 0x10, 0x20],
        ]),
        avcc(&[&[0x41, 0x9a, 0x22, 0x6c, 0x42, 0xbf, 0xfe]]),
        avcc(&[&[0x41, 0x9a, 0x44, 0x3c, 0x21, 0x0f]]),
    ];
    let info = |is_sync| SampleInfo {
        duration: 3000,
        is_sync,
        composition_offset: 0,
    };
    let spec = FragmentSpec {
        sequence_number: 1,
        base_decode_time: BASE_DECODE_TIME,
        capture_unix_us: CAPTURE_UNIX_US,
        samples: vec![info(true), info(false), info(false)],
    };
    (spec, samples)
}

/// Two frames with reordering (an I then a B shown before it): composition offsets, trun v1.
fn reordered_fragment_input() -> (FragmentSpec, Vec<Bytes>) {
    let samples = vec![
        avcc(&[&[0x65, 0x88, 0x80, 0x40]]),
        avcc(&[&[0x01, 0x9e, 0x41, 0x00]]),
    ];
    let spec = FragmentSpec {
        sequence_number: 42,
        base_decode_time: 90_000,
        capture_unix_us: CAPTURE_UNIX_US,
        samples: vec![
            SampleInfo {
                duration: 3000,
                is_sync: true,
                composition_offset: 6000,
            },
            SampleInfo {
                duration: 3000,
                is_sync: false,
                composition_offset: -3000,
            },
        ],
    };
    (spec, samples)
}

// ---------------------------------------------------------------------------------------------
// Golden files.

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

fn to_hex(data: &[u8]) -> String {
    let mut s = String::new();
    for line in data.chunks(16) {
        for b in line {
            s.push_str(&format!("{b:02x}"));
        }
        s.push('\n');
    }
    s
}

fn from_hex(text: &str) -> Vec<u8> {
    let digits: Vec<u8> = text.bytes().filter(u8::is_ascii_hexdigit).collect();
    digits
        .chunks(2)
        .map(|p| u8::from_str_radix(std::str::from_utf8(p).unwrap(), 16).unwrap())
        .collect()
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

/// Compares `actual` with `tests/golden/{name}.v{FORMAT_VERSION}.hex`, or rewrites it (and drops
/// the files of other versions) when `UPDATE_GOLDEN=1`.
fn check_golden(name: &str, actual: &[u8]) {
    let dir = golden_dir();
    let path = dir.join(format!("{name}.v{FORMAT_VERSION}.hex"));
    if update_golden() {
        std::fs::create_dir_all(&dir).unwrap();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let old = entry.unwrap().path();
            let file = old.file_name().unwrap().to_string_lossy().into_owned();
            if file.starts_with(&format!("{name}.v")) && file.ends_with(".hex") && old != path {
                std::fs::remove_file(&old).unwrap();
            }
        }
        std::fs::write(&path, to_hex(actual)).unwrap();
        return;
    }
    let Ok(text) = std::fs::read_to_string(&path) else {
        panic!(
            "no golden file {}: fmp4::FORMAT_VERSION is {FORMAT_VERSION}. Run \
             `UPDATE_GOLDEN=1 cargo test -p media --test fmp4_golden` to write it, and commit it.",
            path.display()
        );
    };
    let expected = from_hex(&text);
    if expected != actual {
        let first = expected
            .iter()
            .zip(actual)
            .position(|(a, b)| a != b)
            .unwrap_or(expected.len().min(actual.len()));
        panic!(
            "fmp4 output for `{name}` differs from {} (first difference at byte {first}; \
             expected {} bytes, got {}).\n\
             If this change is intended, bump media::fmp4::FORMAT_VERSION (now {FORMAT_VERSION}) \
             and run `UPDATE_GOLDEN=1 cargo test -p media --test fmp4_golden`.\n\
             got:\n{}",
            path.display(),
            expected.len(),
            actual.len(),
            to_hex(actual)
        );
    }
}

#[test]
fn init_segment_matches_golden() {
    check_golden("init", &fmp4::init_segment(&track()));
}

#[test]
fn media_fragment_matches_golden() {
    let (spec, samples) = fragment_input();
    check_golden("fragment", &fmp4::media_fragment(&spec, &samples));
}

#[test]
fn reordered_media_fragment_matches_golden() {
    let (spec, samples) = reordered_fragment_input();
    check_golden("fragment_reordered", &fmp4::media_fragment(&spec, &samples));
}

// ---------------------------------------------------------------------------------------------
// Parsed back with mp4-atom, an independent reader.

#[test]
fn init_segment_parses_back_field_by_field() {
    let init = fmp4::init_segment(&track());
    let buf = &mut init.as_slice();
    let ftyp = Ftyp::decode(buf).unwrap();
    assert_eq!(ftyp.major_brand, b"iso6".into());
    assert_eq!(ftyp.minor_version, 0);
    assert_eq!(
        ftyp.compatible_brands,
        [b"iso6".into(), b"cmfc".into(), b"mp41".into()]
    );
    let moov = Moov::decode(buf).unwrap();
    assert!(buf.is_empty(), "nothing after moov");

    assert_eq!(moov.mvhd.timescale, 90_000);
    assert_eq!(moov.mvhd.duration, 0);
    assert_eq!(moov.mvhd.next_track_id, 2);
    assert_eq!(moov.trak.len(), 1);
    let trak = &moov.trak[0];
    assert_eq!(trak.tkhd.track_id, 1);
    assert!(trak.tkhd.enabled && trak.tkhd.in_movie);
    assert_eq!(trak.tkhd.width.integer(), 1280);
    assert_eq!(trak.tkhd.height.integer(), 720);
    assert_eq!(trak.mdia.mdhd.timescale, 90_000);
    assert_eq!(trak.mdia.mdhd.language, "und");
    assert_eq!(trak.mdia.hdlr.handler, b"vide".into());
    assert_eq!(trak.mdia.hdlr.name, "pinhole");
    assert!(trak.mdia.minf.vmhd.is_some());
    assert_eq!(trak.mdia.minf.dinf.dref.urls.len(), 1);

    let stbl = &trak.mdia.minf.stbl;
    assert!(stbl.stts.entries.is_empty());
    assert!(stbl.stsc.entries.is_empty());
    assert_eq!(stbl.stco.as_ref().map(|s| s.entries.len()), Some(0));
    assert_eq!(stbl.stsd.codecs.len(), 1);
    let Codec::Avc1(avc1) = &stbl.stsd.codecs[0] else {
        panic!("expected avc1, got {:?}", stbl.stsd.codecs[0]);
    };
    assert_eq!((avc1.visual.width, avc1.visual.height), (1280, 720));
    assert_eq!(avc1.visual.data_reference_index, 1);
    assert_eq!(avc1.visual.depth, 0x18);
    let avcc = &avc1.avcc;
    assert_eq!(avcc.configuration_version, 1);
    assert_eq!(avcc.avc_profile_indication, 100);
    assert_eq!(avcc.profile_compatibility, 0);
    assert_eq!(avcc.avc_level_indication, 31);
    assert_eq!(avcc.length_size, 4);
    assert_eq!(avcc.sequence_parameter_sets, [SPS.to_vec()]);
    assert_eq!(avcc.picture_parameter_sets, [PPS.to_vec()]);
    let ext = avcc
        .ext
        .as_ref()
        .expect("High profile avcC has the chroma/bit-depth trailer");
    assert_eq!(
        (ext.chroma_format, ext.bit_depth_luma, ext.bit_depth_chroma),
        (1, 8, 8)
    );
    assert!(ext.sequence_parameter_sets_ext.is_empty());

    let mvex = moov.mvex.as_ref().expect("mvex: a fragmented file");
    assert_eq!(mvex.trex.len(), 1);
    assert_eq!(mvex.trex[0].track_id, 1);
    assert_eq!(mvex.trex[0].default_sample_description_index, 1);
}

/// Decodes prft + moof + mdat; returns them with the moof's offset in `data`.
fn decode_fragment(data: &[u8]) -> (Prft, usize, Moof, Mdat) {
    let buf = &mut &data[..];
    let prft = Prft::decode(buf).unwrap();
    let moof_offset = data.len() - buf.len();
    let moof = Moof::decode(buf).unwrap();
    let mdat = Mdat::decode(buf).unwrap();
    assert!(buf.is_empty(), "nothing after mdat");
    (prft, moof_offset, moof, mdat)
}

#[test]
fn media_fragment_parses_back_field_by_field() {
    let (spec, samples) = fragment_input();
    let data = fmp4::media_fragment(&spec, &samples);
    let (prft, moof_offset, moof, mdat) = decode_fragment(&data);

    assert_eq!(prft.reference_track_id, 1);
    assert_eq!(prft.media_time, BASE_DECODE_TIME);
    // mp4-atom maps flags 24 (consistent_offset | real_time) to RealTime: the capture time.
    assert_eq!(prft.utc_time_semantics, ReferenceTime::RealTime);
    let ntp_secs = prft.ntp_timestamp >> 32;
    let ntp_frac = prft.ntp_timestamp & 0xFFFF_FFFF;
    assert_eq!(ntp_secs, CAPTURE_UNIX_US / 1_000_000 + 2_208_988_800);
    let micros = (ntp_frac * 1_000_000) >> 32;
    assert!((123_455..=123_456).contains(&micros), "{micros}");
    assert_eq!(data[8], 1, "prft version 1 (64-bit media_time)");

    assert_eq!(moof.mfhd.sequence_number, 1);
    assert_eq!(moof.traf.len(), 1);
    let traf = &moof.traf[0];
    assert_eq!(traf.tfhd.track_id, 1);
    assert!(traf.tfhd.default_base_is_moof);
    assert_eq!(traf.tfhd.base_data_offset, None);
    assert_eq!(
        traf.tfdt.as_ref().unwrap().base_media_decode_time,
        BASE_DECODE_TIME
    );
    assert_eq!(traf.trun.len(), 1);
    let trun = &traf.trun[0];
    let entries: Vec<_> = trun.entries.iter().collect();
    assert_eq!(entries.len(), 3);
    let sizes: Vec<u32> = samples.iter().map(|s| s.len() as u32).collect();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e.duration, Some(3000), "sample {i}");
        assert_eq!(e.size, Some(sizes[i]), "sample {i}");
        assert_eq!(e.cts, None, "no composition offsets without reordering");
    }
    assert_eq!(entries[0].flags, Some(0x0200_0000), "sync: depends_on 2");
    assert_eq!(
        entries[1].flags,
        Some(0x0101_0000),
        "depends_on 1, non-sync"
    );
    assert_eq!(entries[2].flags, Some(0x0101_0000));

    // data_offset counts from the moof and lands on the first byte of the mdat payload.
    let data_offset = trun.data_offset.unwrap() as usize;
    let expected: Vec<u8> = samples.iter().flat_map(|s| s.to_vec()).collect();
    assert_eq!(&data[moof_offset + data_offset..], expected.as_slice());
    assert_eq!(mdat.data, expected);
}

#[test]
fn reordered_media_fragment_has_signed_composition_offsets() {
    let (spec, samples) = reordered_fragment_input();
    let data = fmp4::media_fragment(&spec, &samples);
    let (prft, _, moof, _) = decode_fragment(&data);
    assert_eq!(moof.mfhd.sequence_number, 42);
    let entries: Vec<_> = moof.traf[0].trun[0].entries.iter().collect();
    assert_eq!(entries[0].cts, Some(6000));
    assert_eq!(entries[1].cts, Some(-3000));
    // prft's media_time is the first sample's presentation time (decode time + offset).
    assert_eq!(prft.media_time, 96_000);
}

// ---------------------------------------------------------------------------------------------
// A real stream through fmp4, read and decoded by ffprobe.

/// NAL units of an Annex-B buffer, grouped into access units at each AUD (the fixture has one
/// per frame). A deliberately naive splitter, independent of the crate's.
fn fixture_access_units() -> Vec<Vec<Vec<u8>>> {
    let data = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/x264_high_720p30_gop6.h264"),
    )
    .unwrap();
    let mut starts = Vec::new();
    let mut i = 0;
    while i + 3 <= data.len() {
        if data[i..i + 3] == [0, 0, 1] {
            starts.push(i + 3);
            i += 3;
        } else {
            i += 1;
        }
    }
    let mut aus: Vec<Vec<Vec<u8>>> = Vec::new();
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).map_or(data.len(), |&n| n - 3);
        let mut nal = data[s..end].to_vec();
        while nal.last() == Some(&0) {
            nal.pop();
        }
        if nal[0] & 0x1f == 9 {
            aus.push(Vec::new());
        }
        aus.last_mut().unwrap().push(nal);
    }
    aus
}

fn require_tool(name: &str) {
    let found = Command::new(name)
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "`{name}` is not installed, and this test needs it to check the muxed output with an \
         independent reader. Install it (Debian: `apt-get install ffmpeg`)."
    );
}

#[test]
fn ffprobe_reads_and_decodes_a_real_stream_muxed_by_fmp4() {
    require_tool("ffprobe");
    let aus = fixture_access_units();
    assert_eq!(aus.len(), 9);

    // Init from the in-band parameter sets, then one fragment per GOP (6 + 3 frames).
    let mut file = fmp4::init_segment(&track());
    let mut dts = 0u64;
    for (seq, gop) in aus.chunks(6).enumerate() {
        let mut infos = Vec::new();
        let mut samples = Vec::new();
        for au in gop {
            let kept: Vec<&[u8]> = au
                .iter()
                .filter(|n| !matches!(n[0] & 0x1f, 7..=9))
                .map(Vec::as_slice)
                .collect();
            infos.push(SampleInfo {
                duration: 3000,
                is_sync: kept.iter().any(|n| n[0] & 0x1f == 5),
                composition_offset: 0,
            });
            samples.push(avcc(&kept));
        }
        let spec = FragmentSpec {
            sequence_number: seq as u32 + 1,
            base_decode_time: dts,
            capture_unix_us: CAPTURE_UNIX_US,
            samples: infos,
        };
        dts += 3000 * gop.len() as u64;
        file.extend_from_slice(&fmp4::media_fragment(&spec, &samples));
    }
    let path = std::env::temp_dir().join(format!("pinhole-fmp4-{}.mp4", std::process::id()));
    std::fs::write(&path, &file).unwrap();

    let probe = Command::new("ffprobe")
        .args(["-v", "error", "-show_packets", "-show_entries"])
        .arg("packet=pts,dts,duration,flags")
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&probe.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&probe.stderr).into_owned();
    assert!(
        probe.status.success() && stderr.is_empty(),
        "ffprobe: {stderr}"
    );
    let packets: Vec<&str> = stdout.lines().collect();
    assert_eq!(packets.len(), 9, "{stdout}");
    for (i, line) in packets.iter().enumerate() {
        let fields: Vec<&str> = line.split(',').collect();
        let t = (i * 3000).to_string();
        assert_eq!(fields[0], t, "pts of packet {i}: {line}");
        assert_eq!(fields[1], t, "dts of packet {i}: {line}");
        assert_eq!(fields[2], "3000", "duration of packet {i}: {line}");
        let key = fields[3].starts_with('K');
        assert_eq!(key, i % 6 == 0, "keyframe flag of packet {i}: {line}");
    }

    // And the pictures decode: the avcC and AVCC samples are right, not just well-formed.
    let decode = Command::new("ffprobe")
        .args(["-v", "error", "-count_frames", "-select_streams", "v:0"])
        .args([
            "-show_entries",
            "stream=nb_read_frames,width,height,codec_name,profile",
        ])
        .args(["-of", "csv=p=0"])
        .arg(&path)
        .output()
        .unwrap();
    let _ = std::fs::remove_file(&path);
    let stdout = String::from_utf8_lossy(&decode.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&decode.stderr).into_owned();
    assert!(
        decode.status.success() && stderr.is_empty(),
        "ffprobe -count_frames: {stderr}"
    );
    assert_eq!(stdout.trim(), "h264,High,1280,720,9");
}
