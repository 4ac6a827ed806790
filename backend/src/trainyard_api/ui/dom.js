// Small DOM helpers. Everything from the API goes in as text (textContent, attribute
// values): never as HTML, so a job description like `<img src=x onerror=...>` stays text.

/**
 * Create an element. `attrs`: `class`, `dataset` (object), `on<event>` handlers, boolean
 * and string properties/attributes; children: nodes or strings (strings become text).
 * @param {string} tag
 * @param {Record<string, any>} [attrs]
 * @param {...(Node|string|number|null|undefined|false)} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === "class") el.className = String(value);
    else if (name === "dataset") Object.assign(el.dataset, value);
    else if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (value === true) el.setAttribute(name, "");
    else el.setAttribute(name, String(value));
  }
  append(el, children);
  return el;
}

/**
 * @param {Element} el
 * @param {(Node|string|number|null|undefined|false)[]} children
 */
export function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/**
 * Replace an element's children.
 * @param {Element} el
 * @param {...(Node|string|number|null|undefined|false)} children
 */
export function replace(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * A job's state as a badge.
 * @param {string} state
 */
export function stateBadge(state) {
  return h("span", { class: `badge state-${state}` }, state);
}

/** @param {number} seconds */
export function duration(seconds) {
  if (!Number.isFinite(seconds)) return "—";
  const s = Math.max(0, Math.round(seconds));
  if (s < 60) return `${s}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`;
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
}

/**
 * How long ago, in its largest unit only ("3m ago"): a list column stays narrow.
 * @param {string|null|undefined} iso
 */
export function age(iso) {
  if (!iso) return "—";
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return "—";
  const s = Math.max(0, (Date.now() - t) / 1000);
  if (s < 60) return `${Math.floor(s)}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return `${Math.floor(s / 86400)}d ago`;
}

/** @param {string|null|undefined} iso */
export function when(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString();
}

/** @param {unknown} v */
export function num(v) {
  if (typeof v !== "number" || !Number.isFinite(v)) return String(v ?? "—");
  if (Number.isInteger(v)) return String(v);
  return Math.abs(v) >= 1000 || Math.abs(v) < 0.001 ? v.toPrecision(4) : v.toFixed(4);
}

/** @param {unknown} v pretty JSON, for a <pre> */
export function json(v) {
  return JSON.stringify(v, null, 2);
}

/**
 * A progress cell's content from a job's state and last progress event.
 * @param {string} state
 * @param {Record<string, any>|null|undefined} p
 * @returns {{fraction: number|null, label: string}}
 */
export function progressOf(state, p) {
  if (state === "succeeded") return { fraction: 1, label: "done" };
  if (!p) return { fraction: null, label: state === "running" ? "starting" : "" };
  let fraction = typeof p.fraction === "number" ? p.fraction : null;
  const { epoch, epochs, step, steps } = p;
  if (fraction === null && typeof epoch === "number" && typeof epochs === "number" && epochs > 0) {
    const within = typeof step === "number" && typeof steps === "number" && steps > 0 ? step / steps : 1;
    fraction = Math.min(1, Math.max(0, (Math.max(epoch, 1) - 1 + within) / epochs));
    if (epoch === 0) fraction = 0;
  }
  let label = "";
  if (typeof epoch === "number" && typeof epochs === "number") label = `epoch ${epoch}/${epochs}`;
  if (typeof step === "number" && typeof steps === "number" && step < steps) label += ` · step ${step}/${steps}`;
  if (typeof p.eta_s === "number" && state === "running") label += ` · eta ${duration(p.eta_s)}`;
  return { fraction, label: label.trim() };
}

/**
 * A progress bar with its label.
 * @param {string} state
 * @param {Record<string, any>|null|undefined} p
 */
export function progressBar(state, p) {
  const { fraction, label } = progressOf(state, p);
  const bar = h("progress", { max: "1" });
  if (fraction !== null) /** @type {HTMLProgressElement} */ (bar).value = fraction;
  else if (state !== "running") bar.hidden = true;
  return h("span", { class: "progress" }, bar, h("small", {}, label));
}

/**
 * A key/value table from an object (values as text; objects as JSON).
 * @param {Record<string, unknown>} obj
 * @param {string} [testid]
 */
export function kvTable(obj, testid) {
  const rows = Object.entries(obj).map(([k, v]) =>
    h("tr", {}, h("th", {}, k), h("td", {}, typeof v === "object" && v !== null ? JSON.stringify(v) : num(v))),
  );
  return h("table", { class: "kv", dataset: testid ? { testid } : undefined }, h("tbody", {}, ...rows));
}

/**
 * A message for an error (an ApiError names its fields).
 * @param {any} err
 */
export function errorText(err) {
  if (err && Array.isArray(err.details) && err.details.length) {
    return `${err.message} (${err.details.map((d) => `${d.field}: ${d.reason}`).join("; ")})`;
  }
  return err && err.message ? String(err.message) : String(err);
}
