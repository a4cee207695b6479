// Live progress for the training runs page: poll the JSON view, update run and round (pipeline)
// bars and statuses in place, and reload once a run ends or a round moves to its next step, so the
// curves and the versions table are redrawn on the server.
(function () {
  "use strict";
  var root = document.getElementById("training");
  if (!root) { return; }
  var url = root.getAttribute("data-poll-url");
  var ACTIVE = { queued: true, running: true };

  function anyActive() {
    return !!root.querySelector('tr[data-status="queued"], tr[data-status="running"]');
  }

  function updatePipeline(pipeline) {
    var row = root.querySelector('tr[data-pipeline-id="' + pipeline.pipeline_id + '"]');
    if (!row) { return pipeline.status === "running" ? "new" : null; }
    var before = row.getAttribute("data-status");
    row.setAttribute("data-status", pipeline.status);
    var bar = row.querySelector("progress.round");
    if (bar) { bar.value = pipeline.progress; }
    var pct = row.querySelector(".pct");
    if (pct) { pct.textContent = Math.round(pipeline.progress * 100) + "%"; }
    var changed = before !== pipeline.status;
    pipeline.steps.forEach(function (step) {
      var cell = row.querySelector('.step[data-kind="' + step.kind + '"]');
      if (!cell) { return; }
      if (!cell.classList.contains(step.status)) { changed = true; }
      var stepBar = cell.querySelector("progress");
      if (stepBar) { stepBar.value = step.progress; }
    });
    return changed ? "ended" : null;
  }

  function update(run) {
    var row = root.querySelector('tr[data-run-id="' + run.id + '"]');
    if (!row) { return ACTIVE[run.status] ? "new" : null; }
    var before = row.getAttribute("data-status");
    row.setAttribute("data-status", run.status);
    row.querySelector(".status").textContent = run.status;
    var bar = row.querySelector("progress");
    if (bar) { bar.value = run.progress; }
    var pct = row.querySelector(".pct");
    if (pct) { pct.textContent = Math.round(run.progress * 100) + "%"; }
    var eta = row.querySelector(".eta");
    if (eta) { eta.textContent = ACTIVE[run.status] && run.timing ? run.timing.text : ""; }
    if (run.heartbeat_at) {
      row.querySelector(".heartbeat").textContent = new Date(run.heartbeat_at).toLocaleTimeString();
    }
    if (run.error) { row.querySelector(".error").textContent = run.error.slice(0, 120); }
    return ACTIVE[before] && !ACTIVE[run.status] ? "ended" : null;
  }

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        var changes = data.runs.map(update).concat((data.pipelines || []).map(updatePipeline));
        if (changes.indexOf("ended") >= 0 || changes.indexOf("new") >= 0) {
          window.location.reload();
          return;
        }
        schedule();
      })
      .catch(function () { schedule(10000); });
  }

  function schedule(delay) {
    window.setTimeout(poll, delay || (anyActive() ? 2000 : 15000));
  }

  schedule(1000);
})();

// One run's page, while the run is live: its status, progress and time (elapsed, speed, time left)
// from the same JSON, and a reload once it ends, so its curves and result are drawn on the server.
(function () {
  "use strict";
  var root = document.getElementById("run-live");
  if (!root) { return; }
  var url = root.getAttribute("data-poll-url");
  var id = Number(root.getAttribute("data-run-id"));

  function poll() {
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); })
      .then(function (data) {
        var run = data.runs.filter(function (r) { return r.id === id; })[0];
        if (!run) { return; }  // no longer among the latest runs: the page stays as it was drawn
        if (run.status !== root.getAttribute("data-status")) { window.location.reload(); return; }
        root.querySelector("progress").value = run.progress;
        root.querySelector(".pct").textContent = Math.round(run.progress * 100) + "%";
        document.getElementById("run-timing").textContent = run.timing.text || "—";
        window.setTimeout(poll, 2000);
      })
      .catch(function () { window.setTimeout(poll, 10000); });
  }

  window.setTimeout(poll, 2000);
})();

// A form with data-confirm (cancelling a run) asks first; a listener, since the CSP forbids inline handlers.
document.addEventListener("submit", function (event) {
  "use strict";
  var message = event.target.getAttribute && event.target.getAttribute("data-confirm");
  if (message && !window.confirm(message)) { event.preventDefault(); }
});
