// Media Source Extensions player: init segments and fragments appended to one SourceBuffer of
// a ManagedMediaSource (iOS 17.1+, Safari) or a MediaSource, with live-edge control.
//
// Live edge: just before each append, the margin (buffered end − currentTime) is how close
// playback came to running dry. Its minimum over the last few seconds is the slack the player
// does not need, above SAFETY. Slack beyond SLACK is trimmed in one of two ways:
//   rate  (Chromium, Firefox) play 10 % faster until the margin is back at SAFETY: no seek, so
//         no decoder flush and no re-decode from the last IDR (a seek costs 6–30 ms of stall in
//         Chromium, which the next window had to trim again)
//   jump  (Safari, which re-buffers on every playbackRate change) seek forward by the slack
// `?trim=rate|jump` overrides the choice. A player far behind (a background tab, a stall) jumps
// to TARGET behind the end at once, in either way. Data further behind the playhead than
// KEEP_BEHIND_S is removed.
//
// WebKit (Safari, WebKitGTK) has a margin of its own: its MediaSource reports
// HAVE_FUTURE_DATA only while the buffered range runs more than its time fudge factor
// (2002/24000 s ≈ 83 ms, WebCore's MediaSource) past currentTime. Keeping SAFETY above it
// (95 ms, lag 125, the defaults until 2026-12-07) was meant to spare WebKit the waits below it,
// but measured it only made WebKit later: five 40 s runs each (bench/webkit_margins,
// bench/README.md), WebKitGTK chunked p50 186–210 ms with those margins against 126–138 ms
// with Chromium's (safety 20, lag 90), at 29.7–30 pictures a second, no stall recovery, quiet
// or with one core kept busy (137–146 ms). So WebKit gets Chromium's margins; the jump
// trimming keeps its wider slack (a seek costs WebKit more than a rate change costs Chromium).

import { find, parseFragment, parseInit, parsePrft } from './mp4.js';

const FAR_BEHIND_S = 1.0;
const HAVE_CURRENT_DATA = 2;
const KEEP_BEHIND_S = 6;
// A MediaSource's first picture within this of the playhead is at the playhead (the WebKit
// offset below puts it up to 1 ms after 0).
const PLAYHEAD_AT_START_S = 0.002;
const WINDOW_MS = 3000;
// Rate trimming: 10 % faster while the slack is above the band, back to 1 within 5 ms of it.
const CATCH_UP_RATE = 1.1;
const RATE_HYSTERESIS_S = 0.005;

function defaultTrim() {
  const ua = navigator.userAgent;
  const safari = /AppleWebKit/.test(ua) && !/Chrome|Chromium|CriOS|Edg|Android/.test(ua);
  return safari || (window.ManagedMediaSource && !window.MediaSource) ? 'jump' : 'rate';
}

export class MsePlayer {
  // opts: {onNeedRestart(), lagMs (target margin kept after a jump), slackMs}
  constructor(video, opts = {}) {
    this.video = video;
    this.opts = opts;
    // 'rate' trims slack by playing a little faster; 'jump' by seeking (Safari re-buffers on
    // every playbackRate change). Default: jump in Safari (and wherever ManagedMediaSource is
    // the only choice), rate elsewhere. A rate change costs nothing, so rate trims sooner.
    this.trim = opts.trim === 'rate' || opts.trim === 'jump' ? opts.trim : defaultTrim();
    const jump = this.trim === 'jump';
    this.targetS = (opts.lagMs ?? 90) / 1000;
    this.safetyS = (opts.safetyMs ?? 20) / 1000;
    this.slackS = (opts.slackMs ?? (jump ? 35 : 10)) / 1000;
    this.catchUpRate = opts.catchUpRate > 1 && opts.catchUpRate <= 2 ? opts.catchUpRate : CATCH_UP_RATE;
    this.ms = null;
    this.sb = null;
    this.queue = [];
    this.codec = null;
    this.timescale = 90000;
    this.init = null;
    this.pendingInit = null;
    this.times = []; // [{t (s, media), unixMs}] from prft
    // The element's timeline is the stream's media time plus this (WebKit: see pump()).
    this.offset = 0;
    this.offsetSet = false;
    this.margins = []; // [{at, m}]
    this.jumps = 0;
    this.lastTrim = 0;
    this.streaming = true;
    this.generation = 0;
    this.errors = [];
    this.events = []; // the last few things the player did, for pinhole.state() and the tests
    this.lastErrorRestart = 0;
    // A media error ends the MediaSource (it closes): start over with a new one and a new
    // connection, which begins at the server's newest IDR, instead of a frozen picture.
    this.onVideoError = () => {
      if (!this.url) return; // not our source (the page is switching modes)
      const e = this.video.error;
      this.error(`media error ${e ? `${e.code} ${e.message}` : ''}`);
      this.teardown();
      this.codec = null;
      const wait = Math.max(0, this.lastErrorRestart + 1000 - performance.now());
      clearTimeout(this.errorTimer);
      this.errorTimer = setTimeout(() => { this.lastErrorRestart = performance.now(); this.opts.onNeedRestart?.(); }, wait);
    };
    video.addEventListener('error', this.onVideoError);
  }

  // An error the page should know of (window.pinhole.errors, through opts.onError).
  error(m) {
    this.errors.push(m);
    if (this.errors.length > 50) this.errors.shift();
    this.opts.onError?.(m);
  }

  event(m) {
    this.events.push(`${Math.round(performance.now())} ${m}`);
    if (this.events.length > 30) this.events.shift();
  }

  static supported() {
    return !!(window.ManagedMediaSource || window.MediaSource);
  }

  // A new init segment; `fresh` when it opens a new connection.
  onInit(bytes, fresh) {
    const info = parseInit(bytes);
    const copy = bytes.slice();
    if (!this.sb || info.codec !== this.codec) {
      this.rebuild(info, copy);
    } else {
      // Decide at the first fragment whether the timeline continues (append) or restarted.
      this.pendingInit = { info, bytes: copy, fresh };
    }
    this.info = info;
  }

  onFragment(bytes) {
    if (!this.streaming) return; // ManagedMediaSource asked us to stop; resume at the next IDR
    const copy = bytes.slice();
    if (this.pendingInit) {
      const p = this.pendingInit;
      this.pendingInit = null;
      const start = firstDts(copy) / p.info.timescale + this.offset; // on the element's timeline
      this.event(`pendingInit fresh=${p.fresh} start=${start} end=${this.bufferedEnd()}`);
      if (p.fresh && (start < this.bufferedEnd() - 0.5 || start > this.bufferedEnd() + 30)) {
        this.rebuild(p.info, p.bytes); // pinhole restarted: a new timeline
      } else {
        this.timescale = p.info.timescale;
        this.queue.push({ data: p.bytes });
      }
    }
    const prft = parsePrft(copy);
    if (prft) {
      this.times.push({ t: prft.mediaTime / this.timescale, unixMs: prft.unixMs });
      if (this.times.length > 300) this.times.splice(0, this.times.length - 300);
    }
    if (this.sb && !this.sb.updating && this.queue.length === 0) this.noteMargin();
    this.queue.push({ data: copy, fragment: true });
    this.pump();
  }

  rebuild(info, initBytes) {
    this.event(`rebuild ${info.codec}`);
    this.teardown();
    const gen = ++this.generation;
    this.codec = info.codec;
    this.timescale = info.timescale;
    this.queue = [{ data: initBytes }];
    this.times = [];
    this.margins = [];
    this.started = false;
    this.offset = 0;
    this.offsetSet = false;
    this.streaming = true; // a new MediaSource wants data until it says otherwise
    const Managed = window.ManagedMediaSource;
    const MS = Managed || window.MediaSource;
    const ms = new MS();
    this.ms = ms;
    if (Managed) {
      // iOS: without this, ManagedMediaSource never opens (AirPlay needs an HLS alternative).
      this.video.disableRemotePlayback = true;
      // Only this MediaSource's events count. A ManagedMediaSource that closes fires
      // endstreaming (WebKit: monitorSourceBuffers → isClosed → setStreaming(false)), and the
      // one a reconnect discards (pinhole restarted: a new timeline, a new MediaSource) closes
      // just as the new one starts: its late endstreaming used to switch the new one's
      // streaming off for good — the other way the picture froze after a restart.
      ms.addEventListener('startstreaming', () => {
        if (gen !== this.generation) return;
        this.event('startstreaming');
        if (!this.streaming) {
          this.streaming = true;
          this.opts.onNeedRestart?.();
        }
      });
      ms.addEventListener('endstreaming', () => {
        if (gen !== this.generation) return;
        this.event('endstreaming');
        // The engine wants no more data for now (enough buffered, a policy, memory): stop
        // fetching, not only appending. startstreaming reconnects at the server's newest IDR
        // and the first append jumps to the live edge: no debt to play off.
        if (!this.streaming) return;
        this.streaming = false;
        this.opts.onSuspend?.();
      });
    }
    ms.addEventListener('sourceclose', () => this.event(`sourceclose${gen !== this.generation ? ' (old)' : ''}`));
    ms.addEventListener('sourceopen', () => {
      if (gen !== this.generation) return;
      this.opts.onMark?.('sourceopen');
      this.event('sourceopen');
      try {
        const sb = ms.addSourceBuffer(`video/mp4; codecs="${info.codec}"`);
        sb.mode = 'segments';
        sb.addEventListener('updateend', () => this.afterUpdate(gen));
        // the first picture of a preroll is up: the live-edge control may seek now
        this.video.addEventListener('loadeddata', () => this.afterUpdate(gen), { once: true });
        sb.addEventListener('error', () => this.error('SourceBuffer error'));
        this.sb = sb;
        this.pump();
      } catch (e) {
        this.errors.push(`addSourceBuffer: ${e.message}`); // onFatal tells the page
        this.opts.onFatal?.(e);
      }
    }, { once: true });
    this.url = URL.createObjectURL(ms);
    this.video.src = this.url;
  }

  teardown() {
    this.generation++;
    this.sb = null;
    this.queue = [];
    if (this.url) URL.revokeObjectURL(this.url);
    this.url = null;
    this.ms = null;
  }

  destroy() {
    clearTimeout(this.errorTimer);
    this.video.removeEventListener('error', this.onVideoError);
    this.teardown();
    this.video.removeAttribute('src');
    this.video.load();
  }

  // The stall watchdog's first step (app.js): to the live edge, and play. False when there is
  // nothing to nudge (no open MediaSource, its SourceBuffer gone, nothing buffered): the
  // watchdog then starts over at once.
  nudge() {
    const v = this.video;
    let b = null;
    try { b = this.sb && this.ms && this.ms.readyState === 'open' ? this.sb.buffered : null; } catch { b = null; }
    if (!this.started || !b || !b.length) return false;
    this.event('nudge');
    v.currentTime = Math.max(b.start(b.length - 1), b.end(b.length - 1) - this.targetS);
    if (v.playbackRate === 0) v.playbackRate = 1;
    this.jumps++;
    this.margins = [];
    v.play().catch(() => {});
    return true;
  }

  // What the engine says, for tests and for a look from the console (pinhole.state()).
  state() {
    const v = this.video;
    const ranges = [];
    let b = null;
    try { b = this.sb ? this.sb.buffered : null; } catch (e) { ranges.push(String(e.name)); }
    for (let i = 0; b && i < b.length; i++) ranges.push([b.start(i), b.end(i)]);
    return {
      rebuilds: this.generation, msState: this.ms ? this.ms.readyState : null, events: this.events,
      currentTime: v.currentTime, readyState: v.readyState, error: v.error ? `${v.error.code} ${v.error.message}` : null, paused: v.paused, seeking: v.seeking,
      playbackRate: v.playbackRate, duration: this.ms ? this.ms.duration : null, buffered: ranges,
      updating: this.sb ? this.sb.updating : null, mediaBuffered: [...Array(v.buffered.length).keys()].map((i) => [v.buffered.start(i), v.buffered.end(i)]), queued: this.queue.length, streaming: this.streaming,
      trim: this.trim, started: !!this.started,
    };
  }

  bufferedEnd() {
    try {
      const b = this.sb ? this.sb.buffered : null;
      return b && b.length ? b.end(b.length - 1) : 0;
    } catch {
      return 0; // the SourceBuffer went with its MediaSource (a media error): the error path restarts
    }
  }

  pump() {
    const sb = this.sb;
    if (!sb || sb.updating || !this.queue.length) return;
    const item = this.queue.shift();
    try {
      // WebKit (trim 'jump'): every MediaSource's first fragment goes where its playhead already
      // is (media time 0), so the engine prerolls from it and no seek is needed. A seek while
      // WebKit's GStreamer pipeline pushes its first samples fails it ("Failed to push buffer",
      // media error 4); the MediaSource rebuilt after that crawled at a few pictures a second
      // (buffered ranges of 0.2 s per GOP) until the page was reloaded. Seen in fresh-clone CI
      // runs and an nspawn root, both for a viewer joining a running stream and for one opened
      // when pinhole starts, and as often for a rebuilt MediaSource (pinhole restarted, a new
      // resolution, the watchdog starting over) as for the page's first.
      const startAtZero = this.trim === 'jump';
      if (item.fragment && !this.offsetSet && startAtZero && !startsWithKey(item.data)) {
        // WebKit drops pictures up to the next IDR anyway (a MediaSource rebuilt after a media
        // error, before the reconnect's first fragment): the offset is set from a keyframe.
        this.event('before the first keyframe: not appended');
        this.pump();
        return;
      }
      if (item.fragment && !this.offsetSet) {
        this.offsetSet = true;
        if (startAtZero) {
          // Rounded to whole milliseconds towards the fragment, so its first picture lands at
          // or just after 0, never a rounding error before it: a frame before
          // appendWindowStart (0) is dropped, and with it every picture up to the next IDR
          // (MSE's "need random access point"). An exact -tfdt/timescale did that whenever the
          // stream's time was not a round number of seconds (after a source restart's gap):
          // WebKit kept nothing of the first GOP, then failed the seek to the second.
          this.offset = -Math.floor((firstDts(item.data) / this.timescale) * 1000) / 1000;
          sb.timestampOffset = this.offset;
          this.event(`timestampOffset ${this.offset}`);
        }
      }
      if (item.remove) sb.remove(item.remove[0], item.remove[1]);
      else sb.appendBuffer(item.data);
    } catch (e) {
      if (e.name === 'QuotaExceededError') {
        const t = this.video.currentTime;
        this.queue.unshift(item);
        this.queue.unshift({ remove: [0, Math.max(0, t - 1)] });
      } else {
        this.errors.push(`append: ${e.message}`); // onFatal tells the page
        this.opts.onFatal?.(e);
      }
    }
  }

  noteMargin() {
    const v = this.video;
    if (!this.started || v.paused || v.seeking) return;
    const m = this.bufferedEnd() - v.currentTime;
    const now = performance.now();
    this.margins.push({ at: now, m });
    while (this.margins.length && now - this.margins[0].at > WINDOW_MS) this.margins.shift();
  }

  afterUpdate(gen) {
    if (gen !== this.generation || !this.sb) return;
    const v = this.video;
    let b;
    try {
      b = this.sb.buffered;
    } catch {
      return; // removed with its MediaSource (a media error): onVideoError starts over
    }
    if (b.length) {
      const end = b.end(b.length - 1);
      const start = b.start(b.length - 1);
      const t = v.currentTime;
      const now = performance.now();
      if (v.readyState < HAVE_CURRENT_DATA && t >= start - PLAYHEAD_AT_START_S && t <= end) {
        // The engine is prerolling from data at the playhead: no seek until its first picture
        // is up ('loadeddata' brings us back here). This is what a stream that has just begun
        // needs (pinhole started or restarted: the first fragment sits at media time 0, where
        // a new MediaSource's playhead already is, and the next ones may come in a burst):
        // WebKit's GStreamer pipeline fails a seek that flushes it while it pushes its first
        // samples ("Failed to push buffer", MEDIA_ERR_SRC_NOT_SUPPORTED, the MediaSource
        // closes), which was the picture frozen at currentTime 0.01. A viewer joining a stream
        // that runs is not affected: its first fragment starts past the playhead, so nothing is
        // prerolled before the first seek.
        if (!this.started) this.event(`no seek at start: t ${t} in [${start},${end}] readyState ${v.readyState}`);
        this.started = true;
        this.margins = [];
      } else if (!this.started || t < start - PLAYHEAD_AT_START_S || end - t > FAR_BEHIND_S) {
        // start, a gap (the source was away), or far behind: to the live edge now
        if (end - start > 0) {
          this.opts.onMark?.('seek');
          this.event(`seek ${t} -> ${Math.max(start, end - this.targetS)} [${start},${end}]`);
          v.currentTime = Math.max(start, end - this.targetS);
          if (this.started) this.jumps++;
          this.started = true;
          this.margins = [];
        }
      } else if (this.trim === 'rate' && this.margins.length >= 3) {
        // The smallest margin lately (the newest ones when it is shrinking) against the band.
        const minM = Math.min(...this.margins.map((x) => x.m));
        const want = minM > this.safetyS + this.slackS ? this.catchUpRate
          : minM <= this.safetyS + RATE_HYSTERESIS_S ? 1 : v.playbackRate;
        if (want !== v.playbackRate) {
          v.playbackRate = want;
        }
      } else if (this.margins.length >= 10 && now - this.margins[0].at > WINDOW_MS * 0.8) {
        const minM = Math.min(...this.margins.map((x) => x.m));
        if (minM > this.safetyS + this.slackS) {
          v.currentTime = t + (minM - this.safetyS);
          this.jumps++;
          this.margins = [];
        }
      }
      if (v.paused && this.started) v.play().catch(() => {});
      if (now - this.lastTrim > 2000 && t - b.start(0) > KEEP_BEHIND_S + 2) {
        this.lastTrim = now;
        this.queue.push({ remove: [0, t - KEEP_BEHIND_S] });
      }
    }
    this.pump();
  }

  // Capture wall-clock time (Unix ms) of the picture at media time t, from the prft boxes.
  captureAt(elementTime) {
    const t = elementTime - this.offset; // the stream's own media time
    let best = null;
    for (const x of this.times) if (x.t <= t + 1e-6 && (!best || x.t > best.t)) best = x;
    return best ? best.unixMs + (t - best.t) * 1000 : null;
  }

  dropped() {
    const q = this.video.getVideoPlaybackQuality?.();
    return q ? q.droppedVideoFrames : 0;
  }
}

// Whether a fragment's first sample is a sync sample (an IDR); a fragment that does not parse
// counts as one (the engine will say what it thinks of it).
function startsWithKey(buf) {
  try {
    const samples = parseFragment(buf);
    return !samples.length || samples[0].key;
  } catch {
    return true;
  }
}

// tfdt of the first traf of a fragment, in its timescale.
export function firstDts(buf) {
  const tfdt = find(buf, ['moof', 'traf', 'tfdt']);
  if (!tfdt) return 0;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  return buf[tfdt.body] === 1 ? Number(dv.getBigUint64(tfdt.body + 4)) : dv.getUint32(tfdt.body + 4);
}
