// The API client: every call goes through request() (JSON) or stream() (Server-Sent
// Events over fetch), both carrying the API key when one is set. The key lives in
// sessionStorage only (gone when the tab closes) and is never put into the page.
//
// Streams use fetch() + a ReadableStream reader instead of EventSource, because
// EventSource cannot send an Authorization header.

const KEY_STORAGE = "trainyard.api_key";

/** An error answered by the API, in its one shape: {error: {status, code, message, details}}. */
export class ApiError extends Error {
  /**
   * @param {number} status
   * @param {string} code
   * @param {string} message
   * @param {{field: string, reason: string}[]} details
   */
  constructor(status, code, message, details) {
    super(message);
    this.status = status;
    this.code = code;
    this.details = details;
  }
}

/** @returns {string|null} */
function storedKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE);
  } catch {
    return null; // storage disabled: ask again on each 401
  }
}

/** @param {string} key */
function storeKey(key) {
  try {
    sessionStorage.setItem(KEY_STORAGE, key);
  } catch {
    /* storage disabled: the key lives for this call only */
  }
}

/** @returns {Record<string, string>} */
function authHeaders() {
  const key = storedKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// ---------------------------------------------------------------- the key prompt

/** @type {Promise<void>|null} one prompt at a time, shared by every call that got 401 */
let prompting = null;

/**
 * Show the key form and resolve once a key was entered. Every request that got 401
 * waits on the same prompt and then retries.
 * @param {boolean} refused whether a key was sent and refused
 * @returns {Promise<void>}
 */
function askForKey(refused) {
  if (prompting) return prompting;
  prompting = new Promise((resolve) => {
    const dialog = document.createElement("div");
    dialog.className = "key-dialog";
    const form = document.createElement("form");
    form.dataset.form = "api-key";
    form.autocomplete = "off";
    const title = document.createElement("h2");
    title.textContent = "API key needed";
    const note = document.createElement("p");
    note.textContent = refused
      ? "The API refused the key. Enter a valid one."
      : "This Trainyard API needs a key. It is kept in this tab only (sessionStorage).";
    const label = document.createElement("label");
    label.textContent = "API key ";
    const input = document.createElement("input");
    input.type = "password";
    input.name = "api_key";
    input.required = true;
    input.autocomplete = "off";
    label.append(input);
    const button = document.createElement("button");
    button.type = "submit";
    button.textContent = "Use key";
    form.append(title, note, label, button);
    dialog.append(form);
    document.body.append(dialog);
    input.focus();
    form.addEventListener("submit", (e) => {
      e.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      storeKey(key);
      input.value = "";
      dialog.remove();
      prompting = null;
      resolve();
    });
  });
  return prompting;
}

/** Forget the key (the nav's "forget key" link). */
export function forgetKey() {
  try {
    sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    /* nothing stored */
  }
}

// ---------------------------------------------------------------- JSON calls

/**
 * Parse an error answer into an ApiError (any body: JSON in the API's shape or not).
 * @param {Response} response
 * @returns {Promise<ApiError>}
 */
async function toError(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    /* not JSON: a proxy's page */
  }
  const err = body && typeof body === "object" ? body.error : null;
  if (err && typeof err === "object") {
    const details = Array.isArray(err.details)
      ? err.details.map((d) => ({ field: String(d.field ?? ""), reason: String(d.reason ?? "") }))
      : [];
    return new ApiError(response.status, String(err.code ?? "error"), String(err.message ?? ""), details);
  }
  return new ApiError(response.status, "error", `${response.status} ${response.statusText}`, []);
}

/**
 * Call the API and return its JSON answer; throws ApiError on an error status. A 401
 * asks for a key and retries.
 * @param {string} method
 * @param {string} path e.g. "/jobs?limit=50"
 * @param {{body?: unknown, signal?: AbortSignal, text?: boolean}} [options]
 * @returns {Promise<any>}
 */
export async function request(method, path, options = {}) {
  for (let tries = 0; ; tries++) {
    /** @type {Record<string, string>} */
    const headers = { Accept: options.text ? "text/plain" : "application/json", ...authHeaders() };
    /** @type {RequestInit} */
    const init = { method, headers, signal: options.signal, cache: "no-store" };
    if (options.body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(options.body);
    }
    const response = await fetch(path, init);
    if (response.status === 401 && tries < 5) {
      await askForKey(tries > 0 || storedKey() !== null);
      continue;
    }
    if (!response.ok) throw await toError(response);
    return options.text ? response.text() : response.json();
  }
}

export const get = (/** @type {string} */ path, /** @type {AbortSignal=} */ signal) =>
  request("GET", path, { signal });
export const post = (/** @type {string} */ path, /** @type {unknown} */ body, /** @type {AbortSignal=} */ signal) =>
  request("POST", path, { body, signal });

// ---------------------------------------------------------------- event streams

/**
 * @typedef {{id: string, event: string, data: any}} SseEvent
 * @typedef {{
 *   onEvent: (e: SseEvent) => void,
 *   onOpen?: () => void,
 *   onEnd?: () => void,
 *   onError?: (err: unknown, retryInMs: number) => void,
 *   signal: AbortSignal,
 *   after?: string,
 *   reconnectOnEnd?: boolean,
 * }} StreamOptions
 */

/**
 * Follow an SSE endpoint with fetch(): parse `id:`/`event:`/`data:` records, resume
 * with Last-Event-ID after a drop, back off exponentially (1 s .. 30 s) while it fails.
 * Runs until `signal` aborts; when the server ends the stream, calls onEnd and stops
 * (unless reconnectOnEnd: the global activity stream never ends by itself).
 * @param {string} path
 * @param {StreamOptions} options
 */
export async function stream(path, options) {
  const { signal } = options;
  let last = options.after ?? null;
  let backoff = 1000;
  while (!signal.aborted) {
    try {
      /** @type {Record<string, string>} */
      const headers = { Accept: "text/event-stream", ...authHeaders() };
      if (last) headers["Last-Event-ID"] = last;
      const response = await fetch(path, { headers, signal, cache: "no-store" });
      if (response.status === 401) {
        await askForKey(storedKey() !== null);
        continue;
      }
      if (!response.ok || !response.body) throw await toError(response);
      backoff = 1000;
      options.onOpen?.();
      for await (const event of parseSse(response.body, signal)) {
        if (event.id) last = event.id;
        options.onEvent(event);
      }
      if (!options.reconnectOnEnd) {
        options.onEnd?.();
        return;
      }
    } catch (err) {
      if (signal.aborted) return;
      // A 4xx other than 401 will not get better by retrying (e.g. 404: no such job); the
      // never-ending activity stream keeps trying anyway (a backend without it yet).
      const clientError = err instanceof ApiError && err.status >= 400 && err.status < 500;
      if (clientError && err.status !== 429 && !options.reconnectOnEnd) {
        options.onError?.(err, -1);
        return;
      }
      options.onError?.(err, backoff);
    }
    await sleep(backoff, signal);
    backoff = Math.min(backoff * 2, 30000);
  }
}

/**
 * @param {number} ms
 * @param {AbortSignal} signal
 */
function sleep(ms, signal) {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(timer); resolve(undefined); }, { once: true });
  });
}

/**
 * Yield the SSE records of a body stream (the WHATWG event-stream format: fields per line,
 * records end at a blank line; comments start with ":").
 * @param {ReadableStream<Uint8Array>} body
 * @param {AbortSignal} signal
 * @returns {AsyncGenerator<SseEvent>}
 */
export async function* parseSse(body, signal) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  const onAbort = () => reader.cancel().catch(() => {});
  signal.addEventListener("abort", onAbort, { once: true });
  let buffer = "";
  let id = "";
  let event = "";
  let data = [];
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      let nl;
      while ((nl = buffer.search(/\r\n|\r|\n/)) >= 0) {
        const line = buffer.slice(0, nl);
        buffer = buffer.slice(nl + (buffer.startsWith("\r\n", nl) ? 2 : 1));
        if (line === "") {
          if (data.length) {
            let parsed;
            try {
              parsed = JSON.parse(data.join("\n"));
            } catch {
              parsed = data.join("\n");
            }
            yield { id, event: event || "message", data: parsed };
          }
          event = "";
          data = [];
          continue;
        }
        if (line.startsWith(":")) continue; // keepalive comment
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        let val = colon < 0 ? "" : line.slice(colon + 1);
        if (val.startsWith(" ")) val = val.slice(1);
        if (field === "id") id = val;
        else if (field === "event") event = val;
        else if (field === "data") data.push(val);
      }
    }
  } finally {
    signal.removeEventListener("abort", onAbort);
  }
}

// ---------------------------------------------------------------- the activity hub

/** @type {Set<{kinds: Set<string>|null, fn: (e: SseEvent) => void}>} */
const subscribers = new Set();
/** @type {AbortController|null} */
let hub = null;
/** @type {ReturnType<typeof setTimeout>|undefined} */
let idleTimer;
/** @type {(state: string) => void} */
let onHubState = () => {};

/** @param {(state: string) => void} fn called with "live", "retrying" or "idle" */
export function onActivityState(fn) {
  onHubState = fn;
}

/**
 * Subscribe to the global activity stream (GET /events): job state changes, progress and
 * worker up/down. One connection serves every page; it opens with the first subscriber.
 * @param {string[]|null} kinds e.g. ["state", "progress"]; null for all
 * @param {(e: SseEvent) => void} fn
 * @param {AbortSignal} signal unsubscribes when aborted (the page goes away)
 */
export function subscribeActivity(kinds, fn, signal) {
  const sub = { kinds: kinds ? new Set(kinds) : null, fn };
  subscribers.add(sub);
  clearTimeout(idleTimer);
  signal.addEventListener("abort", () => {
    subscribers.delete(sub);
    // Close the connection a while after the last page left (a browser allows only six
    // connections per host over HTTP/1.1; a job page's own stream needs one).
    if (!subscribers.size) {
      clearTimeout(idleTimer);
      idleTimer = setTimeout(() => {
        if (subscribers.size || !hub) return;
        hub.abort();
        hub = null;
        onHubState("idle");
      }, 3000);
    }
  }, { once: true });
  if (!hub) {
    hub = new AbortController();
    stream("/events", {
      signal: hub.signal,
      reconnectOnEnd: true,
      onOpen: () => onHubState("live"),
      onError: (_err, retry) => onHubState(retry < 0 ? "off" : "retrying"),
      onEvent: (e) => {
        for (const s of [...subscribers]) {
          if (s.kinds && !s.kinds.has(e.event)) continue;
          try {
            s.fn(e);
          } catch (err) {
            console.error("activity subscriber failed", err);
          }
        }
      },
    });
  }
}

/**
 * A debounced caller: many calls within `waitMs` run `fn` once, and a steady stream of
 * calls still runs it at least every `maxWaitMs`.
 * @param {() => void} fn
 * @param {number} waitMs
 * @param {number} maxWaitMs
 * @param {AbortSignal} signal stops pending calls
 */
export function debounce(fn, waitMs, maxWaitMs, signal) {
  /** @type {ReturnType<typeof setTimeout>|undefined} */
  let timer;
  let first = 0;
  signal.addEventListener("abort", () => clearTimeout(timer), { once: true });
  return () => {
    const now = Date.now();
    if (!timer) first = now;
    clearTimeout(timer);
    const wait = Math.max(0, Math.min(waitMs, first + maxWaitMs - now));
    timer = setTimeout(() => {
      timer = undefined;
      if (!signal.aborted) fn();
    }, wait);
  };
}
