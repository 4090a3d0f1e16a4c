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

  // Burn queue and robots pages: poll their /api endpoint every few seconds and redraw (no page reload).
  function el(tag, attrs, children) {
    var node = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") { node.textContent = attrs[k]; } else { node.setAttribute(k, attrs[k]); }
    });
    (children || []).forEach(function (c) { if (c) { node.appendChild(typeof c === "string" ? document.createTextNode(c) : c); } });
    return node;
  }
  function poll(url, draw) {
    var busy = false;
    var tick = function () {
      if (busy || document.hidden) { return; }
      busy = true;
      fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { if (r.status === 401) { window.location.reload(); } return r.ok ? r.json() : null; })
        .then(function (data) { if (data) { draw(data); } })
        .catch(function () { /* the next tick tries again */ })
        .finally(function () { busy = false; });
    };
    window.setInterval(tick, 3000);
  }

  var STATES = { queued: "Waiting", authoring: "Preparing", submitted: "Sent to robot", burning: "Burning",
                 done: "Done", failed: "Failed", cancelled: "Cancelled" };
  var ACTIONS = { retry: "Retry", cancel: "Cancel", reburn: "Burn again", reprint: "New labels" };
  var jobsTable = document.getElementById("jobs");
  if (jobsTable) {
    var body = document.getElementById("jobs-body");
    var labelUrl = jobsTable.getAttribute("data-label"), actionUrl = jobsTable.getAttribute("data-action");
    var studyUrl = jobsTable.getAttribute("data-study");
    var jobRow = function (j) {
      var studies = el("td", {}, []);
      j.studies.forEach(function (s, i) {
        if (i) { studies.appendChild(document.createTextNode(", ")); }
        studies.appendChild(el("a", { href: studyUrl.replace("UID", encodeURIComponent(s)), "class": "small", text: j.study_labels[i] }));
      });
      var progress = el("td", { "class": "progress" }, []);
      if (j.note) { progress.appendChild(el("span", { "class": "note", text: j.note })); }
      j.progress.forEach(function (p) { progress.appendChild(el("span", { "class": "muted small", text: p })); });
      var actions = el("div", { "class": "row-actions" }, []);
      j.actions.forEach(function (a) {
        actions.appendChild(el("form", { method: "post", action: actionUrl.replace("/0/", "/" + j.id + "/").replace("ACTION", a), "class": "inline" }, [
          el("input", { type: "hidden", name: "csrf_token", value: csrf }),
          el("button", { "class": "button small" + (a === "cancel" ? " danger" : ""), type: "submit", "aria-label": ACTIONS[a] + " job " + j.id, text: ACTIONS[a] })
        ]));
      });
      j.labels.forEach(function (d) {
        var many = j.labels.length > 1;
        actions.appendChild(el("a", { "class": "button small", href: labelUrl.replace("/0/", "/" + j.id + "/") + "?disc=" + d, target: "_blank", rel: "noopener",
          "aria-label": "Label of job " + j.id + (many ? " disc " + d : ""), text: "Label" + (many ? " " + d : "") }));
      });
      var state = el("td", {}, [el("span", { "class": "badge state-" + j.state, text: STATES[j.state] || j.state })]);
      if (j.needs_staff) { state.appendChild(document.createTextNode(" ")); state.appendChild(el("span", { "class": "badge state-attention", text: "Needs you" })); }
      var first = el("td", { "class": "nowrap" }, [String(j.id)]);
      if (j.parent_id) { first.appendChild(el("br")); first.appendChild(el("span", { "class": "muted small", text: j.source + " of " + j.parent_id })); }
      return el("tr", { id: "job-" + j.id, "data-state": j.state }, [
        first,
        el("td", {}, [j.patient_name_text, el("br"), el("span", { "class": "muted small", text: j.patient_id })]),
        studies, el("td", { text: j.robot }), el("td", { text: j.media || "—" }),
        el("td", { "class": "num", text: j.discs ? String(j.discs) : "—" }), el("td", { "class": "num", text: String(j.copies) }),
        el("td", { "class": "num nowrap", text: j.size ? j.size_text : "—" }), state, progress, el("td", {}, [actions])
      ]);
    };
    // Narrow screens show each job as a card: every cell carries its column's name.
    var heads = Array.prototype.map.call(jobsTable.querySelectorAll("thead th"), function (th) { return th.textContent; });
    var labelCells = function () {
      body.querySelectorAll("tr").forEach(function (tr) {
        Array.prototype.forEach.call(tr.children, function (td, i) { if (heads[i]) { td.setAttribute("data-label", heads[i]); } });
      });
    };
    labelCells();
    poll(jobsTable.getAttribute("data-api"), function (data) {
      var focused = document.activeElement && body.contains(document.activeElement) ? document.activeElement.getAttribute("aria-label") : null;
      var rows = data.jobs.map(jobRow);
      if (!rows.length) { rows = [el("tr", {}, [el("td", { colspan: "11", "class": "empty", text: "No disc jobs yet." })])]; }
      body.replaceChildren.apply(body, rows);
      labelCells();
      if (focused) {  // keyboard users keep their place
        var again = body.querySelector('[aria-label="' + focused.replace(/"/g, "") + '"]');
        if (again) { again.focus(); }
      }
      jobsTable.setAttribute("data-refreshed", String(Date.now()));
    });
  }

  var robotsGrid = document.getElementById("robots");
  if (robotsGrid) {
    var levels = function (title, values, unit) {
      var names = Object.keys(values);
      if (!names.length) { return []; }
      return [el("h3", { text: title }), el("ul", { "class": "levels" }, names.map(function (k) {
        var v = values[k];
        var parts = [el("span", { "class": "level-name", text: k })];
        if (unit === "%") {
          parts.push(el("meter", { min: "0", max: "100", low: "15", high: "30", optimum: "100", value: String(v), "aria-label": k, text: v + "%" }));
          parts.push(el("span", { "class": "level-value", text: v + "%" }));
        } else {
          parts.push(el("span", { "class": "level-value", text: v + " " + unit }));
        }
        return el("li", {}, parts);
      }))];
    };
    poll(robotsGrid.getAttribute("data-api"), function (data) {
      data.robots.forEach(function (r) {
        var card = document.getElementById("robot-" + r.name);
        if (!card) { return; }
        card.setAttribute("data-online", r.online ? "1" : "0");
        var bridge = card.querySelector('[data-field="bridge"]');
        bridge.className = "badge " + (r.online ? "online" : "offline");
        bridge.textContent = r.online ? "Bridge online" : "Bridge offline";
        var state = card.querySelector('[data-field="state"]');
        state.className = "badge state-" + r.state;
        state.textContent = r.state;
        card.querySelector('[data-field="reason"]').textContent = r.reason;
        var parts = levels("Ink", r.ink, "%").concat(levels("Discs", r.media, r.media_unit));
        if (r.drives.length) {
          parts.push(el("h3", { text: "Drives" }));
          parts.push(el("ul", { "class": "plain" }, r.drives.map(function (d) {
            return el("li", { text: d.name + ": " + d.state + (d.percent ? " " + d.percent + "%" : "") });
          })));
        }
        if (r.online) {
          parts.push(el("h3", { text: "Errors" }));
          parts.push(r.errors.length ? el("ul", { "class": "errors" }, r.errors.map(function (e) { return el("li", { text: e }); }))
            : el("p", { "class": "muted", text: "None" }));
        }
        var box = card.querySelector('[data-field="levels"]');
        box.replaceChildren.apply(box, parts);
      });
      robotsGrid.setAttribute("data-refreshed", String(Date.now()));
    });
  }
})();
