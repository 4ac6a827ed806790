// Submit: a training form and an inference form, prefilled with the README's examples.
// The API's errors go next to the field they name ([data-error-for=<field>], the field
// as the API names it, e.g. `hyperparameters.n_estimators`); the rest above the button
// ([data-error-for=_form]). On success: the new job's page.
import { get, post, ApiError } from "../api.js";
import { h, replace, errorText } from "../dom.js";
import { go } from "../router.js";

const TRAINING_EXAMPLE = {
  model_type: "random_forest",
  data_path: "/data/tabular_data.csv",
  hyperparameters: { n_estimators: 100, max_depth: 10, min_samples_split: 5, random_state: 42 },
  description: "Train Random Forest for classification",
  runtime: "sklearn",
};
const INFERENCE_EXAMPLE = {
  model_id: "random_forest_model_789",
  input_data: "5.1,3.5,1.4,0.2",
  parameters: { probability: true },
};

/**
 * Remove the errors a form shows.
 * @param {HTMLElement} form
 */
export function clearErrors(form) {
  for (const el of form.querySelectorAll("[data-error-for]")) {
    if (/** @type {HTMLElement} */ (el).dataset.dynamic) el.remove();
    else el.textContent = "";
  }
}

/**
 * Show API error details next to their fields: the slot for the field itself, else a new
 * slot (named for the full field) inside the slot of its nearest parent field
 * (`hyperparameters.n_estimators` under `hyperparameters`), else the form's own slot.
 * @param {HTMLElement} form
 * @param {{field: string, reason: string}[]} details
 */
export function showErrors(form, details) {
  for (const { field, reason } of details) {
    const name = field.replace(/^body\.?/, "") || "_form";
    const slot = [...form.querySelectorAll("[data-error-for]")].find((el) => /** @type {HTMLElement} */ (el).dataset.errorFor === name);
    if (slot) {
      slot.textContent = slot.textContent ? `${slot.textContent}; ${reason}` : reason;
      continue;
    }
    const parts = name.split(".");
    let parent = null;
    for (let n = parts.length - 1; n > 0 && !parent; n--) {
      const prefix = parts.slice(0, n).join(".");
      parent = [...form.querySelectorAll("[data-error-for]")].find((el) => /** @type {HTMLElement} */ (el).dataset.errorFor === prefix && !(/** @type {HTMLElement} */ (el).dataset.dynamic));
    }
    if (parent) {
      parent.after(h("span", { class: "field-error", dataset: { errorFor: name, dynamic: "1" } }, `${name}: ${reason}`));
    } else {
      const general = form.querySelector("[data-error-for=_form]");
      if (general) general.textContent = `${general.textContent ? `${general.textContent}; ` : ""}${name === "_form" ? "" : `${name}: `}${reason}`;
    }
  }
}

/**
 * A labelled field with its error slot.
 * @param {string} label
 * @param {HTMLElement} control
 * @param {string} errorFor the API's name for the field
 * @param {string} [hint]
 */
function field(label, control, errorFor, hint) {
  return h("div", { class: "field" },
    h("label", {}, h("span", { class: "label" }, label), control),
    hint ? h("small", { class: "muted" }, hint) : null,
    h("span", { class: "field-error", dataset: { errorFor } }));
}

/**
 * @param {string} name
 * @param {string} value
 * @param {Record<string, any>} [attrs]
 */
const text = (name, value, attrs = {}) => /** @type {HTMLInputElement} */ (h("input", { name, value, ...attrs }));
/**
 * @param {string} name
 * @param {string} value
 * @param {number} rows
 */
const area = (name, value, rows) => {
  const el = /** @type {HTMLTextAreaElement} */ (h("textarea", { name, rows: String(rows), spellcheck: "false" }));
  el.value = value;
  return el;
};
/**
 * @param {string} name
 * @param {[string, string][]} options value, label
 * @param {string} value
 */
const choice = (name, options, value) => {
  const el = /** @type {HTMLSelectElement} */ (h("select", { name }, ...options.map(([v, l]) => h("option", { value: v }, l))));
  el.value = value;
  return el;
};

/**
 * Parse a JSON field, or show why not and return undefined.
 * @param {HTMLElement} form
 * @param {string} name
 * @param {string} raw
 * @param {boolean} [lenient] take text that is not JSON as a string
 */
function parseJson(form, name, raw, lenient = false) {
  try {
    return JSON.parse(raw);
  } catch (err) {
    if (lenient) return raw;
    showErrors(form, [{ field: name, reason: `not valid JSON: ${errorText(err)}` }]);
    return undefined;
  }
}

/**
 * Submit a body and go to the new job, or show the API's errors.
 * @param {HTMLFormElement} form
 * @param {string} path
 * @param {Record<string, unknown>} body
 * @param {AbortSignal} signal
 */
async function send(form, path, body, signal) {
  const button = /** @type {HTMLButtonElement|null} */ (form.querySelector("button[type=submit]"));
  if (button) button.disabled = true;
  try {
    const job = await post(path, body, signal);
    go(`#/jobs/${encodeURIComponent(job.job_id)}`);
  } catch (err) {
    if (signal.aborted) return;
    if (err instanceof ApiError && err.details.length) showErrors(form, err.details);
    else showErrors(form, [{ field: "_form", reason: errorText(err) }]);
  } finally {
    if (button) button.disabled = false;
  }
}

/** @param {import("../router.js").PageContext} ctx */
export async function submitPage({ main, signal, ready }) {
  /** @type {any} */
  let routing = { runtimes: [], model_types: [] };
  try {
    routing = await get("/routing", signal);
  } catch {
    /* the form still works; the fields are typed in */
  }
  const runtimes = routing.runtimes.map((/** @type {any} */ r) => String(r.name));
  const types = routing.model_types.map((/** @type {any} */ m) => String(m.model_type));
  if (!types.includes(TRAINING_EXAMPLE.model_type)) types.unshift(TRAINING_EXAMPLE.model_type);
  if (!runtimes.includes(TRAINING_EXAMPLE.runtime)) runtimes.push(TRAINING_EXAMPLE.runtime);
  const priorities = /** @type {[string, string][]} */ ([["normal", "normal"], ["high", "high"], ["low", "low"]]);

  const training = /** @type {HTMLFormElement} */ (h("form", { dataset: { form: "training" }, class: "form", novalidate: true },
    h("h2", {}, "Training job"),
    field("model_type", choice("model_type", types.map((t) => [t, t]), TRAINING_EXAMPLE.model_type), "model_type"),
    field("data_path", text("data_path", TRAINING_EXAMPLE.data_path), "data_path", "a path in the data root, e.g. /data/tabular_data.csv"),
    field("hyperparameters (JSON)", area("hyperparameters", JSON.stringify(TRAINING_EXAMPLE.hyperparameters, null, 2), 7), "hyperparameters", "each model type's hyperparameters: docs/MODELS.md"),
    field("description", text("description", TRAINING_EXAMPLE.description), "description"),
    field("runtime", choice("runtime", [["", "route by model type"], ...runtimes.map((r) => /** @type {[string, string]} */ ([r, r]))], TRAINING_EXAMPLE.runtime), "framework_override", "sent as framework_override"),
    field("requires GPU", /** @type {HTMLInputElement} */ (h("input", { type: "checkbox", name: "requires_gpu" })), "requires_gpu"),
    field("register as (model_id)", text("model_id", "", { placeholder: "random_forest_model_789" }), "model_name", "sent as model_name; empty: a generated id"),
    field("base_model_id", text("base_model_id", "", { placeholder: "fine-tune from this model" }), "base_model_id"),
    field("priority", choice("priority", priorities, "normal"), "priority"),
    h("div", { class: "field-error", dataset: { errorFor: "_form" } }),
    h("button", { type: "submit" }, "Submit training job")));

  const inference = /** @type {HTMLFormElement} */ (h("form", { dataset: { form: "inference" }, class: "form", novalidate: true },
    h("h2", {}, "Inference job"),
    field("model_id", text("model_id", INFERENCE_EXAMPLE.model_id, { list: "known-models" }), "model_id"),
    h("datalist", { id: "known-models" }),
    field("input_data (JSON)", area("input_data", JSON.stringify(INFERENCE_EXAMPLE.input_data), 3), "input_data", "a JSON string, or a list of inputs for a batch"),
    field("parameters (JSON)", area("parameters", JSON.stringify(INFERENCE_EXAMPLE.parameters, null, 2), 3), "parameters"),
    field("priority", choice("priority", priorities, "normal"), "priority"),
    h("div", { class: "field-error", dataset: { errorFor: "_form" } }),
    h("button", { type: "submit" }, "Submit inference job")));

  replace(main, h("div", { class: "toolbar" }, h("h1", {}, "Submit")), h("div", { class: "columns" }, training, inference));
  ready();

  /**
   * @param {HTMLFormElement} form
   * @param {string} name
   */
  const value = (form, name) => {
    const el = /** @type {HTMLInputElement|null} */ (form.elements.namedItem(name));
    return el ? (el.type === "checkbox" ? el.checked : el.value.trim()) : "";
  };

  training.addEventListener("submit", (e) => {
    e.preventDefault();
    clearErrors(training);
    const hyperparameters = parseJson(training, "hyperparameters", String(value(training, "hyperparameters") || "{}"));
    if (hyperparameters === undefined) return;
    /** @type {Record<string, unknown>} */
    const body = {
      model_type: value(training, "model_type"),
      data_path: value(training, "data_path"),
      hyperparameters,
      description: value(training, "description"),
      requires_gpu: value(training, "requires_gpu"),
      priority: value(training, "priority"),
    };
    const optional = { framework_override: "runtime", model_name: "model_id", base_model_id: "base_model_id" };
    for (const [api, name] of Object.entries(optional)) {
      const v = value(training, name);
      if (v) body[api] = v;
    }
    send(training, "/jobs/training", body, signal);
  });

  inference.addEventListener("submit", (e) => {
    e.preventDefault();
    clearErrors(inference);
    const parameters = parseJson(inference, "parameters", String(value(inference, "parameters") || "{}"));
    if (parameters === undefined) return;
    const body = {
      model_id: value(inference, "model_id"),
      input_data: parseJson(inference, "input_data", String(value(inference, "input_data")), true),
      parameters,
      priority: value(inference, "priority"),
    };
    send(inference, "/jobs/inference", body, signal);
  });

  // Known model ids as suggestions (not needed for the form to work).
  get("/models?limit=100", signal).then(({ models }) => {
    const list = main.querySelector("#known-models");
    if (list) replace(list, ...models.map((/** @type {any} */ m) => h("option", { value: m.model_id })));
  }).catch(() => {});
}
