// Hand-written SVG charts: horizontal bars, a line chart and a histogram with marker lines.
// Each returns an <svg> with a <title> and labelled parts, so the figures can be read without colour.

const SVG = "http://www.w3.org/2000/svg";

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

/**
 * A viewBox width close to the width the chart will be shown at, so 12 px text stays about 12 px on a
 * phone instead of being scaled down with a desktop-wide drawing.
 */
export function fitWidth(desired) {
  const available = (document.documentElement.clientWidth || desired) - 48;
  return Math.round(Math.min(desired, Math.max(300, available)));
}

function frame(width, height, title) {
  const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart" });
  root.append(svg("title", {}, title));
  return root;
}

/**
 * Horizontal bars, one row per item: {label, value, text, marker?, markerLabel?, className?}.
 * `marker` draws a tick at that value (e.g. a stage's target days). `options.max`: the value a full bar
 * stands for, at least (e.g. 1 for shares), so small values do not fill the width.
 */
export function barChart(items, options) {
  const width = fitWidth(options.width ?? 640);
  if (width < 520) return stackedBars(items, { ...options, width });
  const { title, row = 30, labelWidth = 170, valueWidth = 120, centered = false } = options;
  const max = Math.max(options.max ?? 1e-9, ...items.map((item) => Math.max(item.value ?? 0, item.marker ?? 0)));
  const plot = width - labelWidth - valueWidth;
  const root = frame(width, items.length * row + 10, title);
  items.forEach((item, index) => {
    const y = 5 + index * row;
    const length = ((item.value ?? 0) / max) * plot;
    const x = centered ? labelWidth + (plot - length) / 2 : labelWidth;
    const group = svg("g", { class: `bar ${item.className ?? ""}`, "data-label": item.label });
    group.append(svg("text", { x: labelWidth - 8, y: y + row / 2 + 4, "text-anchor": "end" }, item.label));
    group.append(svg("rect", { x, y: y + 3, width: Math.max(length, 1), height: row - 8, rx: 3 }));
    const hasMarker = item.marker !== undefined && item.marker !== null;
    const mx = hasMarker ? labelWidth + (item.marker / max) * plot : 0;
    // The value text starts after the bar and after the target tick, never over it.
    const textX = centered ? labelWidth + plot + 8 : Math.max(x + length, mx) + 6;
    group.append(svg("text", { x: textX, y: y + row / 2 + 4, class: "value" }, item.text));
    if (hasMarker) {
      group.append(svg("line", { x1: mx, x2: mx, y1: y + 1, y2: y + row - 3, class: "marker" }));
      if (item.markerLabel) group.append(svg("title", {}, item.markerLabel));
    }
    root.append(group);
  });
  return root;
}

/** Narrow screens: the label and the value text on one line, the bar (and its tick) under them. */
function stackedBars(items, { title, width, centered = false, max: scale = 1e-9 }) {
  const row = 40;
  const max = Math.max(scale, ...items.map((item) => Math.max(item.value ?? 0, item.marker ?? 0)));
  const root = frame(width, items.length * row + 6, title);
  items.forEach((item, index) => {
    const y = 4 + index * row;
    const length = ((item.value ?? 0) / max) * width;
    const x = centered ? (width - length) / 2 : 0;
    const group = svg("g", { class: `bar ${item.className ?? ""}`, "data-label": item.label });
    group.append(svg("text", { x: 0, y: y + 12 }, item.label));
    group.append(svg("text", { x: width, y: y + 12, "text-anchor": "end", class: "value" }, item.text));
    group.append(svg("rect", { x, y: y + 18, width: Math.max(length, 1), height: row - 24, rx: 3 }));
    if (item.marker !== undefined && item.marker !== null) {
      const mx = Math.min((item.marker / max) * width, width - 1);
      group.append(svg("line", { x1: mx, x2: mx, y1: y + 16, y2: y + row - 4, class: "marker" }));
      if (item.markerLabel) group.append(svg("title", {}, item.markerLabel));
    }
    root.append(group);
  });
  return root;
}

/**
 * Lines over shared x labels: series = [{name, values, className}]. `partial` lists indices (at the
 * ends) whose points cover part of a period: the line reaches them dashed. `format` writes the y ticks.
 */
export function lineChart(labels, series, { title, width: desired = 1100, height = 240, partial = [], format = (v) => String(Math.round(v)) }) {
  const width = fitWidth(desired);
  // The legend sits above the plot, one line per series, so no line runs under it.
  const pad = { left: 58, right: 16, top: 14 * series.length + 10, bottom: 34 };
  const root = frame(width, height, title);
  const max = Math.max(1, ...series.flatMap((s) => s.values));
  const x = (i) => pad.left + (labels.length <= 1 ? 0 : (i / (labels.length - 1)) * (width - pad.left - pad.right));
  const y = (v) => height - pad.bottom - (v / max) * (height - pad.top - pad.bottom);
  root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: y(0), y2: y(0), class: "axis" }));
  root.append(svg("text", { x: pad.left - 6, y: y(max) + 4, "text-anchor": "end", class: "tick" }, format(max)));
  root.append(svg("text", { x: pad.left - 6, y: y(0) + 4, "text-anchor": "end", class: "tick" }, format(0)));
  const step = Math.max(1, Math.ceil(labels.length / Math.max(3, Math.floor(width / 90))));
  labels.forEach((label, i) => {
    if (i % step === 0) root.append(svg("text", { x: x(i), y: height - 12, "text-anchor": "middle", class: "tick" }, label));
  });
  const full = labels.map((_, i) => i).filter((i) => !partial.includes(i));
  const [first, last] = [full[0] ?? 0, full.at(-1) ?? labels.length - 1];
  series.forEach((s, index) => {
    const points = (from, to) => s.values.slice(from, to + 1).map((v, i) => `${x(from + i)},${y(v)}`).join(" ");
    if (first > 0) root.append(svg("polyline", { points: points(0, first), class: `series partial ${s.className ?? ""}` }));
    if (last < labels.length - 1) {
      root.append(svg("polyline", { points: points(last, labels.length - 1), class: `series partial ${s.className ?? ""}` }));
    }
    root.append(svg("polyline", { points: points(first, last), class: `series full ${s.className ?? ""}` }));
    root.append(
      svg("text", { x: width - pad.right, y: 12 + 14 * index, "text-anchor": "end", class: `legend ${s.className ?? ""}` }, s.name),
    );
  });
  return root;
}

/**
 * A histogram of buckets [{low, high, trials}] with vertical markers [{value, label, className}]
 * (P10/P50/P90, the goal). Values are numbers; `format` renders axis and marker labels.
 */
export function histogram(buckets, markers, { title, format, width: desired = 1100, height = 320 }) {
  const width = fitWidth(desired);
  // One label row per marker, so close markers (P50 and the goal, say) never overprint.
  const pad = { left: 16, right: 16, top: 16 * markers.length + 10, bottom: 30 };
  const root = frame(width, height, title);
  if (!buckets.length) return root;
  const low = Math.min(buckets[0].low, ...markers.map((m) => m.value));
  const high = Math.max(buckets.at(-1).high, ...markers.map((m) => m.value));
  const span = Math.max(high - low, 1e-9);
  const most = Math.max(...buckets.map((b) => b.trials), 1);
  const x = (v) => pad.left + ((v - low) / span) * (width - pad.left - pad.right);
  const base = height - pad.bottom;
  for (const bucket of buckets) {
    const h = (bucket.trials / most) * (base - pad.top);
    const rect = svg("rect", {
      x: x(bucket.low),
      y: base - h,
      width: Math.max(x(bucket.high) - x(bucket.low) - 1, 1),
      height: h,
      class: "bucket",
    });
    rect.append(svg("title", {}, `${format(bucket.low)}–${format(bucket.high)}: ${bucket.trials} trials`));
    root.append(rect);
  }
  root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: base, y2: base, class: "axis" }));
  root.append(svg("text", { x: pad.left, y: height - 10, class: "tick" }, format(low)));
  root.append(svg("text", { x: width - pad.right, y: height - 10, "text-anchor": "end", class: "tick" }, format(high)));
  markers.forEach((marker, index) => {
    const mx = x(marker.value);
    const group = svg("g", { class: `marker ${marker.className ?? ""}`, "data-marker": marker.label });
    group.append(svg("line", { x1: mx, x2: mx, y1: 18 + index * 16, y2: base }));
    const anchor = mx < width * 0.15 ? "start" : mx > width * 0.85 ? "end" : "middle";
    group.append(svg("text", { x: mx, y: 14 + index * 16, "text-anchor": anchor }, `${marker.label} ${format(marker.value)}`));
    root.append(group);
  });
  return root;
}

/**
 * A fan chart of cumulative revenue over the horizon: bands [{day, p10, p50, p90}] (numbers), the
 * P10–P90 area, the P50 line and, when given, the goal as a horizontal line. Starts at day 0, revenue 0.
 */
export function fanChart(bands, goal, { title, format, width: desired = 1100, height = 300 }) {
  const width = fitWidth(desired);
  const pad = { left: 16, right: 16, top: 26, bottom: 30 };
  const root = frame(width, height, title);
  if (!bands.length) return root;
  const points = [{ day: 0, p10: 0, p50: 0, p90: 0 }, ...bands];
  const lastDay = points.at(-1).day;
  const top = Math.max(...points.map((p) => p.p90), goal ?? 0, 1e-9);
  const x = (day) => pad.left + (day / lastDay) * (width - pad.left - pad.right);
  const y = (value) => height - pad.bottom - (value / top) * (height - pad.top - pad.bottom);
  const line = (key) => points.map((p) => `${x(p.day)},${y(p[key])}`);
  const area = [...line("p90"), ...line("p10").reverse()].join(" ");
  const band = svg("polygon", { points: area, class: "fan-band" });
  band.append(svg("title", {}, "P10–P90 of revenue won so far"));
  root.append(band);
  for (const key of ["p10", "p90"]) root.append(svg("polyline", { points: line(key).join(" "), class: `fan-edge ${key}` }));
  root.append(svg("polyline", { points: line("p50").join(" "), class: "fan-median" }));
  const base = height - pad.bottom;
  root.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: base, y2: base, class: "axis" }));
  // Day labels at least TICK_GAP pixels apart (fewer on a phone), the horizon's always shown.
  const TICK_GAP = 64;
  const endX = x(lastDay);
  let shown = pad.left;
  root.append(svg("text", { x: pad.left, y: height - 10, class: "tick" }, "today"));
  points.forEach((p, index) => {
    const px = x(p.day);
    const last = index === points.length - 1;
    if (index === 0 || (!last && (px - shown < TICK_GAP || endX - px < TICK_GAP))) return;
    shown = px;
    const anchor = last ? "end" : "middle";
    root.append(svg("text", { x: px, y: height - 10, "text-anchor": anchor, class: "tick" }, `day ${Math.round(p.day)}`));
  });
  const end = points.at(-1);
  const labels = [
    { value: end.p90, text: `P90 ${format(end.p90)}`, className: "p90" },
    { value: end.p50, text: `P50 ${format(end.p50)}`, className: "p50" },
    { value: end.p10, text: `P10 ${format(end.p10)}`, className: "p10" },
  ];
  let previous = -Infinity;
  for (const label of labels) {
    // Stacked from the top, at least a line apart, so close percentiles never overprint.
    const ly = Math.max(y(label.value) + 4, previous + 14);
    previous = ly;
    root.append(svg("text", { x: width - pad.right - 4, y: ly, "text-anchor": "end", class: `fan-label ${label.className}` }, label.text));
  }
  if (goal !== null && goal !== undefined) {
    const gy = y(goal);
    const group = svg("g", { class: "marker goal", "data-marker": "Goal" });
    group.append(svg("line", { x1: pad.left, x2: width - pad.right, y1: gy, y2: gy }));
    group.append(svg("text", { x: pad.left + 4, y: gy - 5 }, `Goal ${format(goal)}`));
    root.append(group);
  }
  return root;
}
