// Staff pages: the Echo buttons ask the API without leaving the page; forms with data-confirm ask first;
// the search form shows only the date fields that the chosen period needs.
(function () {
  "use strict";
  var meta = document.querySelector('meta[name="csrf-token"]');
  var csrf = meta ? meta.getAttribute("content") : "";

  document.querySelectorAll("button[data-echo]").forEach(function (button) {
    button.addEventListener("click", function (event) {
      event.preventDefault();
      var cell = button.closest("tr").querySelector(".echo-result");
      button.disabled = true;
      cell.textContent = "Checking…";
      fetch(button.getAttribute("data-echo"), {
        method: "POST", credentials: "same-origin", headers: { "X-CSRF-Token": csrf }
      }).then(function (response) {
        return response.json().then(function (data) { return { ok: response.ok, data: data }; });
      }).then(function (result) {
        var span = document.createElement("span");
        if (result.ok) {
          span.className = result.data.online ? "online" : "offline";
          span.textContent = result.data.online ? "Online" : "Offline: " + result.data.reason;
        } else {
          span.className = "offline";
          span.textContent = result.data.message || result.data.error || "Error";
        }
        cell.replaceChildren(span);
      }).catch(function () {
        cell.textContent = "The appliance did not answer.";
      }).finally(function () { button.disabled = false; });
    });
  });

  document.querySelectorAll("form[data-confirm]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      if (!window.confirm(form.getAttribute("data-confirm"))) { event.preventDefault(); }
    });
  });

  var period = document.getElementById("period");
  if (period) {
    var sync = function () {
      document.querySelectorAll(".date-exact").forEach(function (el) { el.hidden = period.value !== "exact"; });
      document.querySelectorAll(".date-range").forEach(function (el) { el.hidden = period.value !== "range"; });
    };
    period.addEventListener("change", sync);
    sync();
  }
})();
