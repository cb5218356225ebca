// Keyboard behaviour shared by the dialogs: Enter in a text field confirms (the form's first button is
// Cancel, which the browser would otherwise pick), and a panel that covers the page keeps Tab inside it.

const FOCUSABLE = "a[href], button:not([disabled]), input:not([disabled]), select:not([disabled]), textarea, [tabindex]:not([tabindex='-1'])";

/** Enter in an input of a `<form method="dialog">` presses the button marked `data-default`. */
export function bindDialogDefaults() {
  for (const form of document.querySelectorAll("dialog form[method=dialog]")) {
    const confirm = form.querySelector("[data-default]");
    if (!confirm) continue;
    form.addEventListener("keydown", (event) => {
      if (event.key !== "Enter" || event.target.tagName !== "INPUT") return;
      event.preventDefault();
      form.requestSubmit(confirm); // validates, so a required reason stays asked for
    });
  }
}

/** Tab and Shift+Tab wrap inside `container` (a side panel shown as a modal dialog). */
export function trapFocus(container) {
  container.addEventListener("keydown", (event) => {
    if (event.key !== "Tab") return;
    const items = [...container.querySelectorAll(FOCUSABLE)].filter((item) => item.offsetParent !== null);
    if (!items.length) return;
    const first = items[0];
    const last = items[items.length - 1];
    if (event.shiftKey && (document.activeElement === first || !container.contains(document.activeElement))) {
      event.preventDefault();
      last.focus();
    } else if (!event.shiftKey && document.activeElement === last) {
      event.preventDefault();
      first.focus();
    }
  });
}

/** Make the page behind a modal panel unreachable (and restore it). */
export function setBackgroundInert(inert) {
  for (const id of ["main", "page-header"]) document.getElementById(id)?.toggleAttribute("inert", inert);
}
