// One job: its request, state timeline (every attempt), live metric charts, log tail,
// result and model; cancel and redrive. Everything live comes from the job's own event
// stream (GET /jobs/{id}/events), replayed from its start and then followed; a state
// event refetches the record (debounced) for the fields events do not carry.
import { get, post, stream, debounce } from "../api.js";
import { h, replace, stateBadge, when, progressBar, kvTable, json, errorText, duration } from "../dom.js";
import { ChartSet, groupOf, metricPoint } from "../charts.js";
import { go } from "../router.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled", "dead"]);
const LOG_LINES = 1000;

/**
 * The time a stream id was written (its first part is the server's time in ms).
 * @param {string} id
 */
function timeOfId(id) {
  const ms = Number(String(id).split("-")[0]);
  return Number.isFinite(ms) && ms > 0 ? new Date(ms).toLocaleTimeString() : "";
}

/**
 * @param {string|null|undefined} id
 * @param {string} [testid]
 */
function jobLink(id, testid) {
  return id ? h("a", { href: `#/jobs/${encodeURIComponent(id)}`, class: "mono", dataset: testid ? { testid } : undefined }, id) : "—";
}

/** @param {import("../router.js").PageContext} ctx */
export async function jobPage({ main, params, signal, ready }) {
  const id = params[0] ?? "";
  let rec = await get(`/jobs/${encodeURIComponent(id)}`, signal);
  const training = rec.job_type === "training";

  // ---- the fixed layout; render() fills it from the record
  const state = h("span", { dataset: { field: "state" } });
  const cancelBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "cancel" } }, "Cancel"));
  const redriveBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "button", dataset: { action: "redrive" }, title: "run this dead job again, as a new job" }, "Redrive"));
  const message = h("p", { class: "message", role: "status" });
  const summary = h("div", { class: "summary" });
  const description = h("p", { dataset: { field: "description" }, class: "description" });
  const error = h("pre", { dataset: { field: "error" }, class: "error-text" });
  const errorKind = h("span", { dataset: { field: "error_kind" }, class: "badge" });
  const request = h("div", { class: "request" });
  const progress = h("div", { class: "job-progress" });
  const charts = h("div", { class: "charts" });
  const noCharts = h("p", { class: "muted" }, "No metrics reported yet.");
  const timeline = h("ol", { dataset: { testid: "timeline" }, class: "timeline" });
  const log = h("pre", { dataset: { testid: "log" }, class: "log" });
  const result = h("pre", { dataset: { testid: "result" }, class: "result" });
  const modelBox = h("p");
  const inference = h("div", { class: "inference" });

  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, training ? "Training job " : "Inference job ", h("span", { class: "mono" }, id)), state, cancelBtn, redriveBtn),
    message,
    description,
    progress,
    h("div", { class: "error-box" }, h("span", {}, "error kind: "), errorKind, error),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Status"), summary),
      h("section", {}, h("h2", {}, "Request"), request)),
    training ? h("section", {}, h("h2", {}, "Training metrics"), noCharts, charts) : null,
    training ? null : h("section", {}, h("h2", {}, "Input and prediction"), inference),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Timeline"), timeline),
      h("section", {}, h("h2", {}, "Result"), modelBox, result)),
    h("section", {}, h("h2", {}, "Log"), log));

  const render = () => {
    replace(state, stateBadge(rec.status));
    cancelBtn.disabled = TERMINAL.has(rec.status) || rec.cancel_requested;
    cancelBtn.textContent = rec.cancel_requested && !TERMINAL.has(rec.status) ? "Cancelling…" : "Cancel";
    redriveBtn.disabled = rec.status !== "dead" || Boolean(rec.redriven_to);
    description.textContent = rec.request?.description ?? "";
    description.hidden = !description.textContent;
    error.textContent = rec.error ?? "";
    errorKind.textContent = rec.error_kind ?? "";
    errorKind.parentElement?.toggleAttribute("hidden", !rec.error && !rec.error_kind);
    replace(summary, kvTable({
      type: rec.job_type,
      runtime: rec.runtime,
      priority: rec.priority,
      attempt: `${rec.attempt} of ${rec.max_attempts}`,
      worker: rec.worker_id ?? "—",
      created: when(rec.created_at),
      started: when(rec.started_at),
      finished: when(rec.finished_at),
      ...(rec.started_at ? { "run time": duration(((rec.finished_at ? Date.parse(rec.finished_at) : Date.now()) - Date.parse(rec.started_at)) / 1000) } : {}),
      ...(rec.waiting_reason ? { "waiting because": rec.waiting_reason } : {}),
      ...(rec.retry_at ? { "retry at": when(rec.retry_at) } : {}),
      ...(rec.cancel_requested ? { "cancel requested": "yes" } : {}),
    }));
    if (rec.redriven_from || rec.redriven_to) {
      summary.append(h("p", {},
        rec.redriven_from ? h("span", {}, "redriven from ", jobLink(rec.redriven_from, "redriven-from"), " ") : null,
        rec.redriven_to ? h("span", {}, "redriven to ", jobLink(rec.redriven_to, "redriven-to")) : null));
    }
    replace(progress, rec.status === "running" || rec.progress ? progressBar(rec.status, rec.progress) : "");
    const req = rec.request ?? {};
    const { hyperparameters, parameters, input_data: input, ...rest } = req;
    const given = Object.fromEntries(Object.entries(rest).filter(([, v]) => v !== null && v !== undefined && v !== ""));
    replace(request,
      kvTable(given, "request"),
      hyperparameters ? h("h3", {}, "Hyperparameters") : null,
      hyperparameters ? kvTable(hyperparameters, "hyperparameters") : null,
      parameters && Object.keys(parameters).length ? h("h3", {}, "Parameters") : null,
      parameters && Object.keys(parameters).length ? kvTable(parameters, "parameters") : null);
    result.textContent = rec.result ? json(rec.result) : TERMINAL.has(rec.status) ? "no result" : "not finished yet";
    const modelId = training ? rec.model_id : req.model_id;
    replace(modelBox, modelId
      ? h("span", {}, training ? "Registered model: " : "Model: ",
        h("a", { href: `#/models?id=${encodeURIComponent(modelId)}`, dataset: { testid: "model-link" }, class: "mono" }, modelId))
      : "");
    if (!training) {
      // The answer without the model id (shown above): prediction(s), scores, top classes.
      const { model_id: _m, ...answer } = rec.result ?? {};
      replace(inference,
        h("h3", {}, "Input"), h("pre", { dataset: { testid: "input" } }, typeof input === "string" ? input : json(input)),
        h("h3", {}, "Prediction"),
        h("pre", { dataset: { testid: "prediction" } }, rec.result ? json(answer) : rec.error ? "no prediction (failed)" : "waiting…"));
    }
  };
  render();
  ready();

  // ---- actions
  cancelBtn.addEventListener("click", async () => {
    cancelBtn.disabled = true;
    try {
      rec = { ...rec, ...(await post(`/jobs/${encodeURIComponent(id)}/cancel`, undefined, signal)) };
      message.textContent = rec.status === "cancelled" ? "Cancelled." : "Cancel requested: the worker stops the job.";
      render();
    } catch (err) {
      message.textContent = `Cancel failed: ${errorText(err)}`;
      cancelBtn.disabled = false;
    }
  });
  redriveBtn.addEventListener("click", async () => {
    redriveBtn.disabled = true;
    try {
      const fresh = await post(`/jobs/${encodeURIComponent(id)}/redrive`, undefined, signal);
      go(`#/jobs/${encodeURIComponent(fresh.job_id)}`);
    } catch (err) {
      message.textContent = `Redrive failed: ${errorText(err)}`;
      redriveBtn.disabled = false;
    }
  });

  // ---- live: the job's event stream, from its start
  // The replay starts with history: a state event older than the record's last change
  // goes in the timeline only, so the state shown never steps back (running -> queued).
  const lastChange = () => Math.max(...[rec.created_at, rec.started_at, rec.finished_at].map((t) => (t ? Date.parse(t) : 0)));
  let changesSeen = 0;
  const refetch = debounce(async () => {
    const before = changesSeen;
    try {
      const fresh = await get(`/jobs/${encodeURIComponent(id)}`, signal);
      // An event that came while this read was on its way is newer than its answer.
      rec = changesSeen === before ? fresh : { ...fresh, status: rec.status };
      render();
    } catch (err) {
      if (!signal.aborted) message.textContent = `Could not refresh: ${errorText(err)}`;
    }
  }, 150, 1000, signal);

  const chartSet = new ChartSet(charts, signal);
  /** @type {string[]} */
  const lines = [];
  let logPending = false;
  const flushLog = () => {
    logPending = false;
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    log.textContent = lines.join("\n");
    if (atBottom) log.scrollTop = log.scrollHeight;
  };

  /** @param {import("../api.js").SseEvent} e */
  const onEvent = (e) => {
    const d = e.data && typeof e.data === "object" ? e.data : {};
    if (e.event === "state") {
      timeline.append(timelineItem(e.id, d));
      if (Number(String(e.id).split("-")[0]) > lastChange() && d.state !== rec.status) {
        rec = { ...rec, status: d.state };
        changesSeen++;
        render();
      }
      refetch();
    } else if (e.event === "progress") {
      rec = { ...rec, progress: d };
      replace(progress, progressBar(rec.status, d));
      const point = training ? metricPoint(d) : null;
      if (point) {
        for (const [name, v] of Object.entries(point.values)) chartSet.add(groupOf(name), name, point.x, v);
        noCharts.hidden = true;
      }
    } else if (e.event === "log") {
      const text = typeof d.line === "string" ? d.line : typeof e.data === "string" ? e.data : json(d);
      lines.push(d.stream === "stderr" ? `[stderr] ${text}` : text);
      if (lines.length > LOG_LINES) lines.splice(0, lines.length - LOG_LINES);
      if (!logPending) {
        logPending = true;
        requestAnimationFrame(flushLog);
      }
    } else if (e.event === "cancel_requested") {
      rec = { ...rec, cancel_requested: true };
      render();
    } else if (e.event === "redriven") {
      refetch();
    }
  };

  stream(`/jobs/${encodeURIComponent(id)}/events`, {
    signal,
    after: "0",
    onEvent,
    onEnd: () => refetch(),
    onError: (err, retry) => {
      message.textContent = retry < 0 ? `Event stream closed: ${errorText(err)}` : `Event stream interrupted; retrying in ${Math.round(retry / 1000)} s…`;
    },
    onOpen: () => {
      if (message.textContent.startsWith("Event stream")) message.textContent = "";
    },
  });
}

/**
 * One state change in the timeline.
 * @param {string} eventId
 * @param {Record<string, any>} d the state event's data
 */
function timelineItem(eventId, d) {
  const bits = [];
  if (d.attempt !== undefined) bits.push(`attempt ${d.attempt}`);
  if (d.worker_id) bits.push(`on ${d.worker_id}`);
  if (d.reason) bits.push(String(d.reason));
  if (d.retry_at) bits.push(`retry at ${new Date(Number(d.retry_at) || d.retry_at).toLocaleTimeString()}`);
  return h("li", { dataset: { state: String(d.state ?? "") } },
    h("time", {}, timeOfId(eventId)), " ", stateBadge(String(d.state ?? "?")),
    bits.length ? h("span", { class: "muted" }, ` ${bits.join(" · ")}`) : null,
    d.error_kind ? h("span", { class: "badge kind" }, String(d.error_kind)) : null,
    d.redriven_from ? h("span", {}, " from ", jobLink(String(d.redriven_from))) : null,
    d.error ? h("div", { class: "error-text" }, String(d.error)) : null);
}
