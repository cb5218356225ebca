// The import view: a CSV file streamed to POST /imports as a job, its progress followed through the
// importProgress subscription (GET /imports/<id> if the socket fails), a Cancel button, and the outcome:
// the leads imported, or the problems of the file in a table (the server keeps the first 100).

import { GraphQLError, apiKey, subscribe } from "./graphql.js";
import { announce, announceFailure, clearNotice, el, number } from "./format.js";

const PROGRESS = `subscription ImportProgress($jobId: ID!) {
  importProgress(jobId: $jobId) {
    id status rowsRead rowsLoaded importedCount problemCount error
    problems { field message }
  }
}`;
const ENDED = ["SUCCEEDED", "FAILED", "CANCELLED"];
const POLL_MS = 1000;

let current = { pipelines: [], job: null, stop: null, cancelling: false, onImported: () => {} };

const byId = (id) => document.getElementById(id);

function headers(extra = {}) {
  const key = apiKey();
  return key ? { ...extra, Authorization: `Bearer ${key}` } : extra;
}

/** A /imports answer as JSON, or a GraphQLError with the server's message. */
async function call(path, options = {}) {
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), { ...options, headers: headers(options.headers) });
  } catch (error) {
    throw new GraphQLError(`The server cannot be reached (${error.message}).`, "NETWORK");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    throw new GraphQLError(`The server answered HTTP ${response.status} without JSON.`, `HTTP_${response.status}`);
  }
  if (!response.ok) {
    const first = body?.errors?.[0];
    throw new GraphQLError(first?.message ?? `HTTP ${response.status}`, first?.extensions?.code ?? `HTTP_${response.status}`);
  }
  return body;
}

/** "input.csv[row 12].value" → { row: "12", column: "value" }; a file-wide problem has no row. */
function where(field) {
  const found = /csv\[row (\d+)\]\.(.+)$/.exec(field ?? "");
  if (found) return { row: found[1], column: found[2] };
  const column = (field ?? "").replace(/^input\./, "");
  return { row: "–", column: column && column !== "csv" ? column : "whole file" };
}

/** The problems to list: without the server's closing note on a capped list ("N problems in all; …"),
 * which the caption says in its own words. */
function listed(job) {
  const last = job.problems.at(-1);
  const note = last && last.field === "input.csv" && / problems in all; /.test(last.message);
  return note ? job.problems.slice(0, -1) : job.problems;
}

function problemsTable(job) {
  const problems = listed(job);
  const shown = problems.length;
  const more = job.problemCount > shown;
  return el(
    "div",
    // A phone scrolls the table sideways: the region takes focus so the keyboard can scroll it too.
    { class: "card-box problems", role: "region", tabindex: "0", "aria-labelledby": "import-problems-caption" },
    el(
      "table",
      { id: "import-problems" },
      el(
        "caption",
        { id: "import-problems-caption" },
        more ? `The first ${number(shown)} of ${number(job.problemCount)} problems` : `${number(job.problemCount)} ${job.problemCount === 1 ? "problem" : "problems"}`,
      ),
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, "Row"), el("th", { scope: "col" }, "Column"), el("th", { scope: "col" }, "Problem"))),
      el(
        "tbody",
        {},
        ...problems.map((problem) => {
          const at = where(problem.field);
          return el("tr", {}, el("th", { scope: "row" }, at.row), el("td", {}, at.column), el("td", {}, problem.message));
        }),
      ),
    ),
  );
}

function outcomeSection(job) {
  const pipeline = current.pipelines.find((p) => p.id === job.pipelineId)?.name ?? "the pipeline";
  const heading = (text) => el("h3", { id: "import-outcome-heading", tabindex: "-1" }, text);
  if (job.status === "SUCCEEDED") {
    const leads = `${number(job.importedCount)} ${job.importedCount === 1 ? "lead" : "leads"}`;
    return el("div", { class: "card-box outcome succeeded", dataset: { status: job.status } }, heading("Import finished"), el("p", { id: "import-summary" }, `Imported ${leads} into ${pipeline}.`));
  }
  if (job.status === "CANCELLED") {
    return el("div", { class: "card-box outcome cancelled", dataset: { status: job.status } }, heading("Import cancelled"), el("p", { id: "import-summary" }, "Nothing was imported."));
  }
  const count = job.problemCount;
  const summary = count
    ? `Nothing was imported: the file has ${number(count)} ${count === 1 ? "problem" : "problems"}. Fix ${count === 1 ? "it" : "them"} and import the whole file again.`
    : `Nothing was imported: ${job.error ?? "the import failed"}.`;
  return el(
    "div",
    { class: "card-box outcome failed", dataset: { status: job.status } },
    heading("Import refused"),
    el("p", { id: "import-summary" }, summary),
    job.problems.length ? problemsTable(job) : null,
    job.problems.length ? el("p", { class: "muted help" }, "Row 1 is the first row after the header.") : null,
  );
}

function showProgress(job) {
  byId("import-rows-read").textContent = number(job.rowsRead);
  byId("import-rows-loaded").textContent = number(job.rowsLoaded);
  if (current.cancelling) return;
  byId("import-phase").textContent = job.status === "QUEUED" ? "Waiting to start…" : "Checking and loading rows…";
}

function finish(job) {
  current.stop?.();
  current.stop = null;
  current.job = null;
  current.cancelling = false;
  byId("import-progress").hidden = true;
  byId("import-cancel").hidden = true;
  byId("import-run").disabled = false;
  const root = byId("import-outcome");
  root.replaceChildren(outcomeSection(job));
  root.removeAttribute("aria-busy");
  root.dataset.status = job.status;
  if (job.status === "SUCCEEDED") {
    // Sending the same file again would import its leads twice: it has to be chosen again.
    byId("import-file").value = "";
    current.onImported(job);
  }
  // Where the result is: a screen reader hears the heading, a keyboard continues from here.
  byId("import-outcome-heading").focus();
}

/** GET /imports/<id> until the job ends: when the socket cannot follow it. */
async function poll(jobId) {
  while (current.job === jobId) {
    try {
      const job = await call(`imports/${encodeURIComponent(jobId)}`);
      if (current.job !== jobId) return;
      if (ENDED.includes(job.status)) return finish(job);
      showProgress(job);
    } catch (error) {
      announceFailure("Could not read the import's progress", error, "Trying again.");
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
}

function follow(job) {
  current.job = job.id;
  let polling = false;
  const fallBack = () => {
    if (polling || current.job !== job.id) return;
    polling = true;
    current.stop?.();
    current.stop = null;
    poll(job.id);
  };
  current.stop = subscribe(
    PROGRESS,
    { jobId: job.id },
    {
      onData: (data) => {
        const seen = data.importProgress;
        if (!seen || current.job !== job.id) return;
        const full = { ...seen, pipelineId: job.pipelineId };
        if (ENDED.includes(seen.status)) finish(full);
        else showProgress(full);
      },
      onError: fallBack,
      // The stream ends with the outcome; ending without one (or the socket dropping) falls back to GET.
      onComplete: fallBack,
      onStatus: (status) => {
        if (status === "offline") fallBack();
      },
    },
  );
}

async function upload(form) {
  if (current.job) return;
  const file = byId("import-file").files[0];
  if (!file) return;
  const data = new FormData(form);
  const params = new URLSearchParams({ pipelineId: String(data.get("pipeline")) });
  const map = String(data.get("map") ?? "").trim();
  if (map) params.set("map", map);
  clearNotice();
  byId("import-outcome").replaceChildren();
  byId("import-outcome").setAttribute("aria-busy", "true");
  byId("import-run").disabled = true;
  byId("import-rows-read").textContent = "0";
  byId("import-rows-loaded").textContent = "0";
  byId("import-phase").textContent = `Uploading ${file.name}…`;
  byId("import-progress").hidden = false;
  try {
    // The File is sent as the body: the browser streams it from disk.
    const job = await call(`imports?${params}`, { method: "POST", headers: { "Content-Type": "text/csv" }, body: file });
    byId("import-cancel").hidden = false;
    byId("import-cancel").disabled = false;
    if (ENDED.includes(job.status)) finish(job);
    else {
      showProgress(job);
      follow(job);
    }
  } catch (error) {
    byId("import-progress").hidden = true;
    byId("import-run").disabled = false;
    byId("import-outcome").removeAttribute("aria-busy");
    announce(`Could not start the import: ${error.message.replace(/\.$/, "")}.`);
  }
}

async function cancel() {
  const jobId = current.job;
  if (!jobId) return;
  const button = byId("import-cancel");
  button.disabled = true;
  current.cancelling = true;
  byId("import-phase").textContent = "Cancelling…";
  try {
    await call(`imports/${encodeURIComponent(jobId)}`, { method: "DELETE" });
  } catch (error) {
    // CONFLICT: it ended meanwhile; the outcome arrives through the subscription.
    current.cancelling = false;
    if (error.code !== "CONFLICT") {
      button.disabled = false;
      announceFailure("Could not cancel the import", error);
    }
  }
}

/** Show the import view: the pipelines to import into, the shown one first. A viewer may not import. */
export function showImports(pipelines, pipeline, viewer) {
  current.pipelines = pipelines;
  const readOnly = viewer?.role === "VIEWER";
  byId("import-role-note").hidden = !readOnly;
  if (readOnly) byId("import-run").disabled = true;
  const select = byId("import-pipeline");
  const chosen = select.value || pipeline.id;
  select.replaceChildren(...pipelines.map((p) => el("option", { value: p.id }, p.name)));
  select.value = current.job ? chosen : pipeline.id;
  byId("imports").dataset.ready = "true";
}

/** `onImported(job)`: called when an import has written its leads (other views read them afresh). */
export function bindImports(onImported = () => {}) {
  current.onImported = onImported;
  byId("import-form").addEventListener("submit", (event) => {
    event.preventDefault();
    upload(event.target);
  });
  byId("import-cancel").addEventListener("click", cancel);
}
