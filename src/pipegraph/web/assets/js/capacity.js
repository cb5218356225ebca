// The capacity view: what each added rep buys. One capacityPlan call runs the calibrated model with
// 0..k reps added on the same simulated leads; the view draws the revenue curve (P10/P50/P90), rep
// utilisation and new leads' waits, and names the knee.

import { request } from "./graphql.js";
import { barChart, lineChart } from "./charts.js";
import { announce, days, el, money, number, percent } from "./format.js";

const CAPACITY_QUERY = `query CapacityPlan($input: CapacityPlanInput!) {
  capacityPlan(input: $input) {
    horizonDays trials engine goal reps knee summary
    rows {
      repsAdded reps revenue { p10 p50 p90 } pGoal { value }
      waitP90Days { value } utilisation { value } gain
    }
  }
}`;

let current = { pipeline: null, running: null };

function repsLabel(row) {
  return `${number(row.reps)} reps${row.repsAdded ? ` (+${row.repsAdded})` : " (now)"}`;
}

function curveSection(plan) {
  const labels = plan.rows.map((row) => (row.repsAdded ? `+${row.repsAdded}` : "now"));
  const series = ["p10", "p50", "p90"].map((name) => ({
    name: name.toUpperCase(),
    values: plan.rows.map((row) => Number(row.revenue[name])),
    className: name,
  }));
  return el(
    "figure",
    { class: "card-box", id: "capacity-curve" },
    el("figcaption", {}, `Revenue within ${number(plan.horizonDays)} days by reps added, ${number(plan.trials)} trials per row (${plan.engine})`),
    lineChart(labels, series, { title: "Revenue P10, P50 and P90 by reps added", format: (v) => money(v, { compact: true }) }),
  );
}

function utilisationSection(plan) {
  const items = plan.rows.map((row) => ({
    label: repsLabel(row),
    value: row.utilisation.value ?? 0,
    text: percent(row.utilisation.value),
    className: (row.utilisation.value ?? 0) > 0.9 ? "over" : "",
  }));
  return el(
    "figure",
    { class: "card-box", id: "capacity-utilisation" },
    el("figcaption", {}, "Rep utilisation (share of rep slots in use)"),
    barChart(items, { title: "Rep utilisation by reps added", width: 640, max: 1 }),
  );
}

function tableSection(plan) {
  const head = ["Revenue P50", "P10–P90", "Gain (paired)", "P(goal)", "Wait P90"];
  return el(
    "div",
    // A phone scrolls the table sideways: the region takes focus so the keyboard can scroll it too.
    { class: "card-box", id: "capacity-table", role: "region", tabindex: "0", "aria-labelledby": "capacity-table-heading" },
    el("h3", { id: "capacity-table-heading" }, "Each rep count"),
    el(
      "table",
      {},
      el(
        "thead",
        {},
        el("tr", {}, el("th", { scope: "col" }, "Reps"), ...head.map((h) => el("th", { scope: "col", class: h === "P10–P90" ? "wide-only" : null }, h))),
      ),
      el(
        "tbody",
        {},
        ...plan.rows.map((row) =>
          el(
            "tr",
            { dataset: { added: String(row.repsAdded) } },
            el("th", { scope: "row" }, repsLabel(row)),
            el("td", { class: "revenue-p50" }, money(row.revenue.p50)),
            el("td", { class: "wide-only" }, `${money(row.revenue.p10, { compact: true })}–${money(row.revenue.p90, { compact: true })}`),
            el("td", { class: "gain" }, row.gain === null ? "–" : money(row.gain)),
            el("td", {}, percent(row.pGoal?.value, 1)),
            el("td", { class: "wait" }, days(row.waitP90Days.value)),
          ),
        ),
      ),
    ),
  );
}

function planSection(plan) {
  const busiest = plan.rows[0].utilisation.value;
  let knee = "";
  if (busiest !== null && busiest < 0.5) {
    knee = `The reps are far from busy now (${percent(busiest)} of their slots in use): more reps buy little here; leads, not reps, limit revenue.`;
  } else if (plan.knee === null) {
    knee = "No knee within the reps tried: each added rep still buys at least half what the one before did.";
  }
  return el(
    "div",
    {},
    el("p", { id: "capacity-summary", class: "summary" }, `${plan.summary || "No rep added."}${plan.summary ? "." : ""} ${knee}`.trim()),
    curveSection(plan),
    el("div", { class: "grid-2" }, utilisationSection(plan), tableSection(plan)),
  );
}

async function runPlanOnce(form) {
  const data = new FormData(form);
  const input = {
    pipelineId: current.pipeline.id,
    horizonDays: Number(data.get("horizon")),
    repsAdded: Number(data.get("added")),
    trials: Number(data.get("trials")),
    goal: data.get("goal") ? String(data.get("goal")) : null,
    seed: 0,
  };
  const root = document.getElementById("capacity");
  const button = document.getElementById("capacity-run");
  const status = document.getElementById("capacity-progress");
  root.dataset.ready = "false";
  root.setAttribute("aria-busy", "true");
  button.disabled = true;
  status.hidden = false;
  try {
    const answer = await request(CAPACITY_QUERY, { input });
    root.replaceChildren(planSection(answer.capacityPlan));
    root.dataset.ready = "true";
  } catch (error) {
    root.replaceChildren(el("p", {}, "No capacity plan: see the message above."));
    announce(`Could not plan capacity: ${error.message}.`);
  } finally {
    button.disabled = false;
    status.hidden = true;
    root.removeAttribute("aria-busy");
  }
}

/** One plan at a time: a run in flight makes repeat clicks no-ops. */
function runPlan(form) {
  current.running ??= runPlanOnce(form).finally(() => {
    current.running = null;
  });
  return current.running;
}

/** Show the capacity view for a pipeline: run the default plan once. */
export async function showCapacity(pipeline) {
  if (current.pipeline?.id === pipeline.id && document.getElementById("capacity").dataset.ready === "true") return;
  if (current.running) return;
  current = { pipeline, running: null };
  document.getElementById("capacity").replaceChildren();
  await runPlan(document.getElementById("capacity-form"));
}

export function bindCapacity() {
  document.getElementById("capacity-form").addEventListener("submit", (event) => {
    event.preventDefault();
    runPlan(event.target);
  });
}
