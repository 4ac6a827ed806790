// Training curves, drawn with the vendored uPlot (vendor/uplot, loaded by index.html as
// the global `uPlot`). Points come from progress events as they arrive; a chart redraws at
// most once per animation frame however fast they come.
//
// A progress event's data (see docs/API.md): {epoch, epochs, step, steps, fraction, phase,
// metrics: {loss, train_accuracy, val_loss, val_accuracy, learning_rate, samples_per_s,
// ...}}. Older workers sent `loss` at the top level and `metrics.accuracy` at epoch end:
// both are read.

/** Charts on a job's page, one per group of related metrics. */
export const GROUPS = [
  { name: "loss", title: "Loss", metrics: ["loss", "val_loss"] },
  { name: "accuracy", title: "Accuracy", metrics: ["train_accuracy", "val_accuracy", "accuracy"] },
  { name: "learning_rate", title: "Learning rate", metrics: ["learning_rate"] },
  { name: "samples_per_s", title: "Samples / s", metrics: ["samples_per_s"] },
];

/**
 * The chart a metric is drawn in on a job's page: its group, else a chart of its own.
 * @param {string} metric
 */
export function groupOf(metric) {
  const g = GROUPS.find((gr) => gr.metrics.includes(metric));
  return g ? g.name : metric;
}

/** @param {string} name */
function titleOf(name) {
  const g = GROUPS.find((gr) => gr.name === name);
  return g ? g.title : name;
}

// Chart order: the metrics as grouped, a group (job page) taking its first member's place.
const ORDER = ["loss", "val_loss", "train_accuracy", "val_accuracy", "accuracy", "learning_rate", "samples_per_s"];

/**
 * Sort key for charts: known metrics and groups in ORDER, then the rest by name.
 * @param {string} name
 */
function rank(name) {
  const i = ORDER.indexOf(name);
  return i >= 0 ? `0${String(i).padStart(2, "0")}` : `1${name}`;
}

/**
 * The point a progress event adds to the curves: x in epochs (1.5 = half-way through the
 * second epoch, so runs with different step counts line up), and its metric values.
 * Counts such as `n_train` are not curves and are left out.
 * @param {Record<string, any>} data a progress event's data
 * @returns {{x: number, values: Record<string, number>}|null}
 */
export function metricPoint(data) {
  if (!data || typeof data !== "object") return null;
  /** @type {Record<string, number>} */
  const values = {};
  if (data.metrics && typeof data.metrics === "object") {
    for (const [name, v] of Object.entries(data.metrics)) {
      if (typeof v === "number" && Number.isFinite(v) && !name.startsWith("n_")) values[name] = v;
    }
  }
  if (typeof data.loss === "number" && Number.isFinite(data.loss) && !("loss" in values)) {
    values.loss = data.loss;
  }
  if (!Object.keys(values).length) return null;
  const { epoch, epochs, step, steps, fraction } = data;
  let x = null;
  if (typeof epoch === "number") {
    x = typeof step === "number" && typeof steps === "number" && steps > 0
      ? Math.max(epoch - 1, 0) + step / steps
      : epoch;
  } else if (typeof fraction === "number") {
    x = fraction * (typeof epochs === "number" && epochs > 0 ? epochs : 1);
  }
  return x === null || !Number.isFinite(x) ? null : { x, values };
}

/**
 * A y value as text: small learning rates as 2.0e-4 rather than 0, big counts with
 * exponents rather than long digit runs.
 * @param {number|null|undefined} v
 */
export function formatY(v) {
  if (v === null || v === undefined || !Number.isFinite(v)) return "—";
  const a = Math.abs(v);
  if (a !== 0 && (a < 0.01 || a >= 1e6)) return v.toExponential(1);
  return String(Number(v.toPrecision(4)));
}

const PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#d97706", "#7c3aed", "#0891b2", "#db2777", "#4b5563"];

/** One chart: named series of (x, y) points, drawn with uPlot. */
export class Chart {
  /**
   * @param {HTMLElement} el the `div[data-chart=<name>]` to draw in
   * @param {string} title
   */
  constructor(el, title) {
    this.el = el;
    this.title = title;
    /** @type {Map<string, Map<number, number>>} series name -> x -> y */
    this.series = new Map();
    /** @type {any} the uPlot instance */
    this.plot = null;
    /** @type {string[]} the series the plot was built with */
    this.built = [];
    this.pending = false;
    this.el.dataset.points = "0";
    this.resize = new ResizeObserver(() => {
      if (this.plot) this.plot.setSize(this.size());
    });
    this.resize.observe(this.el);
  }

  size() {
    return { width: Math.max(280, this.el.clientWidth || 560), height: 220 };
  }

  /**
   * Add a point (the same x again replaces the value) and schedule a redraw.
   * @param {string} name
   * @param {number} x
   * @param {number} y
   */
  add(name, x, y) {
    let s = this.series.get(name);
    if (!s) this.series.set(name, (s = new Map()));
    s.set(x, y);
    if (!this.pending) {
      this.pending = true;
      requestAnimationFrame(() => this.draw());
    }
  }

  draw() {
    this.pending = false;
    const names = [...this.series.keys()];
    const xs = [...new Set(names.flatMap((n) => [...(this.series.get(n)?.keys() ?? [])]))].sort((a, b) => a - b);
    const data = [xs, ...names.map((n) => xs.map((x) => this.series.get(n)?.get(x) ?? null))];
    const points = names.reduce((sum, n) => sum + (this.series.get(n)?.size ?? 0), 0);
    const uPlot = /** @type {any} */ (globalThis).uPlot;
    if (!uPlot) {
      this.el.textContent = "charts unavailable (vendor/uplot did not load)";
    } else if (this.plot && names.join("\n") === this.built.join("\n")) {
      this.plot.setData(data);
    } else {
      this.plot?.destroy();
      this.el.replaceChildren();
      this.built = names;
      this.plot = new uPlot(
        {
          ...this.size(),
          title: this.title,
          scales: { x: { time: false } },
          axes: [{ label: "epoch" }, { size: 64, values: (/** @type {any} */ _u, /** @type {number[]} */ splits) => splits.map(formatY) }],
          series: [
            { label: "epoch", value: (_u, v) => (v === null || v === undefined ? "—" : v.toFixed(2)) },
            ...names.map((n, i) => ({
              label: n,
              stroke: PALETTE[i % PALETTE.length],
              width: 1.5,
              spanGaps: true,
              value: (/** @type {any} */ _u, /** @type {number|null} */ v) => formatY(v),
              points: { show: xs.length < 40, size: 5 },
            })),
          ],
        },
        data,
        this.el,
      );
    }
    this.el.dataset.points = String(points);
  }

  destroy() {
    this.resize.disconnect();
    this.plot?.destroy();
  }
}

/** Charts created on demand in a container, kept in a stable order. */
export class ChartSet {
  /**
   * @param {HTMLElement} container
   * @param {AbortSignal} signal destroys the charts when aborted
   */
  constructor(container, signal) {
    this.container = container;
    /** @type {Map<string, Chart>} */
    this.charts = new Map();
    signal.addEventListener("abort", () => this.charts.forEach((c) => c.destroy()), { once: true });
  }

  /**
   * @param {string} chart the chart's name (its data-chart attribute)
   * @param {string} series
   * @param {number} x
   * @param {number} y
   */
  add(chart, series, x, y) {
    let c = this.charts.get(chart);
    if (!c) {
      const el = document.createElement("div");
      el.className = "chart";
      el.dataset.chart = chart;
      const r = rank(chart);
      const after = [...this.charts.keys()].filter((k) => rank(k) > r).sort((a, b) => (rank(a) < rank(b) ? -1 : 1))[0];
      const before = after ? this.charts.get(after)?.el : null;
      this.container.insertBefore(el, before ?? null);
      c = new Chart(el, titleOf(chart));
      this.charts.set(chart, c);
    }
    c.add(series, x, y);
  }

  get size() {
    return this.charts.size;
  }
}
