// Workers: every live worker (GET /workers) with its runtime, device, framework versions,
// state (and why, for one out of service), current job and its progress, loaded models
// and GPUs. Live: a worker event (up, down, lost) or a job starting or ending refetches
// the list, debounced; a progress event moves the current job's bar in place.
import { get, subscribeActivity, debounce } from "../api.js";
import { h, replace, age, progressBar, errorText, num } from "../dom.js";

/**
 * A GPU's line: name, memory (used of total when the worker reports use), utilisation.
 * @param {any} g a GpuRecord (newer workers may add memory_used_mb and utilization)
 */
function gpuLine(g) {
  const total = Number(g.memory_total_mb);
  const used = g.memory_used_mb ?? g.memory_used_bytes / 2 ** 20;
  const util = g.utilization ?? g.utilization_ratio ?? g.utilization_pct / 100;
  const memory = Number.isFinite(used) ? `${Math.round(used)} / ${total} MiB` : `${total} MiB`;
  const parts = [`#${g.index} ${g.name}`, memory];
  if (Number.isFinite(util)) parts.push(`${Math.round(util * 100)}% busy`);
  if (!g.in_service) parts.push(`out of service${g.problem ? `: ${g.problem}` : ""}`);
  const bar = Number.isFinite(used) && total > 0 ? h("meter", { min: "0", max: String(total), value: String(used) }) : null;
  return h("div", { class: g.in_service ? "gpu" : "gpu out" }, parts.join(" · "), bar ? " " : null, bar);
}

/** @param {import("../router.js").PageContext} ctx */
export async function workersPage({ main, signal, ready }) {
  const tbody = h("tbody");
  const status = h("p", { class: "muted" });
  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, "Workers")),
    status,
    h("table", { class: "workers" },
      h("thead", {}, h("tr", {}, ...["worker", "runtime", "device", "framework", "state", "current job", "loaded models", "GPUs", "host", "up since"].map((t) => h("th", {}, t)))),
      tbody));

  /** @type {Map<string, HTMLElement>} job id -> its progress cell */
  const progressCells = new Map();

  const load = async () => {
    try {
      const { workers } = await get("/workers", signal);
      progressCells.clear();
      replace(tbody, ...workers.map((/** @type {any} */ w) => {
        const versions = Object.entries(w.packages ?? {}).map(([k, v]) => `${k} ${v}`).join(", ");
        const progress = h("div", { class: "worker-progress" });
        if (w.current_job) progressCells.set(String(w.current_job), progress);
        return h("tr", { dataset: { workerId: String(w.worker_id) } },
          h("td", { class: "mono" }, w.worker_id),
          h("td", { dataset: { field: "runtime" } }, w.runtime),
          h("td", { dataset: { field: "device" } }, w.device),
          h("td", { dataset: { field: "framework" }, title: versions }, `${w.framework} ${w.framework_version}`, versions ? h("div", { class: "muted small" }, versions) : null),
          h("td", { dataset: { field: "state" } }, h("span", { class: `badge worker-${w.state}`, title: w.state_reason ?? "" }, w.state),
            // out_of_service: why (its training jobs' data is not visible) and what to fix
            w.state_reason ? h("div", { class: "muted small", dataset: { field: "state_reason" } }, w.state_reason) : null),
          h("td", { dataset: { field: "current_job" } },
            w.current_job ? h("a", { href: `#/jobs/${encodeURIComponent(w.current_job)}`, class: "mono" }, w.current_job) : "—", progress),
          h("td", { dataset: { field: "loaded_models" }, class: "mono" }, (w.loaded_models ?? []).join(", ") || "—"),
          h("td", { dataset: { field: "gpus" } }, ...(w.gpus?.length ? w.gpus.map(gpuLine) : ["—"])),
          h("td", {}, `${w.host} (pid ${num(w.pid)})`),
          h("td", { title: w.started_at ?? "" }, age(w.started_at)));
      }));
      if (!workers.length) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: "10" }, "no live workers")));
      status.textContent = `${workers.length} live worker${workers.length === 1 ? "" : "s"}`;
    } catch (err) {
      if (!signal.aborted) status.textContent = `could not load workers: ${errorText(err)}`;
    }
    ready();
  };

  const refresh = debounce(load, 250, 2000, signal);
  subscribeActivity(["worker", "state", "progress"], (e) => {
    const d = e.data ?? {};
    if (e.event === "worker") refresh();
    else if (e.event === "state") {
      if (d.state !== "queued") refresh(); // started or ended: a worker's current job changed
    } else {
      const cell = progressCells.get(String(d.job_id));
      if (cell) replace(cell, progressBar("running", d));
    }
  }, signal);
  await load();
}
