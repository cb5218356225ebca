// Start-up: sign in if the server needs a key, pick a pipeline, switch views by the URL hash.

import { apiKey, request, setApiKey } from "./graphql.js";
import { bindFilters, onLiveStatus, showBoard } from "./board.js";
import { bindDialogDefaults } from "./dialogs.js";
import { bindCapacity, showCapacity } from "./capacity.js";
import { bindForecast, showForecast } from "./forecast.js";
import { bindImports, showImports } from "./imports.js";
import { announce, announceFailure, clearNotice, el, setCurrency } from "./format.js";
import { bindLeadPanel } from "./lead-panel.js";
import { showMetrics } from "./metrics.js";

const START_QUERY = `query Start {
  viewer { id name role }
  pipelines { id name currency }
  users(includeInactive: false) { id name role active }
}`;

const PIPELINE_STORAGE = "pipegraph.pipelineId";
const VIEWS = ["board", "metrics", "forecast", "capacity", "imports"];
const app = { pipelines: [], users: [], pipeline: null, shown: {} };

/** Ask for a key in the dialog; resolves once one is entered. */
function askForKey(reason) {
  const dialog = document.getElementById("key-dialog");
  const input = document.getElementById("api-key");
  const error = document.getElementById("key-error");
  input.value = apiKey() ?? "";
  input.setCustomValidity("");
  // The message goes inside the dialog: anything outside sits under its backdrop.
  error.textContent = reason ?? "";
  error.hidden = !reason;
  if (reason) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");
  return new Promise((resolve) => {
    dialog.onclose = () => {
      setApiKey(input.value);
      resolve();
    };
    dialog.showModal();
  });
}

async function start() {
  for (;;) {
    try {
      return await request(START_QUERY);
    } catch (error) {
      if (error.code !== "UNAUTHENTICATED") throw error;
      await askForKey(apiKey() ? "That API key was not accepted: enter a valid one." : null);
      clearNotice();
    }
  }
}

function currentView() {
  const view = location.hash.replace("#", "");
  return VIEWS.includes(view) ? view : "board";
}

async function render() {
  const view = currentView();
  for (const name of VIEWS) document.getElementById(`view-${name}`).hidden = name !== view;
  for (const link of document.querySelectorAll("nav a")) {
    if (link.dataset.view === view) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  const pipeline = app.pipeline;
  if (!pipeline) return;
  const key = `${view}:${pipeline.id}`;
  try {
    if (view === "board" && app.shown.board !== key) {
      app.shown.board = key;
      await showBoard(pipeline, app.users);
    } else if (view === "metrics" && app.shown.metrics !== key) {
      app.shown.metrics = key;
      await showMetrics(pipeline, Number(document.getElementById("metrics-window").value));
    } else if (view === "forecast") {
      await showForecast(pipeline);
    } else if (view === "capacity") {
      await showCapacity(pipeline);
    } else if (view === "imports") {
      showImports(app.pipelines, pipeline, app.viewer);
    }
  } catch (error) {
    app.shown[view] = null;
    announceFailure(`Could not load the ${view}`, error);
  }
}

function selectPipeline(id) {
  app.pipeline = app.pipelines.find((pipeline) => pipeline.id === id) ?? app.pipelines[0] ?? null;
  if (!app.pipeline) return;
  sessionStorage.setItem(PIPELINE_STORAGE, app.pipeline.id);
  document.getElementById("pipeline-select").value = app.pipeline.id;
  setCurrency(app.pipeline.currency);
  document.title = `${app.pipeline.name} · pipegraph`;
}

async function main() {
  document.getElementById("notice-close").addEventListener("click", () => clearNotice());
  // The skip link focuses the content without touching the hash, which names the view.
  document.querySelector(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    document.getElementById("main").focus();
  });
  bindFilters();
  bindForecast();
  bindCapacity();
  // An import's leads reach the board and the metrics when next shown (a bulk import is not sent
  // lead by lead to subscribers).
  bindImports(() => {
    app.shown.board = null;
    app.shown.metrics = null;
  });
  bindLeadPanel();
  bindDialogDefaults();
  let offline = false;
  onLiveStatus((status) => {
    // Back from offline, the metrics are read afresh next time they are shown.
    if (status === "offline") offline = true;
    else if (status === "live" && offline) {
      offline = false;
      app.shown.metrics = null;
    }
    const badge = document.getElementById("live-status");
    badge.textContent = status;
    badge.dataset.status = status;
    badge.hidden = false;
  });
  let data;
  try {
    data = await start();
  } catch (error) {
    announce(`Could not reach the API: ${error.message}.`);
    return;
  }
  app.pipelines = data.pipelines;
  app.users = data.users;
  app.viewer = data.viewer;
  document.getElementById("viewer").textContent = `${data.viewer.name} (${data.viewer.role.toLowerCase()})`;
  if (!app.pipelines.length) {
    document.getElementById("board").replaceChildren(el("p", {}, "No pipelines yet: create one through the API."));
    return;
  }
  const select = document.getElementById("pipeline-select");
  select.replaceChildren(...app.pipelines.map((p) => el("option", { value: p.id }, p.name)));
  selectPipeline(new URLSearchParams(location.search).get("pipeline") ?? sessionStorage.getItem(PIPELINE_STORAGE));
  select.addEventListener("change", () => {
    selectPipeline(select.value);
    render();
  });
  document.getElementById("metrics-window").addEventListener("change", () => {
    app.shown.metrics = null;
    render();
  });
  window.addEventListener("hashchange", render);
  await render();
}

main();
