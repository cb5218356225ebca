// The forecast view: the revenue distribution with P10/P50/P90 and the goal line, a fan chart of
// revenue won by week (P10–P90 band, P50 line, goal line), P(goal), leads
// needed beside the naive reverse funnel, and what-if controls that rerun a paired comparison.

import { request } from "./graphql.js";
import { fanChart, histogram } from "./charts.js";
import { announce, el, money, number, percent } from "./format.js";

const RANGE = "mean p10 p50 p90";

const FORECAST_QUERY = `query Forecast($input: ForecastInput!) {
  forecast(input: $input) {
    horizonDays trials engine expectedRevenue goal
    revenue { ${RANGE} }
    wins { p10 p50 p90 }
    pGoal { value se }
    histogram { low high trials }
    revenueByWeek { day p10 p50 p90 }
    fromOpenLeads { p50 }
    fromNewLeads { p50 }
    calibration { stages { stageId name conversion } reps { count } }
  }
}`;

const LEADS_NEEDED_QUERY = `query LeadsNeeded($input: LeadsNeededInput!) {
  leadsNeeded(input: $input) {
    leads leadsPerWeek intervalLow intervalHigh naiveLeads naiveLeadsPerWeek confidence pGoal { value }
  }
}`;

const WHAT_IF_QUERY = `query WhatIf($input: WhatIfInput!) {
  whatIf(input: $input) {
    trials engine changes pVariantBetter
    base { ${RANGE} } variant { ${RANGE} } difference { ${RANGE} }
    pGoalBase { value } pGoalVariant { value }
  }
}`;

// Without a stored goal, suggest what the last span of the horizon's length won, grown by the trend
// from the span before it: the number a planner would start from.
const DEFAULT_GOAL_QUERY = `query DefaultGoal($pipelineId: ID!, $from: DateTime!, $middle: DateTime!, $to: DateTime!) {
  goals(pipelineId: $pipelineId) { periodStart periodEnd amount }
  last: pipelineMetrics(pipelineId: $pipelineId, from: $middle, to: $to) { overall { wonValue } }
  before: pipelineMetrics(pipelineId: $pipelineId, from: $from, to: $middle) { overall { wonValue } }
}`;

// A trend beyond −20% or +25% a span is more likely noise than a plan: the growth applied is capped.
const GROWTH_LIMITS = [0.8, 1.25];
const DAY_MS = 86400000;

let current = { pipeline: null, calibration: null, goal: null, horizon: 90, running: null };

function tile(label, value, id) {
  return el("div", { class: "tile", id }, el("span", { class: "tile-label" }, label), el("strong", { class: "tile-value" }, value));
}

/** The default goal and a sentence saying where it came from: {amount, source}. */
export async function suggestGoal(pipeline, horizonDays) {
  const to = new Date();
  const middle = new Date(to.getTime() - horizonDays * DAY_MS);
  const from = new Date(to.getTime() - 2 * horizonDays * DAY_MS);
  const data = await request(DEFAULT_GOAL_QUERY, {
    pipelineId: pipeline.id,
    from: from.toISOString(),
    middle: middle.toISOString(),
    to: to.toISOString(),
  });
  const today = to.toISOString().slice(0, 10);
  const stored = data.goals.find((goal) => goal.periodStart <= today && today <= goal.periodEnd);
  if (stored) {
    return {
      amount: Math.round(Number(stored.amount)),
      source: `The stored goal for ${stored.periodStart} to ${stored.periodEnd}.`,
    };
  }
  const last = Number(data.last.overall.wonValue);
  const before = Number(data.before.overall.wonValue);
  const trend = before > 0 ? last / before : 1;
  const growth = Math.min(GROWTH_LIMITS[1], Math.max(GROWTH_LIMITS[0], trend));
  const amount = Math.max(1000, Math.round((last * growth) / 1000) * 1000);
  const change = (growth - 1) * 100;
  const grown = Math.abs(change) < 0.5 ? "with no trend" : `${change > 0 ? "grown" : "shrunk"} by ${Math.abs(change).toFixed(0)}%`;
  const capped = growth !== trend && before > 0 ? ` (the trend was ${trend >= 1 ? "+" : ""}${((trend - 1) * 100).toFixed(0)}%; capped to −20%…+25%)` : "";
  return {
    amount,
    source: `Suggested goal: ${money(last)} won in the last ${number(horizonDays)} days, ${grown} on the ${number(horizonDays)} days before${capped}. Type your own to replace it.`,
  };
}

/** "100.0% ± 0.0%" reads as a certainty the trials cannot give: say "over 99.9%" instead. */
function pGoalText(p) {
  if (!p) return "–";
  if (p.value >= 0.9995) return "over 99.9%";
  if (p.value <= 0.0005) return "under 0.1%";
  return `${percent(p.value, 1)} ± ${percent(p.se, 1)}`;
}

/** Where the goal sits in the forecast's range, for the sentence under the goal field. */
function goalPlacement(result) {
  if (result.goal === null) return "";
  const goal = Number(result.goal);
  if (goal < Number(result.revenue.p10)) return " It is below P10: the pipeline very likely makes it already.";
  if (goal > Number(result.revenue.p90)) return " It is above P90: unlikely with this pipeline as it is.";
  return "";
}

function forecastSection(result) {
  const format = (value) => money(value, { compact: true });
  const markers = [
    { value: Number(result.revenue.p10), label: "P10", className: "p10" },
    { value: Number(result.revenue.p50), label: "P50", className: "p50" },
    { value: Number(result.revenue.p90), label: "P90", className: "p90" },
  ];
  if (result.goal !== null) markers.push({ value: Number(result.goal), label: "Goal", className: "goal" });
  const buckets = result.histogram.map((b) => ({ low: Number(b.low), high: Number(b.high), trials: b.trials }));
  const bands = result.revenueByWeek.map((b) => ({ day: b.day, p10: Number(b.p10), p50: Number(b.p50), p90: Number(b.p90) }));
  const goal = result.goal === null ? null : Number(result.goal);
  return el(
    "div",
    {},
    el(
      "div",
      { class: "tiles" },
      tile("P10 (pessimistic)", money(result.revenue.p10), "forecast-p10"),
      tile("P50 (median)", money(result.revenue.p50), "forecast-p50"),
      tile("P90 (optimistic)", money(result.revenue.p90), "forecast-p90"),
      tile("P(goal)", pGoalText(result.pGoal), "forecast-pgoal"),
      tile("Wins (P50)", number(result.wins.p50), "forecast-wins"),
      tile("From open / new leads (P50)", `${money(result.fromOpenLeads.p50)} / ${money(result.fromNewLeads.p50)}`, "forecast-split"),
    ),
    el(
      "figure",
      { class: "card-box", id: "forecast-histogram" },
      el("figcaption", {}, `Revenue within ${number(result.horizonDays)} days, ${number(result.trials)} trials (${result.engine})`),
      histogram(buckets, markers, { title: "Revenue distribution", format }),
    ),
    el(
      "figure",
      { class: "card-box", id: "forecast-fan" },
      el("figcaption", {}, `Revenue won so far, week by week: P10–P90 band and P50 line${goal === null ? "" : ", goal line"}`),
      fanChart(bands, goal, { title: "Cumulative revenue by week, P10/P50/P90", format }),
    ),
  );
}

function leadsNeededSection(answer) {
  const interval = answer.intervalLow !== null ? ` (95% MC interval ${number(answer.intervalLow)}–${number(answer.intervalHigh)})` : "";
  return el(
    "div",
    { class: "card-box", id: "leads-needed" },
    el("h3", {}, "Leads needed"),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Estimate")), el("th", { scope: "col" }, "New leads"), el("th", { scope: "col" }, "Per week"))),
      el(
        "tbody",
        {},
        el(
          "tr",
          {},
          el("th", { scope: "row" }, `Simulated, ${percent(answer.confidence)} confidence${interval}`),
          el("td", { class: "leads-simulated" }, number(answer.leads)),
          el("td", {}, number(answer.leadsPerWeek, 1)),
        ),
        el(
          "tr",
          {},
          el("th", { scope: "row" }, "Naive reverse funnel (goal ÷ deal ÷ win rate)"),
          el("td", { class: "leads-naive" }, number(answer.naiveLeads)),
          el("td", {}, number(answer.naiveLeadsPerWeek, 1)),
        ),
      ),
    ),
  );
}

function whatIfSection(result) {
  const row = (label, base, variant) => el("tr", {}, el("th", { scope: "row" }, label), el("td", {}, base), el("td", {}, variant));
  return el(
    "div",
    { class: "card-box", id: "whatif-result" },
    el("h3", {}, `What if: ${result.changes.join("; ")}`),
    el(
      "table",
      {},
      el("thead", {}, el("tr", {}, el("th", { scope: "col" }, el("span", { class: "visually-hidden" }, "Measure")), el("th", { scope: "col" }, "Now"), el("th", { scope: "col" }, "With the change"))),
      el(
        "tbody",
        {},
        row("P10", money(result.base.p10), money(result.variant.p10)),
        row("P50", money(result.base.p50), money(result.variant.p50)),
        row("P90", money(result.base.p90), money(result.variant.p90)),
        row("P(goal)", percent(result.pGoalBase?.value, 1), percent(result.pGoalVariant?.value, 1)),
      ),
    ),
    el(
      "p",
      {},
      `Mean difference (paired): ${money(result.difference.mean)} (P10 ${money(result.difference.p10)}, P90 ${money(result.difference.p90)}); the change does better in ${percent(result.pVariantBetter)} of ${number(result.trials)} trials.`,
    ),
  );
}

function fillWhatIf(calibration) {
  const select = document.getElementById("whatif-stage");
  select.replaceChildren(...calibration.stages.map((stage) => el("option", { value: stage.stageId, dataset: { conversion: stage.conversion } }, stage.name)));
  const sync = () => {
    const option = select.selectedOptions[0];
    document.getElementById("whatif-conversion").value = option ? Math.round(Number(option.dataset.conversion) * 100) : "";
  };
  select.onchange = sync;
  sync();
  document.getElementById("whatif-form").hidden = false;
}

/**
 * Show a run in flight: the button disabled, a progress bar with the seconds elapsed. Returns the
 * function that ends it.
 */
function busy(button, text) {
  const box = document.getElementById("forecast-progress");
  const label = document.getElementById("forecast-progress-text");
  const started = Date.now();
  const tick = () => {
    const seconds = Math.floor((Date.now() - started) / 1000);
    label.textContent = seconds ? `${text} (${seconds} s)` : text;
  };
  tick();
  const timer = setInterval(tick, 1000);
  box.hidden = false;
  button.disabled = true;
  button.setAttribute("aria-disabled", "true");
  return () => {
    clearInterval(timer);
    box.hidden = true;
    button.disabled = false;
    button.removeAttribute("aria-disabled");
  };
}

/** Run the forecast (and leads needed) once: a run already in flight makes repeat clicks no-ops. */
function runForecast(form) {
  current.running ??= runForecastOnce(form).finally(() => {
    current.running = null;
  });
  return current.running;
}

async function runForecastOnce(form) {
  const data = new FormData(form);
  const horizonDays = Number(data.get("horizon"));
  const trials = Number(data.get("trials"));
  const goal = data.get("goal") ? String(data.get("goal")) : null;
  const root = document.getElementById("forecast");
  root.dataset.ready = "false";
  root.setAttribute("aria-busy", "true");
  const done = busy(document.getElementById("forecast-run"), `Running ${number(trials)} trials over ${number(horizonDays)} days…`);
  const base = { pipelineId: current.pipeline.id, horizonDays, trials, seed: 0 };
  try {
    const [forecast, needed] = await Promise.all([
      request(FORECAST_QUERY, { input: { ...base, goal } }),
      goal ? request(LEADS_NEEDED_QUERY, { input: { ...base, goal } }) : Promise.resolve(null),
    ]);
    current = { ...current, calibration: forecast.forecast.calibration, goal, horizon: horizonDays };
    root.replaceChildren(forecastSection(forecast.forecast), needed ? leadsNeededSection(needed.leadsNeeded) : el("p", {}, "Enter a goal to see the leads it needs."));
    fillWhatIf(current.calibration);
    const source = document.getElementById("forecast-goal-source");
    source.textContent = `${source.dataset.origin ?? ""}${goalPlacement(forecast.forecast)}`.trim();
    root.dataset.ready = "true";
  } catch (error) {
    announce(`Could not run the forecast: ${error.message}.`);
  } finally {
    done();
    root.removeAttribute("aria-busy");
  }
}

async function runWhatIf(form) {
  const data = new FormData(form);
  const changes = [];
  const stage = current.calibration?.stages.find((s) => s.stageId === data.get("stage"));
  const conversion = Number(data.get("conversion")) / 100;
  if (stage && data.get("conversion") !== "" && Math.abs(conversion - stage.conversion) > 0.005) {
    changes.push({ stageId: stage.stageId, conversion });
  }
  const reps = Number(data.get("reps") || 0);
  if (reps !== 0) changes.push({ repsDelta: reps });
  if (!changes.length) {
    announce("Change a stage's conversion or the number of reps to compare.");
    return;
  }
  const root = document.getElementById("whatif");
  if (root.getAttribute("aria-busy") === "true") return; // a comparison is already running
  root.dataset.ready = "false";
  root.setAttribute("aria-busy", "true");
  const done = busy(document.getElementById("whatif-run"), "Comparing…");
  try {
    const result = await request(WHAT_IF_QUERY, {
      input: { pipelineId: current.pipeline.id, horizonDays: current.horizon, goal: current.goal, changes, seed: 0 },
    });
    root.replaceChildren(whatIfSection(result.whatIf));
    root.dataset.ready = "true";
  } catch (error) {
    announce(`Could not compare: ${error.message}.`);
  } finally {
    done();
    root.removeAttribute("aria-busy");
  }
}

/** Show the forecast view for a pipeline: suggest a goal, then run the default forecast once. */
export async function showForecast(pipeline) {
  if (current.pipeline?.id === pipeline.id && document.getElementById("forecast").dataset.ready === "true") return;
  if (current.running) return;
  current = { pipeline, calibration: null, goal: null, horizon: 90, running: null };
  document.getElementById("forecast").replaceChildren();
  document.getElementById("whatif").replaceChildren();
  document.getElementById("whatif-form").hidden = true;
  const form = document.getElementById("forecast-form");
  const source = document.getElementById("forecast-goal-source");
  try {
    const suggestion = await suggestGoal(pipeline, Number(form.horizon.value));
    document.getElementById("forecast-goal").value = String(suggestion.amount);
    source.dataset.origin = suggestion.source;
    source.textContent = suggestion.source;
  } catch (error) {
    announce(`Could not suggest a goal: ${error.message}.`);
  }
  await runForecast(form);
}

export function bindForecast() {
  // A goal typed by the user has no "suggested" story any more.
  document.getElementById("forecast-goal").addEventListener("input", () => {
    const source = document.getElementById("forecast-goal-source");
    source.dataset.origin = "Your goal.";
    source.textContent = "Your goal.";
  });
  document.getElementById("forecast-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runForecast(event.target);
  });
  document.getElementById("whatif-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runWhatIf(event.target);
  });
}
