// The board: one column per stage with its count and total, cards that move by drag and drop or by
// the keyboard-friendly "Move to…" dialog, filters, won/lost, and live changes from other clients.

import { checkPayload, request, subscribe } from "./graphql.js";
import { announce, announceFailure, clearNotice, days, el, money, number } from "./format.js";
import { openLead } from "./lead-panel.js";

// One page per column keeps each request cheap: 20 leads × (lead + owner + stage) + 2.
const PAGE_SIZE = 20;
const CARD_FIELDS = `id title company value source version status daysInStage isStalled stageEnteredAt
  owner { id name } stage { id }`;

const PIPELINE_QUERY = `query BoardPipeline($id: ID!) {
  pipeline(id: $id) {
    id name currency
    stages {
      id name position targetDays probability isPostSale
      openCount: leadCount(status: OPEN) openValue: totalValue(status: OPEN)
      wonCount: leadCount(status: WON) wonValue: totalValue(status: WON)
    }
  }
}`;

const COLUMN_QUERY = `query BoardColumn($pipelineId: ID!, $filter: LeadFilter!, $after: String) {
  leads(pipelineId: $pipelineId, filter: $filter, orderBy: {field: STAGE_ENTERED_AT, direction: DESC},
        first: ${PAGE_SIZE}, after: $after) {
    totalCount totalValue
    pageInfo { hasNextPage endCursor }
    nodes { ${CARD_FIELDS} }
  }
}`;

const LEAD_QUERY = `query BoardLead($id: ID!) { lead(id: $id) { ${CARD_FIELDS} } }`;

const MOVE_MUTATION = `mutation Move($input: MoveLeadInput!) {
  moveLead(input: $input) { lead { ${CARD_FIELDS} } userErrors { field message code } }
}`;

const CLOSE_MUTATION = `mutation Close($input: CloseLeadInput!) {
  closeLead(input: $input) { lead { ${CARD_FIELDS} } userErrors { field message code } }
}`;

const EVENTS_SUBSCRIPTION = `subscription BoardEvents($pipelineId: ID!, $after: String) {
  leadEvents(pipelineId: $pipelineId, after: $after) { kind leadId version position lead { ${CARD_FIELDS} } }
}`;

const state = {
  pipeline: null,
  leads: new Map(), // lead id → the lead as the server last told us
  columns: new Map(), // stage id → {totalCount, hasNextPage, endCursor}
  filters: { owner: "", source: "", search: "", stalled: false },
  sources: new Set(),
  stopEvents: null,
  onLiveStatus: () => {},
};

const board = () => document.getElementById("board");

/** The status a lead has when it belongs on a stage's column: won in post-sale stages, else open. */
function columnStatus(stage) {
  return stage.isPostSale ? "WON" : "OPEN";
}

function stageById(id) {
  return state.pipeline?.stages.find((stage) => stage.id === id) ?? null;
}

function filtered() {
  const f = state.filters;
  return Boolean(f.owner || f.source || f.search || f.stalled);
}

function leadFilter(stage) {
  const f = state.filters;
  const filter = { stageIds: [stage.id], statuses: [columnStatus(stage)], stalledOnly: f.stalled };
  if (f.owner) filter.ownerIds = [f.owner];
  if (f.source) filter.sources = [f.source];
  if (f.search) filter.search = f.search;
  return filter;
}

/** Whether the lead belongs on the board as filtered now, and in which column. */
function visibleStage(lead) {
  const stage = stageById(lead.stage.id);
  if (!stage || lead.status !== columnStatus(stage)) return null;
  const f = state.filters;
  if (f.owner && lead.owner?.id !== f.owner) return null;
  if (f.source && lead.source !== f.source) return null;
  if (f.stalled && !lead.isStalled) return null;
  if (f.search && !`${lead.title} ${lead.company}`.toLowerCase().includes(f.search.toLowerCase())) return null;
  return stage;
}

function cardElement(leadId) {
  return board().querySelector(`.card[data-lead-id="${CSS.escape(leadId)}"]`);
}

function renderCard(lead) {
  const stage = stageById(lead.stage.id);
  const selling = stage && !stage.isPostSale && lead.status === "OPEN";
  const card = el(
    "li",
    {
      class: `card${lead.isStalled ? " stalled" : ""}`,
      draggable: "true",
      dataset: { leadId: lead.id, version: String(lead.version), stageId: lead.stage.id },
      "aria-label": lead.title,
      ondragstart: (event) => {
        event.dataTransfer.setData("text/plain", lead.id);
        event.dataTransfer.effectAllowed = "move";
        card.classList.add("dragging");
      },
      ondragend: () => card.classList.remove("dragging"),
    },
    el("button", { type: "button", class: "card-title link", onclick: () => openLead(lead.id) }, lead.title),
    el("div", { class: "card-company" }, lead.company || "—"),
    el(
      "div",
      { class: "card-meta" },
      el("span", { class: "card-value" }, money(lead.value)),
      el("span", { class: "card-owner" }, lead.owner?.name ?? "Unassigned"),
      el("span", { class: "card-age", title: "Days in this stage" }, days(lead.daysInStage)),
      lead.isStalled ? el("span", { class: "badge stalled-badge", title: "Longer than the stage's target" }, "Stalled") : null,
    ),
    el(
      "div",
      { class: "card-actions" },
      // The name reads "Move <title> to…" and contains the visible "Move … to…" in order.
      el(
        "button",
        { type: "button", class: "move-to", "aria-haspopup": "dialog", onclick: () => openMoveDialog(lead.id) },
        "Move",
        el("span", { class: "visually-hidden" }, ` ${lead.title}`),
        " to…",
      ),
      selling
        ? el("button", { type: "button", class: "won", "aria-label": `Mark ${lead.title} won`, onclick: () => openCloseDialog(lead.id, "WON") }, "Won")
        : null,
      selling
        ? el("button", { type: "button", class: "lost", "aria-label": `Mark ${lead.title} lost`, onclick: () => openCloseDialog(lead.id, "LOST") }, "Lost")
        : null,
    ),
  );
  return card;
}

function columnList(stageId) {
  return board().querySelector(`.column[data-stage-id="${CSS.escape(stageId)}"] .cards`);
}

/** Put the lead where the server says it is (or take it off the board); `atTop` for fresh moves. */
function showLead(lead, { atTop = true } = {}) {
  state.leads.set(lead.id, lead);
  if (lead.source) state.sources.add(lead.source);
  const existing = cardElement(lead.id);
  const stage = visibleStage(lead);
  if (!stage) {
    existing?.remove();
    return null;
  }
  const card = renderCard(lead);
  const list = columnList(stage.id);
  if (existing && existing.parentElement === list) existing.replaceWith(card);
  else {
    existing?.remove();
    if (atTop) list.prepend(card);
    else list.append(card);
  }
  return card;
}

function renderColumnHead(stage) {
  const column = board().querySelector(`.column[data-stage-id="${CSS.escape(stage.id)}"]`);
  const info = state.columns.get(stage.id) ?? { totalCount: 0, hasNextPage: false };
  let count = stage.isPostSale ? stage.wonCount : stage.openCount;
  let total = money(stage.isPostSale ? stage.wonValue : stage.openValue);
  if (filtered()) {
    // The stage totals count every lead: with a filter, the server's count and sum of the matches.
    count = info.totalCount;
    total = money(info.totalValue);
  }
  column.querySelector(".column-count").textContent = number(count);
  const picked = document.querySelector(`#stage-picker a[data-stage-id="${CSS.escape(stage.id)}"] .picker-count`);
  if (picked) picked.textContent = `(${number(count)})`;
  column.querySelector(".column-total").textContent = total;
  column.querySelector(".more").hidden = !info.hasNextPage;
}

function renderColumns() {
  const root = board();
  root.replaceChildren();
  for (const stage of state.pipeline.stages) {
    const headingId = `stage-${stage.position}`;
    const column = el(
      "section",
      {
        class: `column${stage.isPostSale ? " post-sale" : ""}`,
        dataset: { stageId: stage.id },
        "aria-labelledby": headingId,
        ondragover: (event) => {
          event.preventDefault();
          event.dataTransfer.dropEffect = "move";
          column.classList.add("drop-target");
        },
        ondragleave: () => column.classList.remove("drop-target"),
        ondrop: (event) => {
          event.preventDefault();
          column.classList.remove("drop-target");
          const leadId = event.dataTransfer.getData("text/plain");
          if (leadId) moveLead(leadId, stage.id);
        },
      },
      el(
        "header",
        { class: "column-head" },
        el("h3", { id: headingId, tabindex: "-1" }, stage.name),
        el("span", { class: "column-count" }, "0"),
        el("span", { class: "column-total" }, "–"),
        stage.targetDays ? el("span", { class: "column-target" }, `target ${stage.targetDays} d`) : null,
      ),
      el("ol", { class: "cards" }),
      el("button", { type: "button", class: "more link", hidden: true, onclick: () => showMore(stage) }, "Show more"),
    );
    root.append(column);
  }
}

/** The next page of a column; focus goes to its first new card, never lost when the button hides. */
async function showMore(stage) {
  const before = columnList(stage.id).querySelectorAll(".card").length;
  try {
    await loadColumn(stage, true);
  } catch (error) {
    announce(`Could not load more leads: ${error.message}.`);
    return;
  }
  const cards = columnList(stage.id).querySelectorAll(".card");
  const target = cards[before] ?? cards[cards.length - 1];
  (target?.querySelector(".card-title") ?? document.getElementById(`stage-${stage.position}`))?.focus();
}

/** Links to each column: a skip link per stage on a wide screen, the stage picker on a phone. */
function renderStagePicker() {
  const picker = document.getElementById("stage-picker");
  picker.replaceChildren(
    el(
      "ul",
      {},
      state.pipeline.stages.map((stage) => {
        const headingId = `stage-${stage.position}`;
        return el(
          "li",
          {},
          el(
            "a",
            {
              href: `#${headingId}`,
              dataset: { stageId: stage.id },
              onclick: (event) => {
                event.preventDefault();
                const heading = document.getElementById(headingId);
                heading.closest(".column").scrollIntoView({ block: "nearest", inline: "start" });
                heading.focus({ preventScroll: true });
              },
            },
            stage.name,
            " ",
            el("span", { class: "picker-count" }, ""),
          ),
        );
      }),
    ),
  );
}

async function loadColumn(stage, more = false) {
  const info = state.columns.get(stage.id);
  const data = await request(COLUMN_QUERY, {
    pipelineId: state.pipeline.id,
    filter: leadFilter(stage),
    after: more ? info?.endCursor : null,
  });
  const { totalCount, totalValue, pageInfo, nodes } = data.leads;
  state.columns.set(stage.id, {
    totalCount,
    totalValue: Number(totalValue),
    hasNextPage: pageInfo.hasNextPage,
    endCursor: pageInfo.endCursor,
  });
  if (!more) columnList(stage.id).replaceChildren();
  for (const lead of nodes) showLead(lead, { atTop: false });
  renderColumnHead(stage);
}

/** Re-read the stage counts and totals (after a move, a close or another client's change). */
let headsPending = null;
function refreshHeads() {
  headsPending ??= (async () => {
    try {
      const data = await request(PIPELINE_QUERY, { id: state.pipeline.id });
      state.pipeline.stages = data.pipeline.stages;
      state.pipeline.stages.forEach(renderColumnHead);
    } finally {
      headsPending = null;
    }
  })();
  return headsPending;
}

/** Keep a filtered column's count and total in step with a lead that came or went. */
function adjustCount(stageId, delta, value = 0) {
  const info = state.columns.get(stageId);
  if (!info) return;
  info.totalCount += delta;
  info.totalValue += delta * Number(value ?? 0);
}

async function moveLead(leadId, toStageId) {
  const lead = state.leads.get(leadId);
  if (!lead || lead.stage.id === toStageId) return;
  const target = stageById(toStageId);
  const card = cardElement(leadId);
  // Optimistic: the card moves now and comes back if the server refuses.
  if (card) {
    columnList(toStageId).prepend(card);
    card.classList.add("pending");
    card.setAttribute("aria-busy", "true");
  }
  try {
    const data = await request(MOVE_MUTATION, {
      input: { leadId, toStageId, expectedVersion: lead.version },
    });
    const moved = checkPayload(data.moveLead).lead;
    adjustCount(lead.stage.id, -1, lead.value);
    adjustCount(toStageId, +1, moved.value);
    showLead(moved)?.querySelector(".move-to")?.focus({ preventScroll: true });
    announce(`Moved “${lead.title}” to ${target.name}.`, "info");
  } catch (error) {
    const back = showLead(state.leads.get(leadId));
    back?.querySelector(".move-to")?.focus({ preventScroll: true });
    const from = stageById(lead.stage.id)?.name ?? "its stage";
    const hint = error.code === "CONFLICT" ? " Someone else changed it first: the card shows its latest state." : "";
    announce(`Could not move “${lead.title}” to ${target.name}: ${error.message}. It stays in ${from}.${hint}`);
    if (error.code === "CONFLICT") await reloadLead(leadId);
  } finally {
    cardElement(leadId)?.classList.remove("pending");
    cardElement(leadId)?.removeAttribute("aria-busy");
    await refreshHeads().catch(() => {});
  }
}

async function reloadLead(leadId) {
  const data = await request(LEAD_QUERY, { id: leadId });
  if (data.lead) showLead(data.lead, { atTop: false });
}

function openMoveDialog(leadId) {
  const lead = state.leads.get(leadId);
  const dialog = document.getElementById("move-dialog");
  const select = document.getElementById("move-stage");
  document.getElementById("move-title").textContent = `Move “${lead.title}”`;
  select.replaceChildren(
    ...state.pipeline.stages
      .filter((stage) => stage.id !== lead.stage.id)
      .map((stage) => el("option", { value: stage.id }, stage.name)),
  );
  const next = state.pipeline.stages.find((stage) => stage.position > (stageById(lead.stage.id)?.position ?? -1) && stage.id !== lead.stage.id);
  if (next) select.value = next.id;
  dialog.onclose = () => {
    if (dialog.returnValue === "move" && select.value) moveLead(leadId, select.value);
    else cardElement(leadId)?.querySelector(".move-to")?.focus();
  };
  dialog.returnValue = "";
  dialog.showModal();
  select.focus();
}

function openCloseDialog(leadId, outcome) {
  const lead = state.leads.get(leadId);
  const dialog = document.getElementById("close-dialog");
  const reason = document.getElementById("close-reason");
  document.getElementById("close-title").textContent = `Mark “${lead.title}” ${outcome === "WON" ? "won" : "lost"}`;
  document.getElementById("close-confirm").textContent = outcome === "WON" ? "Mark won" : "Mark lost";
  reason.value = "";
  reason.required = outcome === "LOST";
  reason.placeholder = outcome === "LOST" ? "why it was lost (required)" : "optional";
  dialog.onclose = async () => {
    if (dialog.returnValue !== "close") return;
    try {
      const data = await request(CLOSE_MUTATION, {
        input: { leadId, outcome, reason: reason.value, expectedVersion: lead.version },
      });
      const closed = checkPayload(data.closeLead).lead;
      adjustCount(lead.stage.id, -1, lead.value);
      showLead(closed);
      announce(`“${lead.title}” marked ${outcome === "WON" ? "won" : "lost"}.`, "info");
    } catch (error) {
      announce(`Could not close “${lead.title}”: ${error.message}.`);
      if (error.code === "CONFLICT") await reloadLead(leadId);
    }
    await refreshHeads().catch(() => {});
  };
  dialog.returnValue = "";
  dialog.showModal();
  reason.focus();
}

function applyEvent({ leadEvents: event }) {
  const known = state.leads.get(event.leadId);
  if (known && known.version >= event.version) return; // our own change, already shown
  if (!event.lead) {
    cardElement(event.leadId)?.remove();
  } else {
    const before = known && cardElement(event.leadId) ? known.stage.id : null;
    const card = showLead(event.lead);
    if (before) adjustCount(before, -1, known.value);
    if (card) {
      adjustCount(event.lead.stage.id, +1, event.lead.value);
      card.classList.add("flash");
    }
  }
  refreshHeads().catch(() => {});
}

function fillFilterOptions(users) {
  const owner = document.getElementById("filter-owner");
  const current = owner.value;
  owner.replaceChildren(
    el("option", { value: "" }, "Anyone"),
    ...users.filter((user) => user.active).map((user) => el("option", { value: user.id }, user.name)),
  );
  owner.value = current;
}

function fillSourceOptions() {
  const select = document.getElementById("filter-source");
  const current = select.value;
  select.replaceChildren(
    el("option", { value: "" }, "Any source"),
    ...[...state.sources].sort().map((source) => el("option", { value: source }, source)),
  );
  select.value = current;
}

async function loadColumns() {
  await Promise.all(state.pipeline.stages.map((stage) => loadColumn(stage)));
  fillSourceOptions();
}

/** Show a pipeline's board and follow its changes live. */
export async function showBoard(pipeline, users) {
  state.stopEvents?.();
  state.leads.clear();
  state.columns.clear();
  const data = await request(PIPELINE_QUERY, { id: pipeline.id });
  state.pipeline = data.pipeline;
  fillFilterOptions(users);
  renderColumns();
  renderStagePicker();
  await loadColumns();
  board().dataset.ready = "true";
  let wasOffline = false;
  state.stopEvents = subscribe(EVENTS_SUBSCRIPTION, { pipelineId: pipeline.id }, {
    onData: applyEvent,
    positionOf: (data) => data?.leadEvents?.position,
    onStatus: (status) => {
      state.onLiveStatus(status);
      if (status === "offline") wasOffline = true;
      else if (status === "live" && wasOffline) {
        wasOffline = false;
        resync();
      }
    },
    onError: (error) => announce(`Live updates: ${error.message}`, "error", "connection"),
  });
}

/**
 * Back online: re-read every column, since what changed meanwhile (on this server or while it was
 * down) may not come as events, and clear the messages that said the server was away.
 */
async function resync() {
  board().dataset.ready = "false";
  try {
    await refreshHeads();
    await loadColumns();
    clearNotice("connection");
    board().dataset.ready = "true";
  } catch (error) {
    announceFailure("Could not re-read the board", error);
  }
}

export function onLiveStatus(callback) {
  state.onLiveStatus = callback;
}

/** Put the filter controls back to `filters` (after a filter could not be applied). */
function showFilters(form, filters) {
  form.elements.owner.value = filters.owner;
  form.elements.source.value = filters.source;
  form.elements.search.value = filters.search;
  form.elements.stalled.checked = filters.stalled;
}

let filterTimer = null;
let filterRun = 0;
export function bindFilters() {
  const form = document.getElementById("board-filters");
  const apply = async () => {
    const data = new FormData(form);
    const previous = state.filters;
    state.filters = {
      owner: data.get("owner") ?? "",
      source: data.get("source") ?? "",
      search: (data.get("search") ?? "").trim(),
      stalled: data.get("stalled") === "on",
    };
    if (!state.pipeline) return;
    const run = ++filterRun; // only the latest change decides what the board shows
    board().dataset.ready = "false";
    try {
      await loadColumns();
    } catch (error) {
      if (run !== filterRun) return;
      // Never show a filter as applied when the columns do not match it: go back to the last one.
      state.filters = previous;
      showFilters(form, previous);
      announceFailure("Could not apply the filter", error, "The board keeps the filter it had.");
      await loadColumns().catch(() => {});
    }
    if (run === filterRun) board().dataset.ready = "true";
  };
  form.addEventListener("submit", (event) => event.preventDefault());
  form.addEventListener("change", apply);
  form.addEventListener("input", (event) => {
    if (event.target.type !== "search") return;
    clearTimeout(filterTimer);
    filterTimer = setTimeout(apply, 300);
  });
}
