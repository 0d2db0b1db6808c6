// uPlot set-up shared by the three health charts: series from history columns, horizontal
// limit lines (thresholds, capacity) and event markers drawn in a `draw` hook, y range chosen
// by the page's scale mode, and a performance mark when a chart first paints real data.

import uPlot from 'uplot';

export interface SeriesSpec {
  key: string;
  label: string;
  column: number;
  /** CSS custom property holding the colour, e.g. `--c-rss`. */
  color: string;
  width?: number;
  dash?: number[];
  fill?: boolean;
  step?: boolean;
  /** A limit drawn as a series (capacity): not part of the data fit. */
  limit?: boolean;
}

export interface LimitLine {
  kind: 'warning' | 'critical' | 'capacity';
  value: number;
  label: string;
  /** CSS custom property of the colour. */
  color: string;
}

export interface MarkerSpec {
  key: string;
  label: string;
  /** Column holding the per-sample delta of a counter; a marker where it is > 0. */
  column: number;
  /** CSS custom property of the colour. */
  color: string;
  shape: 'triangle' | 'dot';
}

export function cssVar(name: string, fallback = '#888'): string {
  const v = getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  return v || fallback;
}

const drawn = new Set<string>();
const CHARTS = ['memory', 'pool', 'subscriptions'];

/** Performance marks for the first-paint benchmark (once per page load). */
export function markDrawn(name: string): void {
  if (drawn.has(name)) return;
  drawn.add(name);
  performance.mark(`collisionos:first-draw:${name}`);
  if (drawn.size === 1) performance.mark('collisionos:first-sample-drawn');
  if (CHARTS.every((c) => drawn.has(c))) performance.mark('collisionos:charts-painted');
}

export function niceMax(v: number): number {
  if (!(v > 0)) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export interface ChartState {
  /** y maximum the range function uses. */
  yMax: number;
  /** x range [from, to] in epoch seconds. */
  xRange: [number, number];
  limits: LimitLine[];
  markers: MarkerSpec[];
  /** Marker columns for the data in view (same length as x). */
  markerData: Float64Array[];
  /** Drawn lines (for the page's data attributes). */
  drawnLimits: string[];
}

export function buildOptions(
  name: string,
  width: number,
  height: number,
  series: SeriesSpec[],
  state: ChartState,
  yLabel: string,
  integer: boolean,
): uPlot.Options {
  const axisStroke = cssVar('--fg-muted', '#8a94a6');
  const gridStroke = cssVar('--grid', 'rgba(128,128,128,0.15)');
  const font = '13px system-ui, -apple-system, "Segoe UI", Roboto, sans-serif';
  return {
    width,
    height,
    pxAlign: 0,
    legend: { show: false },
    cursor: { show: false },
    select: { show: false, left: 0, top: 0, width: 0, height: 0 },
    scales: {
      x: { time: true, range: () => state.xRange },
      y: { range: () => [0, state.yMax] },
    },
    axes: [
      {
        stroke: axisStroke,
        font,
        grid: { stroke: gridStroke, width: 1 },
        ticks: { stroke: gridStroke, width: 1, size: 4 },
        space: 60,
        // 24-hour clock, one line: an office monitor needs the time, not the date.
        values: (_u, splits, _i, _space, incr) => splits.map((v) => hhmm(v, incr < 60)),
      },
      {
        stroke: axisStroke,
        font,
        size: 56,
        label: yLabel,
        labelFont: font,
        labelSize: 18,
        grid: { stroke: gridStroke, width: 1 },
        ticks: { show: false },
        values: (_u, splits) =>
          splits.map((v) => (v === 0 || integer || v >= 10 ? String(Math.round(v)) : v.toFixed(1))),
        incrs: integer ? [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000] : undefined,
      },
    ],
    series: [
      {},
      ...series.map((s): uPlot.Series => {
        const color = cssVar(s.color);
        return {
          label: s.label,
          stroke: color,
          width: s.width ?? 2,
          dash: s.dash,
          fill: s.fill ? withAlpha(color, 0.12) : undefined,
          paths: s.step ? uPlot.paths.stepped!({ align: 1 }) : undefined,
          points: { show: false },
          spanGaps: false,
        };
      }),
    ],
    hooks: {
      draw: [
        (u) => {
          drawLimits(u, state);
          drawMarkers(u, state);
          if (u.data[0].length > 0) markDrawn(name);
        },
      ],
    },
  };
}

function pad(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

function hhmm(sec: number, seconds: boolean): string {
  const d = new Date(sec * 1000);
  const base = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${base}:${pad(d.getSeconds())}` : base;
}

function withAlpha(color: string, alpha: number): string {
  const m = /^#([0-9a-f]{6})$/i.exec(color);
  if (!m) return color;
  const n = parseInt(m[1], 16);
  return `rgba(${(n >> 16) & 255},${(n >> 8) & 255},${n & 255},${alpha})`;
}

function drawLimits(u: uPlot, state: ChartState): void {
  const ctx = u.ctx;
  const { left, top, width, height } = u.bbox;
  const ratio = uPlot.pxRatio;
  const drawnNow: string[] = [];
  ctx.save();
  ctx.font = `${Math.round(12 * ratio)}px system-ui, sans-serif`;
  ctx.textAlign = 'right';
  let offTop = 0;
  for (const l of state.limits) {
    if (l.kind === 'capacity') continue; // drawn as a series
    const y = Math.round(u.valToPos(l.value, 'y', true));
    ctx.fillStyle = l.color;
    ctx.strokeStyle = l.color;
    if (y >= top && y <= top + height) {
      ctx.lineWidth = 2 * ratio;
      ctx.setLineDash([8 * ratio, 5 * ratio]);
      ctx.beginPath();
      ctx.moveTo(left, y);
      ctx.lineTo(left + width, y);
      ctx.stroke();
      ctx.textBaseline = 'bottom';
      ctx.fillText(l.label, left + width - 6 * ratio, y - 3 * ratio);
    } else {
      // Off the fitted scale: say where it is instead of hiding it.
      ctx.textBaseline = 'top';
      ctx.fillText(`↑ ${l.label}`, left + width - 6 * ratio, top + 4 * ratio + offTop);
      offTop += 16 * ratio;
    }
    drawnNow.push(l.kind);
  }
  ctx.restore();
  state.drawnLimits = drawnNow;
}

function drawMarkers(u: uPlot, state: ChartState): void {
  if (state.markers.length === 0) return;
  const xs = u.data[0];
  const ctx = u.ctx;
  const { top, height } = u.bbox;
  const ratio = uPlot.pxRatio;
  ctx.save();
  state.markers.forEach((m, mi) => {
    const col = state.markerData[mi];
    if (!col) return;
    ctx.fillStyle = m.color;
    ctx.strokeStyle = m.color;
    for (let i = 0; i < col.length && i < xs.length; i++) {
      if (!(col[i] > 0)) continue;
      const x = Math.round(u.valToPos(xs[i] as number, 'x', true));
      // A faint rule through the plot and a shape on the top edge.
      ctx.globalAlpha = 0.35;
      ctx.lineWidth = 1 * ratio;
      ctx.setLineDash([]);
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, top + height);
      ctx.stroke();
      ctx.globalAlpha = 1;
      const s = 6 * ratio;
      const y = top + (mi === 0 ? s : s * 3);
      ctx.beginPath();
      if (m.shape === 'triangle') {
        ctx.moveTo(x - s, y - s);
        ctx.lineTo(x + s, y - s);
        ctx.lineTo(x, y + s * 0.6);
        ctx.closePath();
      } else {
        ctx.arc(x, y, s * 0.75, 0, Math.PI * 2);
      }
      ctx.fill();
    }
  });
  ctx.restore();
}
