//! Per-frame cost of `source::v4l2::mjpeg`: MJPEG → I420 (video range), as a camera's
//! frames arrive. Driven by `bench/mjpeg`, which makes the JPEG files with ffmpeg; run it by
//! hand with `cargo run --release --example mjpeg_bench -- FILE.jpg...` (`--help` for more).
//!
//! For each file it times, single-threaded, after a warm-up:
//! - `decode_into`: one reused `Decoder` and output picture (what a capture loop does),
//! - `decode`: the one-call entry point (fresh buffers every frame),
//! - zune-jpeg alone to interleaved YCbCr (the decoder's share of the first line).
//!
//! With `--bare`, every DHT segment is removed first, as many UVC cameras send their frames,
//! so the standard-table insertion is part of what is timed.
//!
//! Each decode is timed twice: wall clock, and the thread's CPU time
//! (`CLOCK_THREAD_CPUTIME_ID`), which leaves out the time the thread waited for a core — on a
//! machine shared with other builds, the CPU figure is the steadier one.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use nix::time::{clock_gettime, ClockId};
use pinhole::source::v4l2::mjpeg::{self, Decoder, I420Frame};
use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_jpeg::JpegDecoder;

const HELP: &str = "\
usage: mjpeg_bench [--iterations N] [--bare] FILE.jpg...

Times MJPEG decode + conversion to I420 per frame (pinhole's source::v4l2::mjpeg).
  --iterations N   timed decodes per file and method (default 200; 20 warm-up first)
  --bare           strip the JPEG's Huffman tables first, as UVC cameras send frames
Prints one line per file and method: wall-clock median, 95th percentile and minimum, and the
median of the thread's CPU time, in ms.";

fn main() -> anyhow::Result<()> {
    let mut iterations = 200usize;
    let mut bare = false;
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => {
                println!("{HELP}");
                return Ok(());
            }
            "--bare" => bare = true,
            "--iterations" => {
                let n = args.next().context("--iterations needs a number")?;
                iterations = n.parse().with_context(|| format!("--iterations {n:?}"))?;
                if iterations == 0 {
                    bail!("--iterations must be at least 1");
                }
            }
            a if a.starts_with('-') => bail!("unknown option {a} (see --help)"),
            file => files.push(file.to_owned()),
        }
    }
    if files.is_empty() {
        bail!("no JPEG files given (see --help)");
    }
    for file in files {
        let mut jpeg = std::fs::read(&file).with_context(|| format!("read {file}"))?;
        if bare {
            jpeg = strip_tables(&jpeg).with_context(|| format!("{file}: strip DHT"))?;
        }
        let mut decoder = Decoder::new();
        let mut out = I420Frame::new(0, 0);
        decoder
            .decode_into(&jpeg, &mut out)
            .with_context(|| format!("{file}: decode"))?;
        let what = format!(
            "{file} ({}x{}, {} KiB{})",
            out.width,
            out.height,
            jpeg.len() / 1024,
            if bare { ", no DHT" } else { "" }
        );
        let reused = time(iterations, || {
            decoder.decode_into(&jpeg, &mut out).map(|_| ())
        })?;
        report(&what, "decode_into (reused buffers)", &reused);
        let fresh = time(iterations, || mjpeg::decode(&jpeg).map(|_| ()))?;
        report(&what, "decode (fresh buffers)", &fresh);
        // zune-jpeg alone needs the tables in the stream.
        let with_tables = mjpeg::with_standard_tables(&jpeg)?.into_owned();
        let mut pixels = Vec::new();
        let zune = time(iterations, || {
            let options = DecoderOptions::default().jpeg_set_out_colorspace(ColorSpace::YCbCr);
            let mut d = JpegDecoder::new_with_options(ZCursor::new(&with_tables[..]), options);
            d.decode_headers()?;
            pixels.resize(d.output_buffer_size().unwrap_or(0), 0);
            d.decode_into(&mut pixels)
        })?;
        report(&what, "zune-jpeg alone to YCbCr", &zune);
    }
    Ok(())
}

/// Wall-clock and thread-CPU durations of each timed call, each list sorted.
struct Times {
    wall: Vec<Duration>,
    cpu: Vec<Duration>,
}

fn thread_cpu() -> anyhow::Result<Duration> {
    Ok(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
        .context("clock_gettime(CLOCK_THREAD_CPUTIME_ID)")?
        .into())
}

fn time<E: std::error::Error + Send + Sync + 'static>(
    iterations: usize,
    mut f: impl FnMut() -> Result<(), E>,
) -> anyhow::Result<Times> {
    for _ in 0..20 {
        f()?;
    }
    let mut times = Times {
        wall: Vec::with_capacity(iterations),
        cpu: Vec::with_capacity(iterations),
    };
    for _ in 0..iterations {
        let (t, c) = (Instant::now(), thread_cpu()?);
        f()?;
        times.cpu.push(thread_cpu()?.saturating_sub(c));
        times.wall.push(t.elapsed());
    }
    times.wall.sort();
    times.cpu.sort();
    Ok(times)
}

fn report(what: &str, method: &str, times: &Times) {
    let pick = |sorted: &[Duration], q: f64| {
        sorted[((sorted.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3
    };
    println!(
        "{what}  {method:<30} wall median {:6.2} ms  p95 {:6.2}  min {:6.2}  | cpu median {:6.2} ms",
        pick(&times.wall, 0.5),
        pick(&times.wall, 0.95),
        pick(&times.wall, 0.0),
        pick(&times.cpu, 0.5),
    );
}

/// The JPEG without its DHT segments (those before the first scan).
fn strip_tables(jpeg: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = jpeg.get(..2).context("too short")?.to_vec();
    let mut i = 2;
    loop {
        let (Some(&ff), Some(&marker)) = (jpeg.get(i), jpeg.get(i + 1)) else {
            bail!("no start of scan");
        };
        if ff != 0xFF {
            bail!("no marker at byte {i}");
        }
        if marker == 0xDA {
            out.extend_from_slice(&jpeg[i..]);
            return Ok(out);
        }
        let len = jpeg.get(i + 2..i + 4).context("cut in a segment length")?;
        let end = i + 2 + usize::from(u16::from_be_bytes([len[0], len[1]]));
        let segment = jpeg.get(i..end).context("cut in a segment")?;
        if marker != 0xC4 {
            out.extend_from_slice(segment);
        }
        i = end;
    }
}
