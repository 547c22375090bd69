// A small LL-HLS part follower for compatibility mode in browsers with MSE but no native HLS:
// it reads /hls/stream.m3u8, starts at the newest independent part, then fetches the preload
// hint (the server holds it until the part is cut) and reloads the playlist with
// _HLS_msn/_HLS_part (blocking reload). Parts are the very bytes of the chunked stream's
// fragments (prft+moof+mdat), so they go into the same MSE player.

export function parsePlaylist(text) {
  const out = { map: null, parts: [], hint: null, firstPdt: null, pdts: [], pdtEnd: null, holdBackS: null };
  let lastPdt = null;
  let sincePdt = 0;
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line.startsWith('#EXT-X-MAP:')) out.map = attr(line, 'URI');
    else if (line.startsWith('#EXT-X-SERVER-CONTROL:')) out.holdBackS = Number(attr(line, 'HOLD-BACK')) || null;
    else if (line.startsWith('#EXT-X-PROGRAM-DATE-TIME:')) {
      lastPdt = Date.parse(line.slice(25));
      if (out.firstPdt === null && Number.isFinite(lastPdt)) out.firstPdt = lastPdt;
      if (Number.isFinite(lastPdt)) out.pdts.push(lastPdt);
      sincePdt = 0;
    } else if (line.startsWith('#EXT-X-PART:')) {
      const uri = attr(line, 'URI');
      const id = partId(uri);
      if (id) out.parts.push({ ...id, uri, independent: attr(line, 'INDEPENDENT') === 'YES' });
      sincePdt += Number(attr(line, 'DURATION')) || 0;
    } else if (line.startsWith('#EXTINF:')) {
      // a complete segment: its parts (listed before it) already counted
    } else if (line.startsWith('#EXT-X-PRELOAD-HINT:') && attr(line, 'TYPE') === 'PART') {
      const uri = attr(line, 'URI');
      const id = partId(uri);
      if (id) out.hint = { ...id, uri };
    }
  }
  if (lastPdt !== null && Number.isFinite(lastPdt)) out.pdtEnd = lastPdt + sincePdt * 1000;
  return out;
}

function attr(line, name) {
  const m = line.match(new RegExp(`(?:^|[:,])${name}=("([^"]*)"|[^,]*)`));
  return m ? (m[2] ?? m[1]) : null;
}

function partId(uri) {
  const m = uri && uri.match(/part-(\d+)-(\d+)\.m4s/);
  return m ? { msn: Number(m[1]), idx: Number(m[2]) } : null;
}

const after = (a, b) => a.msn > b.msn || (a.msn === b.msn && a.idx > b.idx);

export class LlHlsFollower {
  // handlers: {onInit(bytes, fresh), onFragment(bytes), onBytes(n), onConnect(), onError(e)}
  constructor(base, handlers) {
    this.base = base.endsWith('/') ? base : base + '/';
    this.h = handlers;
    this.stopped = false;
    this.ctrl = null;
  }

  start() {
    this.stopped = false;
    this.run();
  }

  stop() {
    this.stopped = true;
    if (this.ctrl) this.ctrl.abort();
  }

  async get(path, binary) {
    const ctrl = new AbortController();
    this.ctrl = ctrl;
    const timer = setTimeout(() => ctrl.abort(), 8000);
    try {
      const r = await fetch(this.base + path, { cache: 'no-store', signal: ctrl.signal });
      if (r.status === 404) return null;
      if (!r.ok) throw new Error(`${path}: HTTP ${r.status}`);
      if (!binary) return await r.text();
      const b = new Uint8Array(await r.arrayBuffer());
      this.h.onBytes?.(b.length);
      return b;
    } finally {
      clearTimeout(timer);
    }
  }

  async run() {
    let backoff = 250;
    while (!this.stopped) {
      try {
        await this.follow();
      } catch (e) {
        if (this.stopped) return;
        this.h.onError?.(e);
      }
      await new Promise((r) => setTimeout(r, backoff));
      backoff = Math.min(4000, backoff * 2);
    }
  }

  async follow() {
    let map = null;
    let last = null;
    let fresh = true;
    let query = '';
    for (;;) {
      if (this.stopped) return;
      const text = await this.get('stream.m3u8' + query, false);
      if (text === null) throw new Error('no playlist');
      const pl = parsePlaylist(text);
      this.edge = { pdtEnd: pl.pdtEnd, at: Date.now() };
      if (pl.map && pl.map !== map) {
        const init = await this.get(pl.map, true);
        if (!init) throw new Error(`init ${pl.map} is gone`);
        map = pl.map;
        this.h.onInit(init, fresh);
        if (fresh) this.h.onConnect?.();
        fresh = false;
      }
      let todo;
      if (last === null) {
        const starts = pl.parts.filter((p) => p.independent);
        const s = starts[starts.length - 1];
        todo = s ? pl.parts.filter((p) => !after(s, p)) : [];
      } else {
        todo = pl.parts.filter((p) => after(p, last));
      }
      // all at once (a start from the newest independent part needs up to a segment of them),
      // appended in order
      const got = await Promise.all(todo.map((p) => this.get(p.uri, true)));
      todo.forEach((p, i) => { if (got[i]) { this.h.onFragment(got[i]); last = p; } });
      if (last === null) { query = ''; await new Promise((r) => setTimeout(r, 100)); continue; }
      if (pl.hint && after(pl.hint, last)) {
        const b = await this.get(pl.hint.uri, true); // held by the server until the part is cut
        if (b) {
          this.h.onFragment(b);
          last = pl.hint;
          query = `?_HLS_msn=${last.msn}&_HLS_part=${last.idx}`;
        } else {
          // the hinted part never came to be: the next part starts a new segment
          query = `?_HLS_msn=${last.msn + 1}&_HLS_part=0`;
        }
      } else {
        query = `?_HLS_msn=${last.msn}&_HLS_part=${last.idx + 1}`;
      }
    }
  }
}
