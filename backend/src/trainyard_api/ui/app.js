// The dashboard's entry point: routes to the pages, shows the activity stream's state.
import { onActivityState } from "./api.js";
import { startRouter } from "./router.js";
import { jobsPage } from "./pages/jobs.js";
import { jobPage } from "./pages/job.js";
import { comparePage } from "./pages/compare.js";
import { workersPage } from "./pages/workers.js";
import { queuesPage } from "./pages/queues.js";
import { modelsPage } from "./pages/models.js";
import { submitPage } from "./pages/submit.js";

const live = document.querySelector("[data-testid=live]");
onActivityState((state) => {
  if (!live) return;
  live.textContent = state === "live" ? "live" : state === "idle" ? "" : "reconnecting…";
  /** @type {HTMLElement} */ (live).dataset.state = state;
});

startRouter({
  jobs: jobsPage,
  job: jobPage,
  compare: comparePage,
  workers: workersPage,
  queues: queuesPage,
  models: modelsPage,
  submit: submitPage,
});
