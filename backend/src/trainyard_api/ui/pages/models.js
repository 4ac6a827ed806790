// Models: the registry (GET /models) with metrics and lineage (the training job, its data
// path and base model, read from the job's record), and a try-it form that submits an
// inference job and follows its event stream to the answer.
import { get, post, stream, subscribeActivity, debounce, ApiError } from "../api.js";
import { h, replace, when, num, json, errorText } from "../dom.js";
import { showErrors, clearErrors } from "./submit.js";

/** Inputs to start from, per task (the README's examples). */
const SAMPLE_INPUT = {
  tabular: "5.1,3.5,1.4,0.2",
  text: "This is a great product!",
  image: "/data/image_classification/cat/0.png",
};
const TASK = { random_forest: "tabular", svm: "tabular", bert: "text", transformer: "text", resnet: "image", vgg: "image", inception: "image", mobilenet: "image" };
const HEADLINE = ["accuracy", "val_accuracy", "train_accuracy", "loss", "val_loss", "log_loss"];

/**
 * The few metrics worth a column, as "name value" text.
 * @param {Record<string, number>} metrics
 */
function headline(metrics) {
  const names = HEADLINE.filter((n) => n in metrics);
  const rest = Object.keys(metrics).filter((n) => !names.includes(n) && !n.startsWith("n_"));
  return [...names, ...rest].slice(0, 4).map((n) => `${n} ${num(metrics[n])}`).join(" · ");
}

/** @param {import("../router.js").PageContext} ctx */
export async function modelsPage({ main, query, signal, ready }) {
  const tbody = h("tbody");
  const status = h("p", { class: "muted" });
  const select = /** @type {HTMLSelectElement} */ (h("select", { name: "model_id", required: true }));
  const input = /** @type {HTMLTextAreaElement} */ (h("textarea", { name: "input_data", rows: "3", spellcheck: "false" }));
  const params = /** @type {HTMLTextAreaElement} */ (h("textarea", { name: "parameters", rows: "2", spellcheck: "false" }, "{}"));
  const answer = h("pre", { dataset: { testid: "prediction" }, class: "result" });
  const jobNote = h("p", { class: "muted" });
  const runBtn = /** @type {HTMLButtonElement} */ (h("button", { type: "submit" }, "Run inference"));
  const form = /** @type {HTMLFormElement} */ (h("form", { dataset: { form: "try" }, class: "form" },
    h("label", {}, "model ", select, h("span", { class: "field-error", dataset: { errorFor: "model_id" } })),
    h("label", {}, "input_data (JSON) ", input, h("span", { class: "field-error", dataset: { errorFor: "input_data" } })),
    h("label", {}, "parameters (JSON) ", params, h("span", { class: "field-error", dataset: { errorFor: "parameters" } })),
    h("div", { class: "field-error", dataset: { errorFor: "_form" } }),
    runBtn, jobNote, h("h3", {}, "Answer"), answer));
  const detail = h("div", { class: "model-detail" });

  replace(main,
    h("div", { class: "toolbar" }, h("h1", {}, "Models")),
    status,
    h("table", { class: "models" },
      h("thead", {}, h("tr", {}, ...["model", "type", "runtime", "metrics", "training job", "data path", "base model", "created", "size", ""].map((t) => h("th", {}, t)))),
      tbody),
    h("div", { class: "columns" },
      h("section", {}, h("h2", {}, "Try it"), form),
      h("section", {}, h("h2", {}, "Details"), detail)));

  /** @type {Map<string, any>} */
  let models = new Map();

  /**
   * @param {string} id
   * @param {boolean} [keepInput] leave what the user typed
   */
  const choose = (id, keepInput = false) => {
    const m = models.get(id);
    if (!m) return;
    select.value = id;
    if (!keepInput) input.value = JSON.stringify(SAMPLE_INPUT[TASK[m.model_type] ?? "tabular"] ?? "");
    for (const tr of tbody.querySelectorAll("tr")) tr.classList.toggle("selected", /** @type {HTMLElement} */ (tr).dataset.modelId === id);
    replace(detail,
      h("h3", { class: "mono" }, m.model_id),
      m.description ? h("p", { dataset: { field: "description" } }, m.description) : null,
      h("h4", {}, "Metrics"), h("pre", {}, json(m.metrics)),
      h("h4", {}, "Hyperparameters"), h("pre", {}, json(m.hyperparameters)),
      h("h4", {}, "Labels"), h("p", {}, (m.label_names ?? []).join(", ") || "—"),
      h("h4", {}, "Artifact"), h("p", { class: "mono" }, `${m.artifact} (${num(m.size_bytes)} bytes)`),
      Object.keys(m.details ?? {}).length ? h("details", {}, h("summary", {}, "details"), h("pre", {}, json(m.details))) : null);
  };
  select.addEventListener("change", () => choose(select.value));

  /** @type {Map<string, {data: HTMLElement, base: HTMLElement}>} lineage cells per training job */
  const lineageCells = new Map();

  const load = async () => {
    try {
      const list = (await get("/models?limit=100", signal)).models;
      models = new Map(list.map((/** @type {any} */ m) => [String(m.model_id), m]));
      lineageCells.clear();
      const current = select.value;
      replace(select, ...list.map((/** @type {any} */ m) => h("option", { value: m.model_id }, `${m.model_id} (${m.model_type})`)));
      replace(tbody, ...list.map((/** @type {any} */ m) => {
        const data = h("td", { dataset: { field: "data_path" }, class: "mono" }, "…");
        const base = h("td", { dataset: { field: "base_model" }, class: "mono" }, "…");
        lineageCells.set(String(m.job_id), { data, base });
        return h("tr", { dataset: { modelId: String(m.model_id) } },
          h("td", { class: "mono" }, m.model_id),
          h("td", { dataset: { field: "model_type" } }, m.model_type),
          h("td", {}, m.runtime),
          h("td", { dataset: { field: "metrics" } }, headline(m.metrics ?? {})),
          h("td", { dataset: { field: "job" } }, h("a", { href: `#/jobs/${encodeURIComponent(m.job_id)}`, class: "mono" }, String(m.job_id).slice(0, 12))),
          data, base,
          h("td", { title: m.created_at }, when(m.created_at)),
          h("td", {}, `${(m.size_bytes / 2 ** 20).toFixed(1)} MiB`),
          h("td", {}, h("button", { type: "button", dataset: { action: "try" }, onclick: () => { choose(String(m.model_id)); input.focus(); } }, "Try")));
      }));
      if (!list.length) tbody.append(h("tr", { class: "empty" }, h("td", { colspan: "10" }, "no models yet: train one on the Submit page")));
      status.textContent = `${list.length} model${list.length === 1 ? "" : "s"}`;
      if (current && models.has(current)) choose(current, true);
      else {
        const want = query.get("id");
        choose(want && models.has(want) ? want : list[0]?.model_id ?? "");
      }
      fillLineage();
    } catch (err) {
      if (!signal.aborted) status.textContent = `could not load models: ${errorText(err)}`;
    }
    ready();
  };

  // Lineage needs each training job's record: read them four at a time, after the table is up.
  const fillLineage = async () => {
    const todo = [...lineageCells.entries()];
    const worker = async () => {
      for (let next; (next = todo.shift()); ) {
        const [jobId, cells] = next;
        try {
          const rec = await get(`/jobs/${encodeURIComponent(jobId)}`, signal);
          cells.data.textContent = rec.request?.data_path ?? "—";
          const baseId = rec.request?.base_model_id;
          replace(cells.base, baseId ? h("a", { href: `#/models?id=${encodeURIComponent(baseId)}` }, baseId) : "—");
        } catch {
          if (signal.aborted) return;
          cells.data.textContent = "(job gone)";
          cells.base.textContent = "—";
        }
      }
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
  };

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    clearErrors(form);
    /** @type {Record<string, unknown>} */
    const body = { model_id: select.value };
    try {
      body.input_data = JSON.parse(input.value);
    } catch {
      body.input_data = input.value; // a bare string is what was meant
    }
    try {
      body.parameters = params.value.trim() ? JSON.parse(params.value) : {};
    } catch (err) {
      showErrors(form, [{ field: "parameters", reason: `not valid JSON: ${errorText(err)}` }]);
      return;
    }
    runBtn.disabled = true;
    answer.textContent = "submitting…";
    try {
      const job = await post("/jobs/inference", body, signal);
      replace(jobNote, "job ", h("a", { href: `#/jobs/${encodeURIComponent(job.job_id)}`, class: "mono" }, job.job_id), " ", h("span", { dataset: { field: "state" } }, job.status));
      answer.textContent = "waiting for a worker…";
      await follow(job.job_id);
    } catch (err) {
      if (err instanceof ApiError && err.details.length) showErrors(form, err.details);
      else showErrors(form, [{ field: "_form", reason: errorText(err) }]);
      answer.textContent = "";
    } finally {
      runBtn.disabled = false;
    }
  });

  /**
   * Follow an inference job's events until it ends, then show its answer.
   * @param {string} jobId
   */
  const follow = async (jobId) => {
    const done = new AbortController();
    signal.addEventListener("abort", () => done.abort(), { once: true });
    await stream(`/jobs/${encodeURIComponent(jobId)}/events`, {
      signal: done.signal,
      after: "0",
      onEvent: (ev) => {
        const stateEl = jobNote.querySelector("[data-field=state]");
        if (ev.event === "state" && stateEl) stateEl.textContent = String(ev.data?.state ?? "");
        if (ev.event === "state" && ["running"].includes(ev.data?.state)) answer.textContent = "running…";
      },
    });
    if (signal.aborted) return;
    const st = await get(`/jobs/${encodeURIComponent(jobId)}/status`, signal);
    const stateEl = jobNote.querySelector("[data-field=state]");
    if (stateEl) stateEl.textContent = st.status;
    if (st.status === "succeeded" && st.result) {
      const { model_id: _m, ...rest } = st.result;
      answer.textContent = json(rest);
    } else {
      answer.textContent = `${st.status}: ${st.error ?? "no answer"}`;
    }
  };

  // A training job that succeeds registers a model: refetch then (debounced).
  const refresh = debounce(load, 500, 3000, signal);
  subscribeActivity(["state"], (ev) => {
    if (ev.data?.state === "succeeded" && ev.data?.job_type !== "inference") refresh();
  }, signal);
  await load();
}
