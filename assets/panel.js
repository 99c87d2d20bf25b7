// Extility control panel: opens and closes the dialogs. Hand-written; the one script besides
// htmx (assets/htmx.min.js). The pages work without it: a dialog's button is then a link to the
// page with the dialog open.
(function () {
  "use strict";

  // Dialogs the server rendered open (asked for, or their form just failed) become modal.
  function openRendered() {
    document.querySelectorAll("dialog[data-open]").forEach(function (dialog) {
      if (dialog.matches(":modal")) {
        return;
      }
      if (dialog.open) {
        dialog.close();
      }
      dialog.showModal();
      var field = dialog.querySelector("[aria-invalid=true], input:not([type=hidden]), select");
      if (field) {
        field.focus();
      }
    });
  }

  document.addEventListener("click", function (event) {
    var opener = event.target.closest("[data-dialog]");
    if (opener) {
      var dialog = document.getElementById(opener.getAttribute("data-dialog"));
      if (dialog && !dialog.open) {
        event.preventDefault();
        dialog.showModal();
      }
      return;
    }
    var closer = event.target.closest("[data-close-dialog]");
    if (closer) {
      event.preventDefault();
      closer.closest("dialog").close();
    }
  });

  document.addEventListener("DOMContentLoaded", openRendered);
  document.addEventListener("htmx:afterSettle", openRendered);
})();
