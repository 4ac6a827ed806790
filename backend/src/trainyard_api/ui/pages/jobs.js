// Jobs: one page (50) of GET /jobs at a time, through its cursor, so 100,000 jobs load as
// fast as 100. Live from the activity stream: known rows change state and progress in
// place; a job this page does not show yet (a new one) refetches the first page, debounced.
import { get, subscribeActivity, debounce } from "../api.js";
import { h, replace, stateBadge, age, progressBar, errorText } from "../dom.js";
import { go } from "../router.js";

const PAGE = 50;
const STATES = ["queued", "running", "retrying", "succeeded", "failed", "cancelled", "dead"];
const TYPES = ["training", "inference"];

/** Jobs picked for Compare; kept while paging and across visits (this tab only). */
export const picked = new Set();

/** @type {string[]|null} runtimes, from GET /routing (fetched once) */
let runtimes = null;

/**
 * The model a job trains or uses.
 * @param {any} job
 */
function modelOf(job) {
  return job.model_id ?? "";
}

/** @param {import("../router.js").PageContext} ctx */
export async function jobsPage({ main, query, signal, ready }) {
  /** @type {{state: string, runtime: string, job_type: string}} */
  const filters = {
    state: query.get("state") ?? "",
    runtime: query.get("runtime") ?? "",
    job_type: query.get("job_type") ?? "",
  };
  /** @type {string[]} cursors of the pages before this one (for "previous") */
  const back = [];
  /** @type {string|null} */
  let cursor = null;
  /** @type {string|null} */
  let next = null;
  /** @type {Map<string, {row: HTMLElement, job: any}>} */
  const rows = new Map();

  if (!runtimes) {
    try {
      const table = await get("/routing", signal);
      runtimes = table.runtimes.map((/** @type {any} */ r) => String(r.name));
    } catch {
      runtimes = [];
    }
  }

  /**
   * @param {string} name
   * @param {string[]} values
   */
  const select = (name, values) => {
    const el = /** @type {HTMLSelectElement} */ (
      h("select", { name, onchange: () => { filters[name] = el.value; back.length = 0; cursor = null; load(); } },
        h("option", { value: "" }, `any ${name.replace("_", " ")}`),
        ...values.map((v) => h("option", { value: v }, v)))
    );
    el.value = filters[name];
    return el;
  };

  const compareBtn = /** @type {HTMLButtonElement} */ (
    h("button", { type: "button", dataset: { action: "compare" }, onclick: () => go(`#/compare?ids=${[...picked].map(encodeURIComponent).join(",")}`) })
  );
  const updateCompare = () => {
    compareBtn.textContent = `Compare (${picked.size})`;
    compareBtn.disabled = picked.size < 1;
  };
  updateCompare();

  const firstBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "first-page" }, onclick: () => { back.length = 0; cursor = null; load(); } }, "⟨⟨ newest"));
  const prevBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "prev-page" }, onclick: () => { cursor = back.pop() ?? null; load(); } }, "⟨ newer"));
  const nextBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "next-page" }, onclick: () => { if (next) { back.push(cursor ?? ""); cursor = next; load(); } } }, "older ⟩"));
  const status = h("span", { class: "muted" });
  const tbody = h("tbody");
  const table = h("table", { class: "jobs" },
    h("thead", {}, h("tr", {},
      h("th", { title: "pick for Compare" }, "pick"), h("th", {}, "job"), h("th", {}, "state"), h("th", {}, "type"),
      h("th", {}, "runtime"), h("th", {}, "model"), h("th", {}, "progress"), h("th", {}, "age"), h("th", {}, "note"))),
    tbody);

  replace(main,
    h("div", { class: "toolbar" },
      h("h1", {}, "Jobs"),
      select("state", STATES), select("runtime", runtimes ?? []), select("job_type", TYPES),
      compareBtn),
    table,
    h("div", { class: "pager" }, firstBtn, prevBtn, nextBtn, status));

  /**
   * @param {any} job a JobStatus
   */
  const renderRow = (job) => {
    const id = String(job.job_id);
    const box = /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", dataset: { compareId: id }, title: "compare" }));
    box.checked = picked.has(id);
    box.disabled = job.job_type !== "training";
    box.addEventListener("change", () => {
      if (box.checked) picked.add(id);
      else picked.delete(id);
      updateCompare();
    });
    const description = job.request?.description ?? job.description ?? "";
    const row = h("tr", { dataset: { jobId: id } },
      h("td", {}, box),
      h("td", { class: "mono" }, h("a", { href: `#/jobs/${encodeURIComponent(id)}` }, id.length > 14 ? `${id.slice(0, 12)}…` : id)),
      h("td", { dataset: { field: "state" } }, stateBadge(job.status)),
      h("td", { dataset: { field: "job_type" } }, job.job_type),
      h("td", { dataset: { field: "runtime" } }, job.runtime),
      h("td", { dataset: { field: "model" }, class: "mono" }, modelOf(job)),
      h("td", { dataset: { field: "progress" } }, progressBar(job.status, job.progress)),
      h("td", { dataset: { field: "age" }, title: job.created_at ?? "" }, age(job.created_at)),
      h("td", {}, h("div", { class: "desc", title: description || job.waiting_reason || job.error || "" }, description || job.waiting_reason || job.error || "")));
    rows.set(id, { row, job });
    return row;
  };

  let loading = 0;
  const load = async () => {
    const mine = ++loading;
    const params = new URLSearchParams({ limit: String(PAGE) });
    for (const [k, v] of Object.entries(filters)) if (v) params.set(k, v);
    if (cursor) params.set("cursor", cursor);
    status.textContent = "loading…";
    try {
      const page = await get(`/jobs?${params}`, signal);
      if (mine !== loading) return;
      next = page.next_cursor ?? null;
      rows.clear();
      replace(tbody, ...page.jobs.map(renderRow));
      if (!page.jobs.length) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: "9" }, "no jobs")));
      status.textContent = `${page.jobs.length} job${page.jobs.length === 1 ? "" : "s"}${cursor ? " (older page)" : ""}`;
    } catch (err) {
      if (signal.aborted) return;
      status.textContent = `could not load jobs: ${errorText(err)}`;
    }
    nextBtn.disabled = !next;
    prevBtn.disabled = back.length === 0 && !cursor;
    firstBtn.disabled = !cursor;
    ready();
  };

  const refresh = debounce(() => { if (!cursor) load(); }, 300, 2000, signal);

  /**
   * Does a job with these fields belong on this page's filters?
   * @param {any} d
   */
  const matches = (d) =>
    (!filters.runtime || d.runtime === filters.runtime) && (!filters.job_type || d.job_type === filters.job_type);

  subscribeActivity(["state", "progress"], (e) => {
    const d = e.data ?? {};
    const known = rows.get(String(d.job_id));
    if (e.event === "progress") {
      if (!known) return;
      known.job.progress = d;
      replace(/** @type {HTMLElement} */ (known.row.querySelector("[data-field=progress]")), progressBar(known.job.status, d));
      return;
    }
    if (known) {
      known.job.status = d.state;
      if (d.state === "running" || d.state === "queued") known.job.progress = null;
      replace(/** @type {HTMLElement} */ (known.row.querySelector("[data-field=state]")), stateBadge(d.state));
      replace(/** @type {HTMLElement} */ (known.row.querySelector("[data-field=progress]")), progressBar(d.state, known.job.progress));
      // Succeeded jobs gain a model id; a filtered page may lose the row: refetch it.
      if (d.state === "succeeded" || filters.state) refresh();
    } else if (!cursor && matches(d) && (!filters.state || d.state === filters.state)) {
      refresh(); // a job this page does not show yet: new, or newly matching the filter
    }
  }, signal);

  // Ages tick locally (no request): once every 15 s.
  const ticker = setInterval(() => {
    for (const { row, job } of rows.values()) {
      const cell = row.querySelector("[data-field=age]");
      if (cell) cell.textContent = age(job.created_at);
    }
  }, 15000);
  signal.addEventListener("abort", () => clearInterval(ticker), { once: true });

  await load();
}
