// A small live line chart on a canvas: one series per field, the last
// `windowMs` of points, colours from the stylesheet (--c0..--c7).

const MAX_POINTS = 5000;
/** Points older than this are dropped whatever the window shown. */
const KEEP_MS = 15 * 60 * 1000;

export class LiveChart {
  constructor(canvas, windowMs) {
    this.canvas = canvas;
    this.windowMs = windowMs;
    this.series = new Map(); // field -> {points: [[ms, value]], color}
    this.selected = new Set();
    this.pending = false;
    // Redraw at the new size when the layout changes (rotation, resize).
    if (window.ResizeObserver) new ResizeObserver(() => this.schedule()).observe(canvas);
  }

  color(i) {
    const v = getComputedStyle(document.documentElement).getPropertyValue('--c' + (i % 8));
    return v.trim() || '#1f6feb';
  }

  /** Adds a point; returns true if the field is new. */
  add(field, ms, value) {
    let s = this.series.get(field);
    const isNew = !s;
    if (!s) {
      s = { points: [], index: this.series.size };
      this.series.set(field, s);
    }
    s.points.push([ms, value]);
    if (s.points.length > MAX_POINTS) s.points.splice(0, s.points.length - MAX_POINTS);
    this.schedule();
    return isNew;
  }

  schedule() {
    if (this.pending) return;
    this.pending = true;
    requestAnimationFrame(() => { this.pending = false; this.draw(); });
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(100, c.clientWidth), h = Math.max(80, c.clientHeight);
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(h * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(h * dpr);
    }
    const g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const now = Date.now(), t0 = now - this.windowMs;
    let lo = Infinity, hi = -Infinity;
    for (const [f, s] of this.series) {
      if (!this.selected.has(f)) continue;
      while (s.points.length && s.points[0][0] < now - KEEP_MS) s.points.shift();
      for (const [ms, v] of s.points) { if (ms >= t0) { if (v < lo) lo = v; if (v > hi) hi = v; } }
    }
    const muted = getComputedStyle(document.body).color;
    g.font = '11px system-ui, sans-serif';
    g.fillStyle = muted;
    g.strokeStyle = muted;
    g.globalAlpha = 0.25;
    const padL = 48, padB = 18, padT = 8, padR = 8;
    const pw = w - padL - padR, ph = h - padT - padB;
    g.strokeRect(padL, padT, pw, ph);
    g.globalAlpha = 1;
    if (lo === Infinity) {
      g.fillText('no data in the last ' + Math.round(this.windowMs / 60000) + ' minutes', padL + 8, padT + 16);
      return;
    }
    if (lo === hi) { lo -= 1; hi += 1; }
    const x = (ms) => padL + ((ms - t0) / this.windowMs) * pw;
    const y = (v) => padT + ph - ((v - lo) / (hi - lo)) * ph;
    g.fillText(fmt(hi), 2, padT + 10);
    g.fillText(fmt(lo), 2, padT + ph);
    g.fillText('-' + Math.round(this.windowMs / 60000) + ' min', padL, h - 4);
    g.fillText('now', w - padR - 22, h - 4);
    g.lineWidth = 1.5;
    for (const [f, s] of this.series) {
      if (!this.selected.has(f) || !s.points.length) continue;
      g.strokeStyle = this.color(s.index);
      const shown = s.points.filter(([ms]) => ms >= t0);
      g.beginPath();
      shown.forEach(([ms, v], i) => (i ? g.lineTo(x(ms), y(v)) : g.moveTo(x(ms), y(v))));
      g.stroke();
      g.fillStyle = g.strokeStyle;
      for (const [ms, v] of shown.length <= 60 ? shown : []) g.fillRect(x(ms) - 1.5, y(v) - 1.5, 3, 3);
    }
  }
}

function fmt(v) {
  return Math.abs(v) >= 1e5 || (Math.abs(v) < 1e-2 && v !== 0) ? v.toExponential(2) : String(+v.toFixed(2));
}
