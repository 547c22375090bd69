//! MJPEG frames made by a real encoder (ffmpeg's `mjpeg`), decoded by `source::v4l2::mjpeg`
//! and compared with ffmpeg's own decode of the same file (`-f rawvideo -pix_fmt yuv420p`:
//! video range, like ours).
//!
//! Bounds (PSNR over the even-cropped picture): Y ≥ 60 dB (we see 70–76 dB: ±1 rounding of
//! the range conversion), Cb and Cr ≥ 36 dB (we see 38–47 dB). Chroma differs more: zune-jpeg
//! upsamples the JPEG's chroma before we take it back to 4:2:0 (undoing most of that blur, see
//! `finish_chroma`), while ffmpeg hands 4:2:0 chroma through untouched and resamples 4:2:2 and
//! 4:4:4 with its own filter. testsrc2's saturated colour edges are the worst case for that.
//!
//! The frames come in 4:2:0 and 4:2:2 (and 4:4:4), with even and odd sizes, with their
//! Huffman tables (ffmpeg's `-huffman default`: the standard ones, as cameras use, and
//! `optimal`: per-frame ones) and with every DHT segment stripped, as many UVC cameras send
//! them. ffmpeg must be installed (tests/run installs it): without it these tests fail.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pinhole::source::v4l2::mjpeg::{self, Decoder, I420Frame, MjpegError};

const Y_MIN_DB: f64 = 60.0;
const CHROMA_MIN_DB: f64 = 36.0;

fn ffmpeg(args: &[&str]) -> Vec<u8> {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-loglevel", "error", "-nostdin"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run ffmpeg ({e}): these tests need it (tests/run installs it; apt-get install ffmpeg)")
        });
    assert!(
        out.status.success(),
        "ffmpeg {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn workdir() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("mjpeg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a scratch directory");
    dir
}

/// One testsrc2 picture (colour bars, gradients, text, moving shapes) as a JPEG file.
fn encode(dir: &Path, width: usize, height: usize, pix_fmt: &str, huffman: &str) -> PathBuf {
    let path = dir.join(format!("{width}x{height}-{pix_fmt}-{huffman}.jpg"));
    ffmpeg(&[
        "-y",
        "-f",
        "lavfi",
        "-i",
        // testsrc2 makes even sizes only: an odd one is cropped from the next even one.
        &format!(
            "testsrc2=size={}x{}:rate=25,format=rgb24,crop={width}:{height}:0:0",
            width + width % 2,
            height + height % 2
        ),
        "-ss",
        "0.4",
        "-frames:v",
        "1",
        "-pix_fmt",
        pix_fmt,
        "-c:v",
        "mjpeg",
        "-q:v",
        "3",
        "-huffman",
        huffman,
        "-f",
        "image2",
        path.to_str().expect("utf-8 path"),
    ]);
    path
}

/// ffmpeg's decode of a JPEG file: planar 4:2:0, video range, chroma of odd sizes rounded up.
fn reference(path: &Path) -> Vec<u8> {
    ffmpeg(&[
        "-i",
        path.to_str().expect("utf-8 path"),
        "-f",
        "rawvideo",
        "-pix_fmt",
        "yuv420p",
        "-",
    ])
}

/// The frame with every DHT segment before its first scan removed: what a camera sends.
fn strip_tables(jpeg: &[u8]) -> Vec<u8> {
    let mut out = jpeg[..2].to_vec();
    let mut i = 2;
    loop {
        assert_eq!(jpeg[i], 0xFF, "segment walk lost its way at byte {i}");
        let marker = jpeg[i + 1];
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return out;
        }
        let end = i + 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if marker != 0xC4 {
            out.extend_from_slice(&jpeg[i..end]);
        }
        i = end;
    }
}

/// The Huffman tables the DHT segments before the first scan define: (class, id, BITS, HUFFVAL).
fn tables(jpeg: &[u8]) -> Vec<(u8, u8, Vec<u8>, Vec<u8>)> {
    let mut found = Vec::new();
    let mut i = 2;
    while jpeg[i + 1] != 0xDA {
        let end = i + 2 + usize::from(u16::from_be_bytes([jpeg[i + 2], jpeg[i + 3]]));
        if jpeg[i + 1] == 0xC4 {
            let mut p = i + 4;
            while p < end {
                let bits = jpeg[p + 1..p + 17].to_vec();
                let n: usize = bits.iter().map(|&b| usize::from(b)).sum();
                let values = jpeg[p + 17..p + 17 + n].to_vec();
                found.push((jpeg[p] >> 4, jpeg[p] & 15, bits, values));
                p += 17 + n;
            }
        }
        i = end;
    }
    found.sort();
    found
}

fn psnr(ours: &[u8], theirs: &[u8]) -> f64 {
    assert_eq!(ours.len(), theirs.len());
    let se: f64 = ours
        .iter()
        .zip(theirs)
        .map(|(&a, &b)| (f64::from(a) - f64::from(b)).powi(2))
        .sum();
    if se == 0.0 {
        return 99.0;
    }
    10.0 * (255.0 * 255.0 * ours.len() as f64 / se).log10()
}

/// Y, Cb and Cr PSNR of our picture against ffmpeg's `yuv420p` decode of a `width`x`height`
/// JPEG (ours is cropped to even sizes, ffmpeg's chroma planes are rounded up).
fn compare(ours: &I420Frame, theirs: &[u8], width: usize, height: usize) -> [f64; 3] {
    let (cw, ch) = (width.div_ceil(2), height.div_ceil(2));
    assert_eq!(
        theirs.len(),
        width * height + 2 * cw * ch,
        "ffmpeg's picture size"
    );
    assert_eq!((ours.width, ours.height), (width & !1, height & !1));
    let crop = |plane: &[u8], stride: usize, w: usize, h: usize| -> Vec<u8> {
        plane
            .chunks(stride)
            .take(h)
            .flat_map(|row| &row[..w])
            .copied()
            .collect()
    };
    let (y, rest) = theirs.split_at(width * height);
    let (u, v) = rest.split_at(cw * ch);
    let (ow, oh) = (ours.width, ours.height);
    [
        psnr(&ours.y, &crop(y, width, ow, oh)),
        psnr(&ours.u, &crop(u, cw, ow / 2, oh / 2)),
        psnr(&ours.v, &crop(v, cw, ow / 2, oh / 2)),
    ]
}

fn assert_close(what: &str, db: [f64; 3]) {
    eprintln!(
        "{what}: PSNR Y {:.1} dB, Cb {:.1} dB, Cr {:.1} dB",
        db[0], db[1], db[2]
    );
    assert!(
        db[0] >= Y_MIN_DB,
        "{what}: luma PSNR {:.1} dB < {Y_MIN_DB}",
        db[0]
    );
    for c in &db[1..] {
        assert!(
            *c >= CHROMA_MIN_DB,
            "{what}: chroma PSNR {c:.1} dB < {CHROMA_MIN_DB}"
        );
    }
}

#[test]
fn ffmpeg_frames_with_and_without_huffman_tables_match_ffmpegs_decode() {
    let dir = workdir();
    let mut decoder = Decoder::new();
    // Small but for one: board/build-aarch64 --test runs these under qemu-aarch64 too.
    let cases = [
        (640, 360, "yuvj420p"),
        (1280, 720, "yuvj422p"),
        (320, 240, "yuvj444p"),
        (321, 241, "yuvj420p"),
        (333, 188, "yuvj422p"),
    ];
    for (n, (w, h, fmt)) in cases.into_iter().enumerate() {
        // Per-frame ("optimal") tables for two of them: the path where a frame has its own.
        let huffmans: &[&str] = if n % 3 == 0 {
            &["default", "optimal"]
        } else {
            &["default"]
        };
        for &huffman in huffmans {
            let path = encode(&dir, w, h, fmt, huffman);
            let jpeg = std::fs::read(&path).expect("read the JPEG ffmpeg wrote");
            let what = format!("{w}x{h} {fmt} {huffman} tables");
            let ours = decoder
                .decode(&jpeg)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_close(&what, compare(&ours, &reference(&path), w, h));
            // The one-call entry point gives the same picture as the reused decoder.
            assert_eq!(mjpeg::decode(&jpeg).expect("decode"), ours, "{what}");
            if huffman != "default" {
                continue; // per-frame tables: stripping them leaves an undecodable frame
            }

            // Without its tables, as a UVC camera sends it.
            let bare = strip_tables(&jpeg);
            assert!(bare.len() < jpeg.len());
            assert!(tables(&bare).is_empty(), "{what}: stripping left a DHT");
            let what = format!("{w}x{h} {fmt} without DHT");
            // zune-jpeg alone refuses it (no AVI1 marker here): our insertion is what works.
            assert!(
                zune_jpeg::JpegDecoder::new(zune_core::bytestream::ZCursor::new(&bare[..]))
                    .decode()
                    .is_err(),
                "{what}: zune-jpeg decoded it without tables"
            );
            // The inserted tables are exactly the ones ffmpeg's encoder used (T.81 K.3).
            let fixed = mjpeg::with_standard_tables(&bare).expect("insert tables");
            assert_eq!(
                tables(&fixed),
                tables(&jpeg),
                "{what}: inserted tables differ"
            );
            let ours_bare = decoder
                .decode(&bare)
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            assert_eq!(
                ours_bare, ours,
                "{what}: differs from the frame with tables"
            );
            // ffmpeg decodes the bare file with the same standard tables.
            let bare_path = dir.join(format!("{w}x{h}-{fmt}-bare.jpg"));
            std::fs::write(&bare_path, &bare).expect("write the bare JPEG");
            assert_close(&what, compare(&ours_bare, &reference(&bare_path), w, h));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn truncated_and_garbled_ffmpeg_frames_fail_alone() {
    let dir = workdir().join("broken");
    std::fs::create_dir_all(&dir).expect("scratch directory");
    let jpeg = std::fs::read(encode(&dir, 320, 240, "yuvj422p", "default")).expect("read");
    let bare = strip_tables(&jpeg);
    let mut decoder = Decoder::new();
    let good = decoder.decode(&bare).expect("the whole frame decodes");
    let sos = mjpeg::scan_headers(&bare).expect("headers").sos_at;

    // Cut anywhere — in the headers, in the scan, just before EOI — it is an error for that
    // frame; the next whole frame decodes as before (checked after every tenth cut and at the
    // end: a debug-build decode costs milliseconds).
    let mut cuts: Vec<usize> = (0..sos + 20).step_by(3).collect();
    cuts.extend((sos..bare.len()).step_by(97));
    cuts.extend(bare.len() - 3..bare.len());
    for (n, &cut) in cuts.iter().enumerate() {
        let e = decoder
            .decode(&bare[..cut])
            .expect_err("a truncated frame is an error");
        assert!(
            matches!(
                e,
                MjpegError::NotJpeg { .. }
                    | MjpegError::Truncated { .. }
                    | MjpegError::Malformed { .. }
            ),
            "cut at {cut}: {e}"
        );
        if n % 10 == 9 {
            assert_eq!(decoder.decode(&bare).expect("next frame"), good);
        }
    }
    assert_eq!(decoder.decode(&bare).expect("next frame"), good);

    // Garbled: bytes overwritten in the headers or the scan, random tails, a frame glued to
    // half of another. Each is an error or some picture, never a panic.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut errors = 0;
    for round in 0..150 {
        let mut bytes = bare.clone();
        match round % 3 {
            0 => {
                for _ in 0..1 + next() % 8 {
                    let at = (next() % bytes.len() as u64) as usize;
                    bytes[at] = next() as u8;
                }
            }
            1 => {
                let at = sos + (next() % (bytes.len() - sos) as u64) as usize;
                bytes.truncate(at);
                bytes.extend((0..next() % 5000).map(|_| next() as u8));
            }
            _ => {
                let at = (next() % bytes.len() as u64) as usize;
                bytes.truncate(at);
                bytes.extend_from_slice(&bare);
            }
        }
        match decoder.decode(&bytes) {
            Err(MjpegError::DecoderPanicked { .. }) => panic!("round {round}: decoder panicked"),
            Err(_) => errors += 1,
            Ok(pic) => assert_eq!((pic.width, pic.height), (320, 240), "round {round}"),
        }
        if round % 10 == 9 {
            assert_eq!(decoder.decode(&bare).expect("next frame"), good);
        }
    }
    eprintln!("garbled frames: {errors} of 150 were errors, the rest decoded to some picture");
    assert!(
        errors > 50,
        "only {errors} of 150 garbled frames were errors"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
