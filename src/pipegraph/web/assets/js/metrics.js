// The metrics view: funnel with conversion between stages, time in stage against target, the named
// bottleneck, breakdowns by source and owner, and a weekly trend.

import { request } from "./graphql.js";
import { barChart, lineChart } from "./charts.js";
import { announce, days, el, money, number, percent } from "./format.js";

const BREAKDOWN_FIELDS = "label created wonCount wonValue lostCount winRate avgWonDeal openCount openValue";

const METRICS_QUERY = `query Metrics($pipelineId: ID!, $from: DateTime!, $to: DateTime!) {
  pipelineMetrics(pipelineId: $pipelineId, from: $from, to: $to) {
    stages {
      stageId name position isPostSale targetDays entered exits advanced lost conversionRate dropOffRate
      avgDaysInStage medianDaysInStage currentCount currentValue stalledCount winProbability
    }
    overall { leadsCreated wonCount wonValue lostCount winRate avgWonDeal medianSalesCycleDays openCount openValue weightedPipeline velocityPerDay }
    bottleneck { name revenueAtRisk conversionRate othersConversionRate stalledCount avgDaysInStage targetDays summary }
    bySource: breakdown(by: SOURCE) { ${BREAKDOWN_FIELDS} }
    byOwner: breakdown(by: OWNER) { ${BREAKDOWN_FIELDS} }
    timeSeries(interval: WEEK) { start created wonCount lostCount wonValue }
  }
}`;

function lastDays(daysBack) {
  const to = new Date();
  const from = new Date(to.getTime() - daysBack * 86400000);
  return { from: from.toISOString(), to: to.toISOString() };
}

function tile(label, value) {
  return el("div", { class: "tile" }, el("span", { class: "tile-label" }, label), el("strong", {}, value));
}

function funnel(stages) {
  const selling = stages.filter((stage) => !stage.isPostSale);
  const items = selling.map((stage) => ({
    label: stage.name,
    value: stage.entered,
    text: `${number(stage.entered)} in · ${percent(stage.conversionRate)} advance`,
  }));
  return el(
    "figure",
    { class: "card-box", id: "funnel" },
    el("figcaption", {}, "Funnel: leads entering each stage, and the share of its exits that moved on"),
    barChart(items, { title: "Funnel", centered: true, valueWidth: 190 }),
  );
}

function timeInStage(stages) {
  const items = stages
    .filter((stage) => !stage.isPostSale)
    .map((stage) => ({
      label: stage.name,
      value: stage.avgDaysInStage ?? 0,
      marker: stage.targetDays,
      markerLabel: stage.targetDays ? `target ${stage.targetDays} days` : null,
      text: `${days(stage.avgDaysInStage)}${stage.targetDays ? ` / target ${stage.targetDays} d` : ""}`,
      className: stage.targetDays && stage.avgDaysInStage > stage.targetDays ? "over" : "",
    }));
  return el(
    "figure",
    { class: "card-box", id: "time-in-stage" },
    el("figcaption", {}, "Mean days in stage (bar) against the target (tick)"),
    barChart(items, { title: "Time in stage" }),
  );
}

/** The bottleneck sentence with counts and money formatted (the API's summary prints bare numbers). */
function bottleneckSentence(found, stage) {
  const stay = found.avgDaysInStage === null ? "no completed stays" : days(found.avgDaysInStage);
  const target = found.targetDays ? `target ${number(found.targetDays)} d` : "no target";
  const lost = stage ? `${number(stage.lost)} lost and ` : "";
  return `${found.name}: ${percent(found.conversionRate)} of exits advance vs ${percent(found.othersConversionRate)} in other stages; ${lost}${number(found.stalledCount)} stalled; average stay ${stay} (${target}); ${money(found.revenueAtRisk)} of expected revenue at risk.`;
}

function bottleneck(found, stages) {
  if (!found) return el("div", { class: "card-box bottleneck", id: "bottleneck" }, el("h3", {}, "Bottleneck"), "Nothing is at risk in this window.");
  return el(
    "div",
    { class: "card-box bottleneck", id: "bottleneck" },
    el("h3", {}, "Bottleneck: ", el("span", { class: "bottleneck-name" }, found.name)),
    el("p", { class: "bottleneck-summary" }, bottleneckSentence(found, stages.find((stage) => stage.name === found.name))),
  );
}

function breakdownTable(title, rows, id, rowHeader) {
  // Focusable and named, so a keyboard user can scroll a table wider than a phone.
  return el(
    "div",
    { class: "card-box", id, tabindex: "0", role: "region", "aria-label": title },
    el(
      "table",
      {},
      el("caption", {}, title),
      el("thead", {}, el("tr", {}, [el("span", { class: "visually-hidden" }, rowHeader), "Created", "Won", "Won value", "Lost", "Win rate", "Open value"].map((h) => el("th", { scope: "col" }, h)))),
      el(
        "tbody",
        {},
        rows.map((row) =>
          el(
            "tr",
            {},
            el("th", { scope: "row" }, row.label),
            el("td", {}, number(row.created)),
            el("td", {}, number(row.wonCount)),
            el("td", {}, money(row.wonValue)),
            el("td", {}, number(row.lostCount)),
            el("td", {}, el("span", { class: "rate", style: `--rate: ${(row.winRate ?? 0) * 100}%` }, percent(row.winRate))),
            el("td", {}, money(row.openValue)),
          ),
        ),
      ),
    ),
  );
}

/** Days of each weekly bucket inside the window: the first and last weeks are usually partial. */
function daysCovered(series, window) {
  const from = Date.parse(window.from);
  const to = Date.parse(window.to);
  return series.map((bucket) => {
    const start = Date.parse(bucket.start);
    const overlap = Math.min(to, start + 7 * 86400000) - Math.max(from, start);
    return Math.max(0, Math.min(7, overlap / 86400000));
  });
}

function trend(series, window) {
  const labels = series.map((bucket) => bucket.start.slice(5));
  const covered = daysCovered(series, window);
  // Partial weeks are drawn dashed and said to be partial, not shown as drops.
  const partial = covered.flatMap((span, index) => (span < 6.99 ? [index] : []));
  const note = partial.length
    ? ` (dashed: ${partial.map((index) => `the week of ${labels[index]} has ${covered[index].toFixed(1)} days in the window`).join("; ")})`
    : "";
  return el(
    "figure",
    { class: "card-box", id: "trend" },
    el("figcaption", {}, `Leads created, won and lost per week${note}`),
    lineChart(
      labels,
      [
        { name: "created", values: series.map((b) => b.created), className: "created" },
        { name: "won", values: series.map((b) => b.wonCount), className: "won" },
        { name: "lost", values: series.map((b) => b.lostCount), className: "lost" },
      ],
      { title: "Weekly trend", partial },
    ),
  );
}

/** Render the metrics of a pipeline over the last `daysBack` days. */
export async function showMetrics(pipeline, daysBack) {
  const root = document.getElementById("metrics");
  root.dataset.ready = "false";
  let metrics;
  const window = lastDays(daysBack);
  try {
    metrics = (await request(METRICS_QUERY, { pipelineId: pipeline.id, ...window })).pipelineMetrics;
  } catch (error) {
    announce(`Could not load the metrics: ${error.message}.`);
    return;
  }
  const o = metrics.overall;
  root.replaceChildren(
    el(
      "div",
      { class: "tiles" },
      tile("Leads created", number(o.leadsCreated)),
      tile("Won", `${number(o.wonCount)} · ${money(o.wonValue)}`),
      tile("Win rate", percent(o.winRate)),
      tile("Average won deal", money(o.avgWonDeal)),
      tile("Median cycle", days(o.medianSalesCycleDays)),
      tile("Open pipeline", money(o.openValue)),
      tile("Weighted pipeline", money(o.weightedPipeline)),
      tile("Velocity / day", money(o.velocityPerDay)),
    ),
    bottleneck(metrics.bottleneck, metrics.stages),
    el("div", { class: "grid-2" }, funnel(metrics.stages), timeInStage(metrics.stages)),
    trend(metrics.timeSeries, window),
    el("div", { class: "grid-2" }, breakdownTable("By source", metrics.bySource, "by-source", "Source"), breakdownTable("By owner", metrics.byOwner, "by-owner", "Owner")),
  );
  root.dataset.ready = "true";
}
