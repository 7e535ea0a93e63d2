// The workbench's only script of its own (no inline scripts: the CSP forbids them).
// htmx requests carry the session's CSRF token from <meta name="csrf-token">; an htmx
// error answer shows its status in the page's alert line instead of failing silently.
(function () {
  "use strict";

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  document.addEventListener("htmx:configRequest", function (event) {
    event.detail.headers["X-CSRF-Token"] = csrfToken();
  });

  document.addEventListener("htmx:responseError", function (event) {
    var box = document.getElementById("htmx-error");
    if (!box) {
      return;
    }
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    box.textContent = status === 403
      ? "Not allowed, or the page is out of date: reload it and try again."
      : "The request failed (" + status + "). Reload the page and try again.";
    box.hidden = false;
  });

  // Buttons that ask before they act: <button data-confirm="Discard 3 rows?">.
  document.addEventListener("click", function (event) {
    var target = event.target.closest ? event.target.closest("[data-confirm]") : null;
    if (target && !window.confirm(target.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });
})();
