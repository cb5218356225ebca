// The lead panel: details, BANT qualification, the stage history as a timeline, and activities
// (log one, complete one).

import { checkPayload, request } from "./graphql.js";
import { setBackgroundInert, trapFocus } from "./dialogs.js";
import { announce, dateTime, days, el, money } from "./format.js";

const LEAD_QUERY = `query LeadPanel($id: ID!) {
  lead(id: $id) {
    id title company contactName contactEmail contactPhone source value status lostReason version
    expectedCloseDate budget authority need timeline qualificationScore createdAt daysInStage isStalled
    stage { id name } owner { id name }
    history { id fromStatus toStatus changedAt fromStage { name } toStage { name } actor { name } }
    activities(first: 10) { id kind subject body dueAt doneAt createdAt owner { name } }
  }
}`;

const LOG_MUTATION = `mutation Log($input: LogActivityInput!) {
  logActivity(input: $input) { activity { id } userErrors { field message code } }
}`;

const COMPLETE_MUTATION = `mutation Complete($input: CompleteActivityInput!) {
  completeActivity(input: $input) { activity { id } userErrors { field message code } }
}`;

const KINDS = ["CALL", "EMAIL", "MEETING", "NOTE", "TASK"];
const panel = () => document.getElementById("lead-panel");
let opener = null;

function bant(lead) {
  const items = [
    ["Budget", lead.budget],
    ["Authority", lead.authority],
    ["Need", lead.need],
    ["Timeline", lead.timeline],
  ];
  return el(
    "section",
    { class: "bant", "aria-label": "BANT qualification" },
    el("h4", {}, `Qualification ${lead.qualificationScore}/100`),
    el(
      "ul",
      {},
      items.map(([name, met]) => el("li", { class: met ? "met" : "unmet" }, `${met ? "✓" : "✗"} ${name}`)),
    ),
  );
}

function timeline(history) {
  return el(
    "section",
    { "aria-label": "Stage history" },
    el("h4", {}, "History"),
    el(
      "ol",
      { class: "timeline" },
      history.map((change) => {
        const what = change.fromStatus === null
          ? `Created in ${change.toStage.name}`
          : change.fromStatus !== change.toStatus
            ? `${change.toStatus.toLowerCase()} in ${change.toStage.name}`
            : `${change.fromStage?.name ?? "?"} → ${change.toStage.name}`;
        return el(
          "li",
          {},
          el("time", { datetime: change.changedAt }, dateTime(change.changedAt)),
          el("span", {}, what),
          change.actor ? el("span", { class: "muted" }, ` by ${change.actor.name}`) : null,
        );
      }),
    ),
  );
}

function activities(lead) {
  const form = el(
    "form",
    { class: "log-activity" },
    el("label", {}, "Kind ", el("select", { name: "kind" }, KINDS.map((kind) => el("option", { value: kind }, kind.toLowerCase())))),
    el("label", {}, "Subject ", el("input", { name: "subject", required: true, maxlength: "200" })),
    el("label", {}, "Due ", el("input", { name: "due", type: "date" })),
    el("button", { type: "submit" }, "Log activity"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    const input = { leadId: lead.id, kind: data.get("kind"), subject: data.get("subject") };
    if (data.get("due")) input.dueAt = new Date(`${data.get("due")}T09:00:00`).toISOString();
    await act(LOG_MUTATION, { input }, "logActivity", lead.id, "Activity logged.");
  });
  return el(
    "section",
    { "aria-label": "Activities" },
    el("h4", {}, "Activities"),
    el(
      "ul",
      { class: "activities" },
      lead.activities.map((activity) =>
        el(
          "li",
          { class: activity.doneAt ? "done" : "open" },
          el("strong", {}, activity.kind.toLowerCase()),
          ` ${activity.subject}`,
          el("span", { class: "muted" }, activity.doneAt ? ` done ${dateTime(activity.doneAt)}` : activity.dueAt ? ` due ${dateTime(activity.dueAt)}` : ""),
          activity.doneAt
            ? null
            : el(
              "button",
              {
                type: "button",
                class: "link",
                "aria-label": `Complete ${activity.subject}`,
                onclick: () => act(COMPLETE_MUTATION, { input: { activityId: activity.id } }, "completeActivity", lead.id, "Activity completed."),
              },
              "Complete",
            ),
        ),
      ),
    ),
    form,
  );
}

async function act(mutation, variables, field, leadId, done) {
  try {
    checkPayload((await request(mutation, variables))[field]);
    announce(done, "info");
    await openLead(leadId, { keepOpener: true });
    document.getElementById("lead-panel-title")?.focus();
  } catch (error) {
    announce(`${error.message}.`);
  }
}

function details(lead) {
  const rows = [
    ["Stage", `${lead.stage.name} (${days(lead.daysInStage)})`],
    ["Status", lead.status.toLowerCase() + (lead.lostReason ? ` — ${lead.lostReason}` : "")],
    ["Value", money(lead.value)],
    ["Owner", lead.owner?.name ?? "Unassigned"],
    ["Source", lead.source || "–"],
    ["Contact", [lead.contactName, lead.contactEmail, lead.contactPhone].filter(Boolean).join(" · ") || "–"],
    ["Expected close", lead.expectedCloseDate ?? "–"],
    ["Created", dateTime(lead.createdAt)],
  ];
  return el("dl", { class: "details" }, rows.flatMap(([term, value]) => [el("dt", {}, term), el("dd", {}, value)]));
}

/** Open (or refresh) the panel for a lead. */
export async function openLead(leadId, { keepOpener = false } = {}) {
  if (!keepOpener) opener = document.activeElement;
  let lead;
  try {
    lead = (await request(LEAD_QUERY, { id: leadId })).lead;
  } catch (error) {
    announce(`Could not load the lead: ${error.message}.`);
    return;
  }
  if (!lead) return;
  const body = document.getElementById("lead-panel-body");
  body.replaceChildren(
    el("h3", { id: "lead-panel-title", tabindex: "-1" }, lead.title),
    el("p", { class: "muted" }, lead.company, lead.isStalled ? el("span", { class: "badge stalled-badge" }, "Stalled") : null),
    details(lead),
    bant(lead),
    timeline(lead.history),
    activities(lead),
  );
  panel().hidden = false;
  setBackgroundInert(true);
  if (!keepOpener) document.getElementById("lead-panel-close").focus();
}

export function bindLeadPanel() {
  const close = () => {
    panel().hidden = true;
    setBackgroundInert(false);
    opener?.focus?.();
  };
  document.getElementById("lead-panel-close").addEventListener("click", close);
  trapFocus(panel());
  panel().addEventListener("keydown", (event) => {
    if (event.key === "Escape") close();
  });
}
