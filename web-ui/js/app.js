// pinhole's player: picks a mode, wires the stream to it and keeps the status line current.
//
// Modes (the select in the bar; `?mode=` in the URL; remembered in localStorage):
//   chunked     fetch of /api/video/cmaf → MSE (ManagedMediaSource where present)
//   webcodecs   the same stream → VideoDecoder → canvas (secure contexts only)
//   compat      /hls/stream.m3u8: LL-HLS parts → MSE, or the browser's native HLS
// auto = chunked where MSE exists, else compat; a chunked stream that fails moves to compat.
// In compat mode the LL-HLS part follower feeds MSE where MSE exists; native HLS is used where
// it does not (`?hls=native` / `?hls=parts` force one).
//
// window.pinhole exposes the player's state for tests and the latency benchmark.

import { Clock } from './clock.js';
import { LlHlsFollower, parsePlaylist } from './llhls.js';
import { MsePlayer } from './mse.js';
import { StatusPoller } from './status.js';
import { CmafStream } from './stream.js';
import { WebCodecsPlayer } from './webcodecs.js';

const $ = (id) => document.getElementById(id);
const video = $('video');
const canvas = $('canvas');
const params = new URLSearchParams(location.search);
// Under /streams/NAME/ the page plays that camera; at / the first one.
const BASE = (location.pathname.match(/^\/streams\/[A-Za-z0-9_-]+(?=\/)/) || [''])[0];
const num = (k) => (params.has(k) && Number.isFinite(Number(params.get(k))) ? Number(params.get(k)) : undefined);

const S = {
  mode: null, submode: '', frames: 0, firstFrameMs: null, latencyMs: null, bytes: 0,
  connections: 0, errors: [], offline: false, lastFrameAt: 0, method: null, jumps: 0,
  marks: {}, // first time (performance.now()) of each start-up step, for the benchmark
  recoveries: [], // the stall watchdog's actions: {at (performance.now()), stage, stalledMs}
};
window.pinhole = S;

const clock = new Clock();
clock.keepMeasuring();

let current = null; // {stop(), captureNow(), dropped(), size()}

function mseAvailable() {
  return MsePlayer.supported();
}

function nativeHls() {
  return video.canPlayType('application/vnd.apple.mpegurl') !== '';
}

function pickMode(want) {
  if (want === 'webcodecs' && WebCodecsPlayer.supported()) return 'webcodecs';
  if (want === 'compat') return 'compat';
  if (want === 'chunked' && mseAvailable()) return 'chunked';
  return mseAvailable() ? 'chunked' : 'compat';
}

function noteError(e) {
  const m = String(e && e.message ? e.message : e);
  S.errors.push(m);
  if (S.errors.length > 50) S.errors.shift();
}

// Notes the first time a start-up step happened.
function mark(step) {
  if (S.marks[step] === undefined) S.marks[step] = Math.round(performance.now());
}

function frameShown() {
  const now = performance.now();
  mark('frame');
  if (S.firstFrameMs === null) S.firstFrameMs = now;
  S.frames++;
  S.lastFrameAt = now;
  W.pictureCT = video.currentTime;
  fpsTimes.push(now);
}
const fpsTimes = [];
const byteTimes = [];
function countBytes(n) {
  S.bytes += n;
  byteTimes.push([performance.now(), n]);
}

// Counts frames the video element presents (requestVideoFrameCallback where it exists).
function watchVideoFrames() {
  if (video.requestVideoFrameCallback) {
    const cb = () => { frameShown(); video.requestVideoFrameCallback(cb); };
    video.requestVideoFrameCallback(cb);
  } else {
    let last = -1;
    setInterval(() => { if (video.currentTime !== last) { last = video.currentTime; frameShown(); } }, 33);
  }
}
watchVideoFrames();

function startChunked() {
  mark('start');
  const player = new MsePlayer(video, {
    lagMs: num('lag'), slackMs: num('slack'), safetyMs: num('safety'), trim: params.get('trim'),
    catchUpRate: num('catchup'),
    onMark: mark,
    onFatal: (e) => { noteError(e); if (autoMode) switchTo('compat'); },
    onError: noteError,
    onNeedRestart: () => { stream.stop(); stream.start(); },
    // ManagedMediaSource's endstreaming: no bytes until startstreaming (onNeedRestart), which
    // reconnects at the server's newest IDR: no backlog to catch up on.
    onSuspend: () => stream.stop(),
  });
  let records = 0;
  const stream = new CmafStream(`${BASE}/api/video/cmaf`, {
    onConnect: (n, method) => { S.connections = n; S.method = method; mark('connected'); },
    onBytes: countBytes,
    onDisconnect: noteError,
    onRecord: (rec, first) => {
      mark(first ? 'init' : 'fragment');
      records++;
      if (first) player.onInit(rec, true);
      else if (isInitRecord(rec)) player.onInit(rec, false);
      else { fragmentArrived(); player.onFragment(rec); }
    },
  });
  stream.start();
  // auto: a chunked stream that never starts (GET and POST both held back) → compatibility mode
  const giveUp = setTimeout(() => { if (autoMode && records === 0 && !S.offline) switchTo('compat'); }, 12000);
  return {
    stop: () => { clearTimeout(giveUp); stream.stop(); player.destroy(); },
    captureNow: () => player.captureAt(video.currentTime),
    dropped: () => player.dropped(),
    size: () => [video.videoWidth, video.videoHeight],
    nudge: () => player.nudge(),
    suspended: () => !player.streaming,
    player,
  };
}

function isInitRecord(rec) {
  // ftyp or moov first: an in-band init segment
  const t = String.fromCharCode(rec[4], rec[5], rec[6], rec[7]);
  return t === 'ftyp' || t === 'moov';
}

function startWebCodecs() {
  const player = new WebCodecsPlayer(canvas, { onFrame: frameShown, pace: params.get('pace') });
  const stream = new CmafStream(`${BASE}/api/video/cmaf`, {
    onConnect: (n, method) => { S.connections = n; S.method = method; },
    onBytes: countBytes,
    onDisconnect: noteError,
    onRecord: (rec, first) => {
      if (first || isInitRecord(rec)) player.onInit(rec);
      else { fragmentArrived(); player.onFragment(rec); }
    },
  });
  stream.start();
  return {
    stop: () => { stream.stop(); player.destroy(); },
    captureNow: () => player.lastCapture,
    dropped: () => player.dropped,
    size: () => [player.width, player.height],
    player,
  };
}

function startCompat() {
  // Native HLS where the browser has no MSE (iPhones before iOS 17.1) or when asked for
  // (?hls=native). With MSE the own part follower wins: Chromium's native player, for one,
  // stays HOLD-BACK (3 s) behind, while the follower plays parts as they are cut.
  // `?hls=native` is honoured even where canPlayType says '' (WebKitGTK plays HLS through
  // GStreamer's hlsdemux yet answers '' for the HLS types): the engine is asked, not guessed.
  const hls = params.get('hls');
  if (!noNativeHls && (hls === 'native' || (nativeHls() && !mseAvailable() && hls !== 'parts'))) {
    S.submode = 'native HLS';
    video.src = `${BASE}/hls/stream.m3u8`;
    video.play().catch(() => {});
    // The native player's timeline starts (currentTime 0) at the segment where it began
    // playing: the last one that starts HOLD-BACK or more before the live edge of the playlist
    // it loaded. Read the same playlist now and take that segment's PROGRAM-DATE-TIME as the
    // origin. An estimate (the player may have seen a playlist a part older or newer): shown ≈.
    let origin = null;
    const readOrigin = async () => {
      try {
        const r = await fetch(`${BASE}/hls/stream.m3u8`, { cache: 'no-store' });
        const pl = parsePlaylist(await r.text());
        const limit = pl.pdtEnd - (pl.holdBackS ?? 3) * 1000;
        const before = pl.pdts.filter((t) => t <= limit);
        origin = before.length ? before[before.length - 1] : pl.firstPdt;
      } catch (e) { noteError(e); }
    };
    readOrigin();
    // Chromium's native HLS player sometimes gives up (MEDIA_ERR_SRC_NOT_SUPPORTED) right
    // after its first frame, and any native player fails when pinhole goes away: start over.
    let retry = null;
    const onError = () => {
      noteError(video.error ? `video error ${video.error.code}` : 'video error');
      if (!nativeHls() && mseAvailable() && S.firstFrameMs === null) {
        // asked for, but the engine has no HLS player after all (WebKitGTK without
        // WEBKIT_GST_ENABLE_HLS_SUPPORT=1): the part follower instead of a black page
        noteError('no native HLS in this browser: playing LL-HLS parts');
        noNativeHls = true;
        setTimeout(() => switchTo('compat'), 0);
        return;
      }
      clearTimeout(retry);
      retry = setTimeout(() => { video.src = `${BASE}/hls/stream.m3u8`; readOrigin(); video.play().catch(() => {}); }, 1000);
    };
    video.addEventListener('error', onError);
    return {
      stop: () => { clearTimeout(retry); video.removeEventListener('error', onError); video.removeAttribute('src'); video.load(); },
      captureNow: () => (origin !== null && video.currentTime > 0 ? origin + video.currentTime * 1000 : null),
      dropped: () => video.getVideoPlaybackQuality?.().droppedVideoFrames ?? 0,
      size: () => [video.videoWidth, video.videoHeight],
    };
  }
  if (!mseAvailable()) {
    showMessage('This browser has neither MSE nor native HLS: no way to play the stream.');
    return { stop() {}, captureNow: () => null, dropped: () => 0, size: () => [0, 0] };
  }
  S.submode = nativeFroze ? 'LL-HLS parts; native HLS froze' : 'LL-HLS parts';
  const player = new MsePlayer(video, {
    lagMs: num('lag') ?? 150, slackMs: num('slack'), safetyMs: num('safety'),
    onFatal: noteError,
    onError: noteError,
    onNeedRestart: () => { follower.stop(); follower.start(); },
    onSuspend: () => follower.stop(),
  });
  const follower = new LlHlsFollower(`${BASE}/hls/`, {
    onInit: (b, fresh) => player.onInit(b, fresh),
    onFragment: (b) => { fragmentArrived(); player.onFragment(b); },
    onBytes: countBytes,
    onConnect: () => { S.connections++; },
    onError: noteError,
  });
  follower.start();
  return {
    stop: () => { follower.stop(); player.destroy(); },
    captureNow: () => player.captureAt(video.currentTime),
    dropped: () => player.dropped(),
    size: () => [video.videoWidth, video.videoHeight],
    nudge: () => player.nudge(),
    suspended: () => !player.streaming,
    player,
  };
}

let autoMode = true;
let modeStartedAt = 0;
let noNativeHls = false;
let nativeFroze = false; // the engine's HLS player stopped presenting pictures: see nativeWatchdog

function switchTo(mode) {
  if (current) current.stop();
  modeStartedAt = performance.now();
  S.mode = mode;
  S.submode = '';
  S.latencyMs = null;
  document.body.dataset.mode = mode;
  video.hidden = mode === 'webcodecs';
  canvas.hidden = mode !== 'webcodecs';
  $('mode').value = autoMode ? 'auto' : mode;
  current = mode === 'webcodecs' ? startWebCodecs() : mode === 'compat' ? startCompat() : startChunked();
}

function showMessage(text) {
  const m = $('message');
  m.textContent = text || '';
  m.hidden = !text;
}

// --- status line -----------------------------------------------------------------------------

function fmtRate(bps) {
  return bps >= 1e6 ? `${(bps / 1e6).toFixed(1)} Mbit/s` : `${Math.round(bps / 1e3)} kbit/s`;
}

function updateStatus() {
  const now = performance.now();
  while (fpsTimes.length && now - fpsTimes[0] > 1000) fpsTimes.shift();
  while (byteTimes.length && now - byteTimes[0][0] > 2000) byteTimes.shift();
  const bps = (byteTimes.reduce((a, x) => a + x[1], 0) * 8) / 2;
  const capture = current ? current.captureNow() : null;
  S.latencyMs = capture !== null && capture !== undefined && clock.valid ? clock.serverNow() - capture : null;
  if (S.mode === 'webcodecs' && now - S.lastFrameAt > 1000) S.latencyMs = null;
  const [w, h] = current ? current.size() : [0, 0];
  S.jumps = current && current.player ? current.player.jumps ?? 0 : 0;
  S.dropped = current ? current.dropped() : 0;
  const label = { chunked: 'chunked CMAF', webcodecs: 'WebCodecs', compat: 'compat' }[S.mode] || '';
  const parts = [
    `${label}${S.submode ? ` (${S.submode})` : ''}`,
    w ? `${w}×${h}` : '—',
    `${fpsTimes.length} fps`,
    fmtRate(bps),
    `${S.dropped} dropped`,
    S.latencyMs === null ? 'latency …' : `latency ${S.submode === 'native HLS' ? '≈' : ''}${Math.round(S.latencyMs)} ms`,
  ];
  $('stats').textContent = parts.join(' · ');
  $('stats').title = clock.valid ? `clock offset ${clock.offsetMs.toFixed(1)} ms (rtt ${clock.rttMs.toFixed(1)} ms)` : '';
  const stale = S.lastFrameAt === 0 || now - S.lastFrameAt > 3000;
  if (S.offline && stale) showMessage(S.offlineMessage);
  else if (stale && S.firstFrameMs !== null) showMessage('Waiting for the picture…');
  else if (!stale) showMessage('');
}
setInterval(updateStatus, 500);

// --- stall watchdog --------------------------------------------------------------------------
//
// A picture that stopped while media keeps arriving is a stuck player, whatever the engine and
// whatever the cause (a WebKit MediaSource that closed after a seek during its preroll, see
// mse.js; a decoder that died without a word). Stage 1, after STALL_MS without a new picture:
// jump to the live edge and play (MSE modes; cheap, no reconnect). Stage 2, NUDGE_MS later and
// still nothing: start the mode over (a new MediaSource or decoder, a new connection from the
// server's newest IDR), which shows a picture again within a few hundred ms: back within 2 s of
// the stall. Never while the page is hidden (no frames are presented), the camera is offline,
// no fragments come (a heartbeat is no media; a source or network that stopped stops both), or
// ManagedMediaSource asked us to stop streaming. When fragments start to flow (the mode started,
// a reconnect) the first picture may take START_MS (a media pipeline starts slowly). Each
// new episode waits at least `backoff` after the last action, doubled per action up to MAX_BACKOFF_MS
// and reset after STEADY_MS of steady pictures: a device too slow to keep up (a starved CPU
// presents frames late, which looks like a stall) is not thrashed with restarts.
const STALL_MS = 900;
const NUDGE_MS = 700;
const START_MS = 2500;
const STEADY_MS = 10000;
const MAX_BACKOFF_MS = 20000;
const W = {
  stage: 0, stageAt: 0, lastAction: -Infinity, backoff: 0, steadySince: 0, lastFragment: 0, flowSince: 0,
  visibleAt: 0, lastCT: 0, movedAt: 0, pictureCT: 0,
};
document.addEventListener('visibilitychange', () => { W.visibleAt = performance.now(); W.stage = 0; });

// A media fragment reached the player (either mode's stream, or an LL-HLS part).
function fragmentArrived() {
  const now = performance.now();
  if (now - W.lastFragment > 1000) W.flowSince = now; // the flow (re)started
  W.lastFragment = now;
}

function stallWatchdog() {
  const now = performance.now();
  if (document.hidden) W.visibleAt = now; // (the tick may run before visibilitychange's listener)
  // The <video>'s playhead moving on by itself (not a seek) is progress too: an engine short of
  // CPU presents few pictures but plays on (its clock runs, late frames are dropped), and
  // restarting it would only cost more. The frozen picture had its playhead stopped as well.
  if (S.mode !== 'webcodecs') {
    const ct = video.currentTime;
    if (!video.seeking && !video.paused && ct > W.lastCT && ct - W.lastCT < 1) W.movedAt = now;
    W.lastCT = ct;
  }
  if (S.submode === 'native HLS') { nativeWatchdog(now); return; }
  const progressAt = S.mode === 'webcodecs' ? S.lastFrameAt : Math.max(S.lastFrameAt, W.movedAt);
  const since = Math.max(modeStartedAt, W.flowSince, W.visibleAt);
  const lastPicture = Math.max(progressAt, since);
  const pictureInFlow = progressAt > since;
  const limit = pictureInFlow ? STALL_MS : START_MS;
  if (now - S.lastFrameAt > 250) W.steadySince = now;
  if (now - W.steadySince > STEADY_MS) W.backoff = 0;
  // media still arriving, and for most of the stall the picture has stood still
  const flowing = now - W.lastFragment < 400 && W.lastFragment - lastPicture > 0.7 * limit;
  const idle = !current || document.hidden || S.offline || !flowing
    || (current.suspended && current.suspended());
  const stalledMs = Math.round(now - lastPicture);
  if (idle || stalledMs < limit) { W.stage = 0; return; }
  if (W.stage === 0 && now - W.lastAction < W.backoff) return; // a new episode waits its turn
  if (W.stage === 0 && current.nudge && current.nudge()) {
    recovered(now, 1, stalledMs);
    W.stage = 1;
    W.stageAt = now;
  } else if (W.stage === 0 || now - W.stageAt >= NUDGE_MS) {
    recovered(now, 2, stalledMs);
    W.stage = 0;
    switchTo(S.mode);
  }
}
setInterval(stallWatchdog, 100);

// Notes a watchdog action (window.pinhole.recoveries) and backs the next episode off.
function recovered(now, stage, stalledMs) {
  S.recoveries.push({ at: Math.round(now), stage, stalledMs });
  if (S.recoveries.length > 50) S.recoveries.shift();
  W.lastAction = now;
  W.backoff = Math.min(MAX_BACKOFF_MS, Math.max(1000, W.backoff * 2));
}

// The engine's own HLS player (`?hls=native`, or an iPhone without MSE) shows us no fragments,
// only pictures and its playhead. The failure it has been seen in: the playhead runs on at real
// time while no picture after the first is presented. That is WebKitGTK's native HLS — GStreamer's
// legacy hlsdemux under playbin — joining a live fMP4 playlist later than its first segments:
// it places the segment it starts at by the playlist (seconds since the window's first segment)
// while qtdemux stamps the pictures with their tfdt (seconds since pinhole's stream began), so
// the sink holds each picture until the clock has run for pinhole's uptime (gst-launch-1.0
// playbin shows the same: nothing rendered; playbin3's hlsdemux2 plays). No playlist can fix
// that for every viewer, so after NATIVE_STALL_MS of a running playhead and no new picture the
// page gives up on the engine's player: pinhole's own part follower where MSE exists (said in
// the status line, for the rest of the page's life), else the native player starts over.
const NATIVE_STALL_MS = 1200;
function nativeWatchdog(now) {
  const since = Math.max(modeStartedAt, W.visibleAt);
  const stalledMs = Math.round(now - Math.max(S.lastFrameAt, since));
  const ran = video.currentTime - (S.lastFrameAt > since ? W.pictureCT : 0);
  if (!current || document.hidden || S.offline || video.paused || video.seeking) return;
  if (stalledMs < NATIVE_STALL_MS || ran < 0.8 * (stalledMs / 1000)) return;
  if (now - W.lastAction < W.backoff) return;
  recovered(now, 'native', stalledMs);
  if (mseAvailable()) {
    noteError(`native HLS: no new picture in ${stalledMs} ms while its playhead ran; playing LL-HLS parts`);
    nativeFroze = true;
    noNativeHls = true;
  }
  switchTo('compat');
}

// The device line (an image built for a board: /api/status's optional `device` object): the
// version, the A/B slot it booted from, the last update, the SSH host key fingerprints (to
// compare with what ssh or pinhole-ota shows on a first connection), and a failed setup in
// plain view. Absent (pinhole run by hand) or malformed: nothing shown.
function showDevice(d) {
  const el = $('device');
  const str = (x) => (typeof x === 'string' && x ? x : null);
  if (!d || typeof d !== 'object') { el.hidden = true; return; }
  const parts = [];
  if (str(d.version)) parts.push(`pinhole ${d.version}`);
  if (d.slot === 'A' || d.slot === 'B') parts.push(`slot ${d.slot}`);
  if (str(d.last_update)) parts.push(`updated ${d.last_update}`);
  if (Array.isArray(d.ssh_host_keys)) {
    const keys = d.ssh_host_keys.filter((k) => str(k) && /^[A-Z0-9]+ SHA256:[A-Za-z0-9+/]+$/.test(k));
    if (keys.length) parts.push(`ssh ${keys.join(', ')}`);
  }
  el.textContent = parts.join(' · ');
  if (str(d.setup_error)) {
    const e = document.createElement('span');
    e.className = 'error';
    e.textContent = `setup failed: ${d.setup_error}`;
    if (parts.length) el.append(' · ');
    el.append(e);
  }
  el.hidden = !el.childNodes.length;
}

new StatusPoller((s) => {
  if (s.status) showDevice(s.status.device);
  S.offline = !s.online;
  S.offlineMessage = s.message;
  if (s.online && S.firstFrameMs === null) showMessage('');
  else if (!s.online && (S.lastFrameAt === 0 || performance.now() - S.lastFrameAt > 3000)) showMessage(s.message);
}, `${BASE}/api/status`).start();

// --- controls --------------------------------------------------------------------------------

$('mode').addEventListener('change', (e) => {
  const v = e.target.value;
  try { localStorage.setItem('pinhole.mode', v); } catch { /* private mode */ }
  autoMode = v === 'auto';
  switchTo(pickMode(autoMode ? 'auto' : v));
});
if (!WebCodecsPlayer.supported()) {
  const o = $('mode').querySelector('option[value="webcodecs"]');
  o.disabled = true;
  o.textContent += ' (needs HTTPS)';
}

// Several cameras: a picker that opens the chosen one's page (one player per page).
(async () => {
  try {
    const r = await fetch('/api/streams', { cache: 'no-store' });
    if (!r.ok) return;
    const list = (await r.json()).streams || [];
    if (list.length < 2) return;
    const sel = $('stream');
    for (const st of list) {
      const o = document.createElement('option');
      o.value = st.path;
      o.textContent = st.name;
      if ((BASE ? `${BASE}/` : list[0].path) === st.path) o.selected = true;
      sel.appendChild(o);
    }
    sel.parentElement.hidden = false;
    sel.addEventListener('change', () => { location.href = sel.value + location.search; });
  } catch { /* an older device: one camera */ }
})();

$('fullscreen').addEventListener('click', () => {
  const stage = $('stage');
  if (document.fullscreenElement) document.exitFullscreen();
  else if (stage.requestFullscreen) stage.requestFullscreen().catch(noteError);
  else if (video.webkitEnterFullscreen) video.webkitEnterFullscreen(); // iPhone
});

export function snapshotCanvas() {
  const src = S.mode === 'webcodecs' ? canvas : video;
  const w = S.mode === 'webcodecs' ? canvas.width : video.videoWidth;
  const h = S.mode === 'webcodecs' ? canvas.height : video.videoHeight;
  if (!w || !h) return null;
  const c = document.createElement('canvas');
  c.width = w;
  c.height = h;
  c.getContext('2d').drawImage(src, 0, 0, w, h);
  return c;
}

$('snapshot').addEventListener('click', () => {
  const c = snapshotCanvas();
  if (!c) return;
  c.toBlob((blob) => {
    if (!blob) return;
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = `pinhole-${new Date().toISOString().replace(/[:.]/g, '-')}.png`;
    document.body.appendChild(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(a.href), 10000);
  }, 'image/png');
});
S.snapshot = snapshotCanvas;
S.mediaSource = () => (current && current.player ? current.player.ms : null);
S.state = () => (current && current.player && current.player.state ? current.player.state() : null);
S.clock = clock;

// --- start -----------------------------------------------------------------------------------

let want = params.get('mode');
if (!want) {
  try { want = localStorage.getItem('pinhole.mode'); } catch { want = null; }
}
autoMode = !want || want === 'auto';
switchTo(pickMode(autoMode ? 'auto' : want));
