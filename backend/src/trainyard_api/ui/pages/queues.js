// Queues: depth per runtime and priority (GET /queues), the oldest wait, and why jobs wait:
// the same explanation a queued job's `waiting_reason` gives (no live worker serves its
// runtime), or that every worker of it is busy; then the routing table (GET /routing) that
// decides which runtime a job goes to. Live: job state and worker events refetch, debounced.
import { get, request, subscribeActivity, debounce } from "../api.js";
import { h, replace, duration, errorText } from "../dom.js";

/**
 * The oldest wait per runtime from the Prometheus exposition (`trainyard_oldest_wait_seconds`),
 * for APIs whose GET /queues does not carry it.
 * @param {string} text
 * @returns {Map<string, number>}
 */
export function oldestWaits(text) {
  const out = new Map();
  const re = /^trainyard_oldest_wait_seconds\{([^}]*)\}\s+(\S+)/gm;
  for (let m; (m = re.exec(text)); ) {
    const runtime = /runtime="([^"]*)"/.exec(m[1]);
    const value = Number(m[2]);
    if (runtime && Number.isFinite(value)) out.set(runtime[1], value);
  }
  return out;
}

/**
 * Why this runtime's jobs wait.
 * @param {string} runtime
 * @param {any} q its QueueDepth
 * @param {number} busy live workers of it running a job
 */
function whyWaiting(runtime, q, busy) {
  if (!q.total) return "nothing waiting";
  if (!q.live_workers) return `no live worker serves runtime ${runtime}: start one (WORKER_TYPE=${runtime})`;
  if (busy >= q.live_workers) return `all ${q.live_workers} worker${q.live_workers === 1 ? " is" : "s are"} busy`;
  return `${q.live_workers - busy} idle worker${q.live_workers - busy === 1 ? "" : "s"} taking them`;
}

/** @param {import("../router.js").PageContext} ctx */
export async function queuesPage({ main, signal, ready }) {
  const tbody = h("tbody");
  const states = h("div", { class: "states" });
  const status = h("p", { class: "muted" });
  const routing = h("div");
  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, "Queues")),
    status,
    h("table", { class: "queues" },
      h("thead", {}, h("tr", {}, ...["runtime", "high", "normal", "low", "total", "live workers", "busy", "oldest wait", "why jobs wait"].map((t) => h("th", {}, t)))),
      tbody),
    h("h2", {}, "Jobs by state"), states,
    h("h2", {}, "Routing"), routing);

  try {
    const table = await get("/routing", signal);
    replace(routing,
      h("table", { class: "routing" },
        h("thead", {}, h("tr", {}, ...["model type", "framework", "task", "CPU runtime", "GPU runtime"].map((t) => h("th", {}, t)))),
        h("tbody", {}, ...table.model_types.map((/** @type {any} */ m) =>
          h("tr", { dataset: { modelType: String(m.model_type) } }, h("td", {}, m.model_type), h("td", {}, m.framework), h("td", {}, m.task), h("td", {}, m.cpu_runtime ?? "—"), h("td", {}, m.gpu_runtime ?? "—"))))),
      h("p", { class: "muted" }, `${table.inference}; ${table.fine_tuning}.`));
  } catch (err) {
    if (!signal.aborted) routing.textContent = `could not load the routing table: ${errorText(err)}`;
  }

  const load = async () => {
    try {
      const [queues, workers, metrics] = await Promise.all([
        get("/queues", signal),
        get("/workers", signal).catch(() => ({ workers: [] })),
        request("GET", "/metrics", { signal, text: true }).catch(() => ""),
      ]);
      const waits = oldestWaits(metrics);
      /** @type {Map<string, number>} */
      const busy = new Map();
      for (const w of workers.workers) if (w.current_job) busy.set(w.runtime, (busy.get(w.runtime) ?? 0) + 1);
      replace(tbody, ...Object.entries(queues.queues).map(([runtime, /** @type {any} */ q]) => {
        const wait = q.oldest_wait_s ?? waits.get(runtime);
        return h("tr", { dataset: { runtime }, class: q.total && !q.live_workers ? "stuck" : "" },
          h("td", {}, runtime),
          h("td", { dataset: { field: "high" } }, String(q.high)),
          h("td", { dataset: { field: "normal" } }, String(q.normal)),
          h("td", { dataset: { field: "low" } }, String(q.low)),
          h("td", { dataset: { field: "total" } }, String(q.total)),
          h("td", { dataset: { field: "live_workers" } }, String(q.live_workers)),
          h("td", { dataset: { field: "busy" } }, String(busy.get(runtime) ?? 0)),
          h("td", { dataset: { field: "oldest_wait" } }, q.total && typeof wait === "number" ? duration(wait) : "—"),
          h("td", { dataset: { field: "why" } }, whyWaiting(runtime, q, busy.get(runtime) ?? 0)));
      }));
      replace(states, ...Object.entries(queues.jobs_by_state).map(([state, n]) =>
        h("a", { class: `badge state-${state}`, href: `#/jobs?state=${encodeURIComponent(state)}`, dataset: { state } }, `${state}: ${n}`)));
      status.textContent = "";
    } catch (err) {
      if (!signal.aborted) status.textContent = `could not load queues: ${errorText(err)}`;
    }
    ready();
  };

  const refresh = debounce(load, 400, 3000, signal);
  subscribeActivity(["state", "worker"], refresh, signal);
  await load();
}
