// The console's own script: every behaviour a template used to carry inline, bound here instead,
// so the Content-Security-Policy can say script-src 'self' (no inline script, no eval).
(function () {
  "use strict";

  // Forms with data-validate-json="<field>": refuse to submit data that is not a JSON object
  // (the server checks again).
  function bindJsonForms(root) {
    root.querySelectorAll("form[data-validate-json]").forEach(function (form) {
      if (form.dataset.bound) return;
      form.dataset.bound = "1";
      var field = form.elements[form.dataset.validateJson], out = form.querySelector(".json-error");
      if (!field || !out) return;
      function check() {
        var msg = "";
        try {
          var v = JSON.parse(field.value || "{}");
          if (v === null || typeof v !== "object" || Array.isArray(v)) msg = "Data must be a JSON object, e.g. {\"user\": 123}.";
        } catch (e) { msg = "Data is not valid JSON: " + e.message; }
        out.textContent = msg; out.hidden = !msg; field.setCustomValidity(msg);
        return !msg;
      }
      field.addEventListener("input", check);
      form.addEventListener("submit", function (ev) { if (!check()) ev.preventDefault(); });
    });
  }

  // Polling elements with data-poll-pause-focus="<selector>": skip a poll while the focused element
  // is inside something matching the selector (a redraw would throw away what the user is typing).
  // This replaces hx-trigger's "[...]" filters, which htmx can only evaluate with eval.
  document.addEventListener("htmx:beforeRequest", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    var selector = elt && elt.getAttribute && elt.getAttribute("data-poll-pause-focus");
    if (!selector) return;
    var active = document.activeElement;
    if (active && active !== document.body && active.closest(selector)) ev.preventDefault();
  });

  document.addEventListener("DOMContentLoaded", function () { bindJsonForms(document); });
  // Content htmx swaps in (a partial with a launch form) is bound too.
  document.addEventListener("htmx:load", function (ev) {
    var elt = ev.detail && ev.detail.elt;
    if (elt && elt.querySelectorAll) bindJsonForms(elt.parentNode || elt);
  });
})();
