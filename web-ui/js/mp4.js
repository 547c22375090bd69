// Just enough ISO BMFF (14496-12) to play pinhole's CMAF: box walking, the codec and avcC of
// the init segment, the prft capture time and the samples of a moof+mdat fragment.

const CONTAINERS = new Set(['moov', 'trak', 'mdia', 'minf', 'stbl', 'moof', 'traf', 'mvex', 'dinf']);

// Top-level boxes of buf (a Uint8Array): [{type, start, size, body}] (body: offset of content).
export function boxes(buf, start = 0, end = buf.length) {
  const out = [];
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let off = start;
  while (off + 8 <= end) {
    let size = dv.getUint32(off);
    const type = String.fromCharCode(buf[off + 4], buf[off + 5], buf[off + 6], buf[off + 7]);
    let body = off + 8;
    if (size === 1) {
      if (off + 16 > end) break;
      size = Number(dv.getBigUint64(off + 8));
      body = off + 16;
    } else if (size === 0) {
      size = end - off;
    }
    if (size < body - off || off + size > end) break;
    out.push({ type, start: off, size, body });
    off += size;
  }
  return out;
}

// The first box of that type on the path, e.g. find(init, ['moov', 'trak', 'mdia', 'mdhd']).
export function find(buf, path, start = 0, end = buf.length) {
  let range = [start, end];
  let box = null;
  for (const t of path) {
    box = boxes(buf, range[0], range[1]).find((b) => b.type === t);
    if (!box) return null;
    range = [box.body, box.start + box.size];
  }
  return box;
}

export function isInit(buf) {
  const b = boxes(buf);
  return b.some((x) => x.type === 'moov');
}

// {codec: 'avc1.PPCCLL', description: Uint8Array (the avcC body), timescale, width, height}
export function parseInit(buf) {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const mdhd = find(buf, ['moov', 'trak', 'mdia', 'mdhd']);
  let timescale = 90000;
  if (mdhd) {
    const v = buf[mdhd.body];
    timescale = dv.getUint32(mdhd.body + (v === 1 ? 20 : 12));
  }
  const stsd = find(buf, ['moov', 'trak', 'mdia', 'minf', 'stbl', 'stsd']);
  if (!stsd) throw new Error('init segment without stsd');
  // stsd: full box header (4) + entry_count (4), then the sample entry.
  const entries = boxes(buf, stsd.body + 8, stsd.start + stsd.size);
  const avc = entries.find((e) => e.type === 'avc1' || e.type === 'avc3');
  if (!avc) throw new Error('init segment without an avc1 sample entry');
  // VisualSampleEntry: 6 reserved + 2 dref index + 16 predefined/reserved + w(2) h(2) + 50 more.
  const width = dv.getUint16(avc.body + 24);
  const height = dv.getUint16(avc.body + 26);
  const inner = boxes(buf, avc.body + 78, avc.start + avc.size);
  const avcC = inner.find((b) => b.type === 'avcC');
  if (!avcC) throw new Error('avc1 without avcC');
  const hex = (x) => x.toString(16).padStart(2, '0');
  const p = avcC.body;
  const codec = `${avc.type}.${hex(buf[p + 1])}${hex(buf[p + 2])}${hex(buf[p + 3])}`;
  const description = buf.slice(avcC.body, avcC.start + avcC.size);
  return { codec, description, timescale, width, height };
}

const NTP_UNIX_S = 2208988800;

// prft of a fragment: {unixMs, mediaTime} (mediaTime in the track's timescale), or null.
export function parsePrft(buf) {
  const b = boxes(buf).find((x) => x.type === 'prft');
  if (!b) return null;
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const v = buf[b.body];
  const sec = dv.getUint32(b.body + 8);
  const frac = dv.getUint32(b.body + 12);
  const unixMs = (sec - NTP_UNIX_S) * 1000 + (frac / 4294967296) * 1000;
  const mediaTime = v === 1 ? Number(dv.getBigUint64(b.body + 16)) : dv.getUint32(b.body + 16);
  return { unixMs, mediaTime };
}

// Samples of a moof+mdat fragment: [{dts, cts, duration, key, data: Uint8Array}] (timescale units).
export function parseFragment(buf) {
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const top = boxes(buf);
  const moof = top.find((x) => x.type === 'moof');
  if (!moof) return [];
  const out = [];
  for (const traf of boxes(buf, moof.body, moof.start + moof.size).filter((x) => x.type === 'traf')) {
    const end = traf.start + traf.size;
    const tfhd = find(buf, ['tfhd'], traf.body, end);
    const tfdt = find(buf, ['tfdt'], traf.body, end);
    if (!tfhd) continue;
    const tf = dv.getUint32(tfhd.body) & 0xffffff;
    let o = tfhd.body + 8;
    let base = moof.start;
    if (tf & 0x1) { base = Number(dv.getBigUint64(o)); o += 8; }
    if (tf & 0x2) o += 4;
    let defDur = 0, defSize = 0, defFlags = 0;
    if (tf & 0x8) { defDur = dv.getUint32(o); o += 4; }
    if (tf & 0x10) { defSize = dv.getUint32(o); o += 4; }
    if (tf & 0x20) { defFlags = dv.getUint32(o); o += 4; }
    let dts = 0;
    if (tfdt) dts = buf[tfdt.body] === 1 ? Number(dv.getBigUint64(tfdt.body + 4)) : dv.getUint32(tfdt.body + 4);
    for (const trun of boxes(buf, traf.body, end).filter((x) => x.type === 'trun')) {
      const version = buf[trun.body];
      const f = dv.getUint32(trun.body) & 0xffffff;
      const count = dv.getUint32(trun.body + 4);
      let p = trun.body + 8;
      let dataOff = base;
      if (f & 0x1) { dataOff = base + dv.getInt32(p); p += 4; }
      let firstFlags = null;
      if (f & 0x4) { firstFlags = dv.getUint32(p); p += 4; }
      for (let i = 0; i < count; i++) {
        let dur = defDur, size = defSize, flags = defFlags, cto = 0;
        if (f & 0x100) { dur = dv.getUint32(p); p += 4; }
        if (f & 0x200) { size = dv.getUint32(p); p += 4; }
        if (f & 0x400) { flags = dv.getUint32(p); p += 4; }
        if (f & 0x800) { cto = version === 1 ? dv.getInt32(p) : dv.getUint32(p); p += 4; }
        if (i === 0 && firstFlags !== null) flags = firstFlags;
        if (dataOff + size > buf.length) throw new Error('trun points past the fragment');
        out.push({
          dts, cts: dts + cto, duration: dur,
          key: ((flags >>> 16) & 0x1) === 0, // sample_is_non_sync_sample clear
          data: buf.subarray(dataOff, dataOff + size),
        });
        dataOff += size;
        dts += dur;
      }
    }
  }
  return out;
}
