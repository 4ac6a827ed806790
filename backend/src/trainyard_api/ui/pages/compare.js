// Compare: the curves of several training jobs overlaid (one chart per metric, one series
// per job) and their hyperparameters side by side. Each job's event stream is replayed
// from its start; a running job's curve keeps growing live.
import { get, stream } from "../api.js";
import { h, replace, stateBadge, num, errorText } from "../dom.js";
import { ChartSet, metricPoint } from "../charts.js";
import { go } from "../router.js";
import { picked } from "./jobs.js";

const MAX_JOBS = 8;

/**
 * A short label for a job in legends and column heads.
 * @param {any} rec
 */
function labelOf(rec) {
  const id = String(rec.job_id);
  const name = rec.request?.model_name || rec.model_id;
  return `${name ? `${name} ` : ""}${id.slice(0, 8)}`;
}

/** @param {import("../router.js").PageContext} ctx */
export async function comparePage(ctx) {
  const ids = (ctx.query.get("ids") ?? "").split(",").map((s) => s.trim()).filter(Boolean).slice(0, MAX_JOBS);
  if (!ids.length) return pickJobs(ctx);
  const { main, signal, ready } = ctx;

  const settled = await Promise.allSettled(ids.map((id) => get(`/jobs/${encodeURIComponent(id)}`, signal)));
  /** @type {any[]} */
  const recs = [];
  const problems = [];
  settled.forEach((s, i) => {
    if (s.status === "fulfilled") recs.push(s.value);
    else problems.push(`${ids[i]}: ${errorText(s.reason)}`);
  });

  const charts = h("div", { class: "charts" });
  const empty = h("p", { class: "muted" }, "No metrics reported by these jobs yet.");
  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, `Compare ${recs.length} job${recs.length === 1 ? "" : "s"}`),
      h("button", { type: "button", dataset: { action: "pick" }, onclick: () => go("#/compare") }, "Pick other jobs")),
    problems.length ? h("p", { class: "error" }, `Not found: ${problems.join("; ")}`) : null,
    h("section", {}, h("h2", {}, "Hyperparameters"), paramTable(recs)),
    h("section", {}, h("h2", {}, "Curves"), empty, charts));
  ready();

  const set = new ChartSet(charts, signal);
  for (const rec of recs) {
    const label = labelOf(rec);
    stream(`/jobs/${encodeURIComponent(rec.job_id)}/events`, {
      signal,
      after: "0",
      onEvent: (e) => {
        if (e.event !== "progress") return;
        const point = metricPoint(e.data);
        if (!point) return;
        for (const [name, v] of Object.entries(point.values)) set.add(name, label, point.x, v);
        empty.hidden = true;
      },
    });
  }
}

/**
 * Jobs as columns; request fields, hyperparameters and final metrics as rows.
 * @param {any[]} recs
 */
function paramTable(recs) {
  /** @type {[string, (r: any) => unknown][]} */
  const rows = [
    ["state", (r) => r.status],
    ["model type", (r) => r.request?.model_type],
    ["runtime", (r) => r.runtime],
    ["data path", (r) => r.request?.data_path],
    ["base model", (r) => r.request?.base_model_id],
    ["description", (r) => r.request?.description],
  ];
  const hp = [...new Set(recs.flatMap((r) => Object.keys(r.request?.hyperparameters ?? {})))].sort();
  for (const name of hp) rows.push([`hp: ${name}`, (r) => r.request?.hyperparameters?.[name]]);
  const metrics = [...new Set(recs.flatMap((r) => Object.keys(r.result?.metrics ?? {})))].sort();
  for (const name of metrics) rows.push([`final ${name}`, (r) => num(r.result?.metrics?.[name])]);

  /** @param {unknown} v hyperparameters as given (0.0005 stays 0.0005) */
  const cell = (v) => (v === undefined || v === null || v === "" || v === "undefined" ? "—" : typeof v === "object" ? JSON.stringify(v) : String(v));
  return h("table", { dataset: { testid: "hyperparameters" }, class: "compare" },
    h("thead", {}, h("tr", {}, h("th", {}, ""),
      ...recs.map((r) => h("th", { dataset: { jobId: String(r.job_id) } }, h("a", { href: `#/jobs/${encodeURIComponent(r.job_id)}` }, labelOf(r)))))),
    h("tbody", {}, ...rows.map(([name, pick]) => {
      const values = recs.map((r) => cell(pick(r)));
      const differs = new Set(values).size > 1;
      return h("tr", { class: differs ? "differs" : "", dataset: { param: name } }, h("th", {}, name),
        ...values.map((v, i) => h("td", {}, name === "state" ? stateBadge(String(recs[i].status)) : v)));
    })));
}

/**
 * No jobs named yet: list recent training jobs to pick from.
 * @param {import("../router.js").PageContext} ctx
 */
async function pickJobs({ main, signal, ready }) {
  const page = await get("/jobs?job_type=training&limit=50", signal);
  const button = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "compare" } }));
  const update = () => {
    button.textContent = `Compare (${picked.size})`;
    button.disabled = picked.size < 1;
  };
  button.addEventListener("click", () => go(`#/compare?ids=${[...picked].map(encodeURIComponent).join(",")}`));
  update();
  const rows = page.jobs.map((/** @type {any} */ j) => {
    const id = String(j.job_id);
    const box = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", dataset: { compareId: id } }));
    box.checked = picked.has(id);
    box.addEventListener("change", () => { if (box.checked) picked.add(id); else picked.delete(id); update(); });
    return h("tr", { dataset: { jobId: id } }, h("td", {}, box),
      h("td", { class: "mono" }, h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, id)),
      h("td", {}, stateBadge(j.status)), h("td", {}, j.runtime), h("td", { class: "mono" }, j.model_id ?? ""));
  });
  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, "Compare training jobs"), button),
    h("p", { class: "muted" }, "Pick the runs to overlay (the 50 newest training jobs; the Jobs page picks from any page)."),
    h("table", { class: "jobs" }, h("thead", {}, h("tr", {}, h("th", {}, ""), h("th", {}, "job"), h("th", {}, "state"), h("th", {}, "runtime"), h("th", {}, "model"))),
      h("tbody", {}, ...rows)));
  ready();
}
