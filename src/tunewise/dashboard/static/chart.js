// A small SVG line chart: a few series of (x, y) points, axes with rounded ticks, a legend below the plot.
// Redrawn whole on every update: a few hundred points per chart is nothing for the browser.
// The chart is drawn at the width its box has (within MIN_W..MAX_W), so its text is shown at its own size
// whether the chart fills a page or half a card; the legend sits under the x axis, outside the plot area, and
// the drawing grows downwards to hold every legend row.

const NS = "http://www.w3.org/2000/svg";
const MIN_W = 300;
const MAX_W = 760;
const PLOT_H = 260; // title, plot area and x axis; the legend comes below
const PAD = { left: 56, right: 16, top: 28, bottom: 36 };
const LEGEND_ROW = 18;
const LEGEND_GAP = 18; // between legend items on one row
export const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed"];

function s(tag, attrs = {}, text) {
  const el = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  if (text !== undefined) el.textContent = text;
  return el;
}

// About `count` round tick values covering [lo, hi].
export function ticks(lo, hi, count = 5, integer = false) {
  if (!(hi > lo)) return [lo];
  const raw = Math.max((hi - lo) / count, integer ? 1 : 0);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const steps = integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10]; // 2.5 would put ticks between whole steps
  const step = steps.map((m) => m * mag).find((x) => x >= raw) || 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(Number(v.toPrecision(12)));
  return out;
}

// A tick's label, with as many decimals as the tick step needs (10.785, 10.79, 10.795 stay apart).
function label(v, step = 0) {
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e5 || a < 1e-3)) return v.toExponential(1);
  if (!(step > 0)) return String(Number(v.toPrecision(4)));
  let d = 0;
  while (d < 8 && Math.abs(Math.round(step * 10 ** d) - step * 10 ** d) > 1e-6) d++;
  return v.toFixed(d);
}

function stepOf(values) {
  return values.length > 1 ? values[1] - values[0] : 0;
}

/**
 * Draw into `container`. `series`: [{name, label, points: [[x, y], ...], color?, dashed?}];
 * `marks`: optional vertical lines [{x, label}]; `integerX`: x counts something (steps), so whole ticks only.
 * The svg carries data-points="n1,n2,..." so a test (or a person with devtools) can see how many points each
 * series holds.
 */
export function lineChart(container, options) {
  const svg = draw(container, options);
  redrawOnResize(container, options, svg.viewBox.baseVal.width);
  return svg;
}

// A chart whose box changes width (a window resized, a grid that reflows) is drawn again at the new width, so
// its text keeps its size; small changes only scale it.
const drawn = new WeakMap();
function redrawOnResize(container, options, width) {
  const known = drawn.get(container);
  if (known) { known.options = options; known.width = width; return; }
  if (typeof ResizeObserver === "undefined") return;
  const state = { options, width };
  drawn.set(container, state);
  new ResizeObserver(() => {
    const now = Math.round(Math.min(MAX_W, Math.max(MIN_W, container.clientWidth || 0)));
    if (!container.isConnected || !container.clientWidth || Math.abs(now - state.width) < 24) return;
    state.width = draw(container, state.options).viewBox.baseVal.width;
  }).observe(container);
}

function draw(container, { title, series, xLabel = "", yLabel = "", marks = [], empty = "No data yet",
  integerX = false }) {
  const W = Math.round(Math.min(MAX_W, Math.max(MIN_W, container.clientWidth || 640)));
  const H = PLOT_H;
  const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": title || "chart" });
  svg.dataset.points = series.map((x) => x.points.length).join(",");
  if (title) svg.append(s("text", { x: PAD.left, y: 18, class: "chart-title" }, title));
  const all = series.flatMap((x) => x.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
  if (!all.length) {
    // The message in as many centred lines as the width needs (a half-width card is narrow).
    const text = s("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "chart-empty" });
    const perLine = Math.max(12, Math.floor((W - 24) / 7.5));
    const lines = [];
    for (const word of empty.split(" ")) {
      if (lines.length && (lines[lines.length - 1] + " " + word).length <= perLine) lines[lines.length - 1] += " " + word;
      else lines.push(word);
    }
    lines.forEach((line, i) => text.append(s("tspan", { x: W / 2, dy: i ? "1.3em" : `${-0.65 * (lines.length - 1)}em` }, line)));
    svg.append(text);
    container.replaceChildren(svg);
    return svg;
  }
  let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
  for (const m of marks) { x0 = Math.min(x0, m.x); x1 = Math.max(x1, m.x); }
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const nonNegative = y0 >= 0; // losses, accuracies and costs never go below 0: neither should the axis
  if (y0 === y1) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
  if (nonNegative) y0 = Math.max(0, y0);
  const ypad = (y1 - y0) * 0.05;
  y0 = y0 >= 0 && y0 - ypad < 0 ? 0 : y0 - ypad;
  y1 += ypad;
  const px = (x) => PAD.left + ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right);
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);

  const axes = s("g", { class: "chart-axes" });
  const yTicks = ticks(y0, y1);
  for (const t of yTicks) {
    axes.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: py(t), y2: py(t), class: "grid" }));
    axes.append(s("text", { x: PAD.left - 6, y: py(t) + 4, "text-anchor": "end" }, label(t, stepOf(yTicks))));
  }
  const xTicks = ticks(x0, x1, 6, integerX);
  for (const t of xTicks) {
    axes.append(s("line", { x1: px(t), x2: px(t), y1: H - PAD.bottom, y2: H - PAD.bottom + 4, class: "tick" }));
    axes.append(s("text", { x: px(t), y: H - PAD.bottom + 16, "text-anchor": "middle" }, label(t, stepOf(xTicks))));
  }
  axes.append(s("line", { x1: PAD.left, x2: W - PAD.right, y1: H - PAD.bottom, y2: H - PAD.bottom, class: "axis" }));
  axes.append(s("line", { x1: PAD.left, x2: PAD.left, y1: PAD.top, y2: H - PAD.bottom, class: "axis" }));
  if (xLabel) axes.append(s("text", { x: W - PAD.right, y: H - 4, "text-anchor": "end", class: "axis-label" }, xLabel));
  if (yLabel) axes.append(s("text", { x: 4, y: PAD.top - 10, class: "axis-label" }, yLabel));
  svg.append(axes);

  for (const m of marks) {
    svg.append(s("line", { x1: px(m.x), x2: px(m.x), y1: PAD.top, y2: H - PAD.bottom, class: "mark" }));
    if (m.label) svg.append(s("text", { x: px(m.x) + 4, y: PAD.top + 12, class: "mark-label" }, m.label));
  }

  const legend = s("g", { class: "chart-legend" });
  series.forEach((ser, i) => {
    const color = ser.color || COLORS[i % COLORS.length];
    const pts = ser.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y));
    const g = s("g", { class: "series", "data-series": ser.name, "data-n": pts.length });
    if (pts.length > 1) {
      g.append(s("polyline", {
        points: pts.map(([x, y]) => `${px(x).toFixed(1)},${py(y).toFixed(1)}`).join(" "),
        fill: "none", stroke: color, "stroke-width": 2, "stroke-dasharray": ser.dashed ? "6 4" : "none",
      }));
    }
    // Dots when points are few (or only one), so a single validation measurement is still visible.
    if (pts.length <= 60) {
      for (const [x, y] of pts) g.append(s("circle", { cx: px(x), cy: py(y), r: 2.5, fill: color }));
    }
    svg.append(g);
    const last = pts.length ? ` (${label(pts[pts.length - 1][1])})` : "";
    const item = s("g", { class: "legend-item", "data-series": ser.name });
    item.append(s("line", { x1: 0, x2: 18, y1: 0, y2: 0, stroke: color, "stroke-width": 2.5,
      "stroke-dasharray": ser.dashed ? "6 4" : "none" }));
    item.append(s("text", { x: 24, y: 4, class: "legend" }, `${ser.label || ser.name}${last}`));
    legend.append(item);
  });
  svg.append(legend);
  container.replaceChildren(svg);
  svg.setAttribute("viewBox", `0 0 ${W} ${layoutLegend(legend, W, PLOT_H + 4)}`);
  return svg;
}

// Lay the legend items out in rows under the plot (left to right, a new row when one is full) and return the
// height the drawing needs. Widths are measured where the chart is shown; an estimate stands in where it is not.
function layoutLegend(legend, W, top) {
  let x = PAD.left;
  let row = 0;
  for (const item of legend.children) {
    const text = item.querySelector("text");
    let width = 0;
    try { width = text.getComputedTextLength(); } catch { width = 0; }
    if (!(width > 0)) width = 7 * text.textContent.length;
    const w = 24 + width;
    if (x > PAD.left && x + w > W - PAD.right) { x = PAD.left; row += 1; }
    const y = top + LEGEND_ROW * (row + 0.5);
    item.setAttribute("transform", `translate(${x.toFixed(1)},${y.toFixed(1)})`);
    x += w + LEGEND_GAP;
  }
  return legend.children.length ? Math.ceil(top + LEGEND_ROW * (row + 1) + 4) : PLOT_H;
}

