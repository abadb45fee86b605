// A hand-written SVG of the figures that compare: relay latency, throughput and memory, each
// server beside the bare ws yardstick and PeerJS, measured in the same run.

const COLORS = { ws: '#9e9e9e', 'ws-json': '#616161', peerjs: '#e69f00', memory: '#0072b2', redis: '#009e73' };
const esc = (s) => String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;');
const fmt = (v) => (v >= 100 ? Math.round(v).toLocaleString('en-US') : v >= 10 ? v.toFixed(1) : v.toFixed(2));

/** The top of the y axis: clips one runaway bar so the others stay readable. */
function axisTop(values) {
  const v = values.filter((x) => x > 0).sort((a, b) => b - a);
  if (v.length === 0) return 1;
  const top = v.length > 1 && v[0] > 3 * v[1] ? v[1] * 1.6 : v[0];
  return top * 1.15;
}

/** One panel of grouped bars. groups: [{label, bars: [{id, value, note}]}]. */
function panel({ x, y, w, h, title, unit, groups }) {
  const out = [];
  const all = groups.flatMap((g) => g.bars.map((b) => b.value)).filter((v) => typeof v === 'number');
  const top = axisTop(all);
  const plotY = y + 28;
  const plotH = h - 28 - 34;
  const base = plotY + plotH;
  out.push(`<text x="${x}" y="${y + 14}" class="t">${esc(title)}</text>`);
  out.push(`<text x="${x}" y="${y + 26}" class="s">${esc(unit)}</text>`);
  out.push(`<line x1="${x}" y1="${base}" x2="${x + w}" y2="${base}" stroke="#333"/>`);
  const gw = w / groups.length;
  groups.forEach((g, gi) => {
    const n = g.bars.length;
    const bw = Math.min(34, (gw - 16) / n);
    const gx = x + gi * gw + (gw - bw * n) / 2;
    g.bars.forEach((b, i) => {
      const bx = gx + i * bw;
      if (typeof b.value !== 'number') {
        out.push(`<text x="${bx + bw / 2}" y="${base - 4}" class="n" text-anchor="middle">–</text>`);
        return;
      }
      const clipped = b.value > top;
      const bh = Math.max(1, (Math.min(b.value, top) / top) * plotH);
      out.push(`<rect x="${bx + 1}" y="${base - bh}" width="${bw - 2}" height="${bh}" fill="${COLORS[b.id] ?? '#888'}"><title>${esc(`${b.label}: ${fmt(b.value)}`)}</title></rect>`);
      if (clipped) out.push(`<path d="M${bx} ${base - bh + 8} l${bw} -6 M${bx} ${base - bh + 13} l${bw} -6" stroke="#fff" stroke-width="2"/>`);
      out.push(`<text x="${bx + bw / 2}" y="${base - bh - 3}" class="n" text-anchor="middle">${esc(fmt(b.value))}</text>`);
      if (b.note) out.push(`<text x="${bx + bw / 2}" y="${base - bh - 13}" class="r" text-anchor="middle">${esc(b.note)}</text>`);
    });
    out.push(`<text x="${x + gi * gw + gw / 2}" y="${base + 16}" class="s" text-anchor="middle">${esc(g.label)}</text>`);
  });
  return out.join('\n');
}

/**
 * The chart as SVG text. `servers`: [{id, label}], `get(id, figure)` returns a number or null,
 * `meta` the header line, `warning` an optional red note under it.
 */
export function chartSvg({ servers, figures, meta, warning }) {
  const W = 980;
  const H = 430;
  const legend = servers.map((s, i) =>
    `<rect x="${20 + i * 190}" y="${H - 22}" width="12" height="12" fill="${COLORS[s.id] ?? '#888'}"/><text x="${36 + i * 190}" y="${H - 12}" class="s">${esc(s.label)}</text>`).join('\n');
  const panels = figures.map((f, i) => panel({ x: 20 + i * (W / figures.length), y: 34, w: W / figures.length - 40, h: H - 90, ...f }));
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="system-ui, sans-serif">
<style>.t{font-size:14px;font-weight:600}.s{font-size:11px;fill:#444}.n{font-size:10px;fill:#222}.r{font-size:9px;fill:#a00}</style>
<rect width="100%" height="100%" fill="#fff"/>
<text x="20" y="20" class="s">${esc(meta)}</text>
${warning ? `<text x="${W - 20}" y="34" class="r" text-anchor="end">${esc(warning)}</text>` : ''}
${panels.join('\n')}
${legend}
</svg>
`;
}
