// Hash routing: #/jobs, #/jobs/<id>, #/compare?ids=a,b, #/workers, #/queues, #/models,
// #/submit. Each navigation builds a fresh <main data-page=...> and aborts the previous
// page's signal, which closes its streams and drops its subscriptions.

/**
 * @typedef {{
 *   main: HTMLElement,
 *   params: string[],
 *   query: URLSearchParams,
 *   signal: AbortSignal,
 *   ready: () => void,
 * }} PageContext
 * @typedef {(ctx: PageContext) => (void|Promise<void>)} Page
 */

/**
 * Split a hash like "#/jobs/abc?x=1" into its route name, path parameters and query.
 * @param {string} hash
 * @returns {{name: string, params: string[], query: URLSearchParams}}
 */
export function parseHash(hash) {
  const raw = hash.replace(/^#\/?/, "");
  const q = raw.indexOf("?");
  const path = q < 0 ? raw : raw.slice(0, q);
  const query = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  if (parts[0] === "jobs" && parts.length > 1) return { name: "job", params: parts.slice(1), query };
  return { name: parts[0] || "jobs", params: parts.slice(1), query };
}

/**
 * Start routing.
 * @param {Record<string, Page>} pages
 */
export function startRouter(pages) {
  /** @type {AbortController|null} */
  let current = null;

  const show = () => {
    current?.abort();
    current = new AbortController();
    const { signal } = current;
    let { name, params, query } = parseHash(location.hash);
    if (!pages[name]) name = "jobs";
    const main = document.createElement("main");
    main.dataset.page = name;
    document.querySelector("main")?.replaceWith(main);
    for (const a of document.querySelectorAll("a[data-nav]")) {
      const nav = /** @type {HTMLElement} */ (a).dataset.nav;
      a.classList.toggle("active", nav === name || (name === "job" && nav === "jobs"));
    }
    const ready = () => {
      if (!signal.aborted) main.dataset.ready = "1";
    };
    Promise.resolve(pages[name]({ main, params, query, signal, ready })).catch((err) => {
      if (signal.aborted) return;
      console.error(err);
      const p = document.createElement("p");
      p.className = "error";
      p.textContent = `This page failed to load: ${err && err.message ? err.message : err}`;
      main.append(p);
      ready();
    });
  };
  window.addEventListener("hashchange", show);
  if (!location.hash) history.replaceState(null, "", "#/jobs");
  show();
}

/** @param {string} hash e.g. "#/jobs/abc" */
export function go(hash) {
  location.hash = hash;
}
