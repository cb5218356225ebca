// Formatting and tiny DOM helpers shared by the views.

let currency = "USD";

export function setCurrency(code) {
  currency = code || "USD";
}

/** "1250.00" → "$1,250"; money arrives as a decimal string and is shown whole. */
export function money(value, { compact = false } = {}) {
  if (value === null || value === undefined) return "–";
  const number = Number(value);
  try {
    return new Intl.NumberFormat("en-US", {
      style: "currency",
      currency,
      ...(compact ? { notation: "compact", maximumSignificantDigits: 3 } : { maximumFractionDigits: 0 }),
    }).format(number);
  } catch {
    return `${Math.round(number).toLocaleString("en-US")} ${currency}`;
  }
}

export function percent(value, digits = 0) {
  return value === null || value === undefined ? "–" : `${(value * 100).toFixed(digits)}%`;
}

export function days(value) {
  return value === null || value === undefined ? "–" : `${value.toFixed(value < 10 ? 1 : 0)} d`;
}

export function number(value, digits = 0) {
  return value === null || value === undefined
    ? "–"
    : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });
}

export function dateTime(value) {
  return value ? new Date(value).toLocaleString("en-GB", { dateStyle: "medium", timeStyle: "short" }) : "–";
}

/** Build an element: el("div", {class: "x", onclick: f}, child, "text", …). */
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "dataset") Object.assign(node.dataset, value);
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

const notice = () => document.getElementById("notice");

/**
 * Show a message in the alert region (errors by default). A `topic` ("connection") lets the message be
 * cleared when what it says stops being true, e.g. once the server answers again.
 */
export function announce(message, kind = "error", topic = null) {
  const box = notice();
  box.dataset.kind = kind;
  box.dataset.topic = topic ?? "";
  document.getElementById("notice-text").textContent = message;
  box.hidden = false;
}

/** A failed request, said once: "<what>: <why>."; an unreachable server is a "connection" message. */
export function announceFailure(what, error, more = "") {
  const topic = error.code === "NETWORK" ? "connection" : null;
  announce(`${what}: ${error.message.replace(/\.$/, "")}.${more ? ` ${more}` : ""}`, "error", topic);
}

/** Hide the message; with a topic, only a message about that topic. */
export function clearNotice(topic = null) {
  if (topic !== null && notice().dataset.topic !== topic) return;
  notice().hidden = true;
}
