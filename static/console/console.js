// The project console's few interactive parts, under the strict CSP (no inline script): the upload
// panel (dry-run preview, then import, with an upload progress bar; a large file's background import
// job is polled in the imports list), the instructions' markdown
// preview, and background exports with a progress bar. Text from the server or the file is only ever
// set as textContent, never as HTML, except the preview, which the server has sanitised.
(function () {
  "use strict";

  function csrf(root) {
    var input = (root || document).querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function el(tag, text, cls) {
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    if (cls) { node.className = cls; }
    return node;
  }

  // --- upload: preview (dry run), then import -------------------------------------------------
  function upload(section) {
    var file = section.querySelector("#upload-file");
    var previewButton = section.querySelector("#upload-preview");
    var commitButton = section.querySelector("#upload-commit");
    var bar = section.querySelector("#upload-progress");
    var status = section.querySelector("#upload-status");
    var result = section.querySelector("#upload-result");
    var url = section.getAttribute("data-import-url");
    var countBox = section.querySelector("#upload-count-retrain");

    // What preference records become is the admin's choice: nothing is ticked until they make it.
    function preferenceChoice() {
      var checked = section.querySelector('input[name="upload-preferences"]:checked');
      return checked ? checked.value : "";
    }

    function send(dryRun) {
      if (!file.files.length) { status.textContent = "Choose a file first."; return; }
      var form = new FormData();
      form.append("file", file.files[0]);
      form.append("format", section.querySelector("#upload-format").value);
      form.append("source", section.querySelector("#upload-source").value);
      form.append("skip_invalid", section.querySelector("#upload-skip").checked ? "true" : "false");
      form.append("preferences", preferenceChoice() || "judgments");
      form.append("count_for_retrain", countBox.checked ? "true" : "false");
      form.append("dry_run", dryRun ? "true" : "false");
      var xhr = new XMLHttpRequest();
      xhr.open("POST", url);
      xhr.setRequestHeader("X-CSRFToken", csrf(section));
      xhr.setRequestHeader("Accept", "application/json");
      bar.hidden = false; bar.value = 0;
      previewButton.disabled = commitButton.disabled = true;
      status.textContent = dryRun ? "Uploading for a preview…" : "Uploading…";
      xhr.upload.onprogress = function (e) { if (e.lengthComputable) { bar.value = e.loaded / e.total; } };
      xhr.upload.onload = function () { status.textContent = "Checking every record…"; };
      xhr.onload = function () {
        previewButton.disabled = false;
        var body = null;
        try { body = JSON.parse(xhr.responseText); } catch (err) { body = null; }
        if (xhr.status === 202 && body) {  // a large file: the worker imports it, the list below follows it
          bar.value = 1;
          result.textContent = "";
          status.textContent = "Uploaded: importing in the background (see Imports below).";
          section.setAttribute("data-state", "queued");
          importJobAdd(body);
        } else if (xhr.status === 200 || xhr.status === 201) {
          bar.value = 1;
          show(body, dryRun);
          var undecided = dryRun && preferenceRecords(body) > 0 && !preferenceChoice();
          commitButton.disabled = !dryRun || undecided;
          status.textContent = undecided ? "The file holds preference records: choose what they become, then Preview again."
            : dryRun ? "Nothing written yet: check the preview, then Import." : "Imported.";
          section.setAttribute("data-state", dryRun ? "previewed" : "imported");
          if (!dryRun) { refreshTables(); }
        } else {
          showErrors(body, xhr.status);
          status.textContent = "Nothing was written.";
          section.setAttribute("data-state", "error");
        }
      };
      xhr.onerror = function () { previewButton.disabled = false; status.textContent = "The upload failed (network)."; };
      xhr.send(form);
    }

    function counts(body) {
      return ["prompts", "responses", "tasks", "judgments", "pairs", "demonstrations"].map(function (k) {
        return body[k] + " " + k;
      }).join(", ") + "; " + body.skipped_duplicates + " duplicates skipped" +
        (body.skipped_invalid ? ", " + body.skipped_invalid + " invalid records skipped" : "");
    }

    function preferenceRecords(body) { return body.judgments + body.references; }

    // The effect of the choice, in words: whether annotators will have anything to label.
    function effect(body, dryRun) {
      var words = [];
      if (body.references) {
        words.push(body.references + " preference records " + (dryRun ? "become" : "became") +
          " tasks open for annotators, each with the recorded choice kept as a hidden reference.");
      }
      if (body.judgments) {
        words.push(body.judgments + " preference records " + (dryRun ? "are kept" : "were kept") +
          " as judgments: each fills its task's seat, so annotators get none of these tasks. They " +
          (body.counts_for_retrain ? "count" : "do not count") + " toward the training threshold (" +
          section.getAttribute("data-retrain-min") + " new judgments start a scheduled round).");
      }
      words.push("After this import the project has " + body.project_open_tasks + " tasks open for annotators" +
        (body.open_tasks ? " (" + body.open_tasks + " of them from this file)." : "."));
      return words.join(" ");
    }

    function show(body, dryRun) {
      result.textContent = "";
      result.appendChild(el("p", (dryRun ? "Would create " : "Created ") + counts(body) + ".", "upload-counts"));
      result.appendChild(el("p", effect(body, dryRun), "upload-effect"));
      if (body.preview && body.preview.length && dryRun) {
        var table = el("table", null, "preview-rows");
        var head = el("tr");
        ["Line", "Kind", "Prompt", "Responses", "Ranking / demonstration"].forEach(function (h) { head.appendChild(el("th", h)); });
        table.appendChild(head);
        body.preview.forEach(function (row) {
          var tr = el("tr");
          tr.appendChild(el("td", row.line));
          tr.appendChild(el("td", row.kind));
          var prompt = el("td", row.prompt); prompt.dir = "auto"; tr.appendChild(prompt);
          var responses = el("td");
          row.responses.forEach(function (r, i) {
            var div = el("div", (i + 1) + ". " + r.text); div.dir = "auto"; responses.appendChild(div);
          });
          tr.appendChild(responses);
          tr.appendChild(el("td", row.ranking ? JSON.stringify(row.ranking) : row.demonstration));
          table.appendChild(tr);
        });
        result.appendChild(table);
      }
      if (body.rejects && body.rejects.length) {
        result.appendChild(el("p", body.rejects.length + " records left out:", "error"));
        var list = el("ul", null, "rejects");
        body.rejects.slice(0, 200).forEach(function (r) { list.appendChild(el("li", "line " + r.line + ": " + r.field + ": " + r.message)); });
        result.appendChild(list);
        var blob = new Blob([body.rejects.map(function (r) { return JSON.stringify(r); }).join("\n") + "\n"], { type: "application/x-ndjson" });
        var link = el("a", "Download the skipped lines with their errors");
        link.href = URL.createObjectURL(blob);
        link.download = "skipped-lines.jsonl";
        result.appendChild(link);
      }
    }

    function showErrors(body, code) {
      result.textContent = "";
      var list = el("ul", null, "errorlist upload-errors");
      var errors = (body && body.errors) || [];
      if (!errors.length && body) {
        Object.keys(body).forEach(function (k) { [].concat(body[k]).forEach(function (m) { errors.push({ line: 0, field: k, message: typeof m === "string" ? m : JSON.stringify(m) }); }); });
      }
      if (!errors.length) { errors.push({ line: 0, field: "file", message: "the server answered " + code }); }
      errors.slice(0, 200).forEach(function (e) {
        list.appendChild(el("li", (e.line ? "line " + e.line + ": " : "") + e.field + ": " + e.message));
      });
      result.appendChild(list);
    }

    previewButton.addEventListener("click", function () { send(true); });
    commitButton.addEventListener("click", function () { send(false); });
    file.addEventListener("change", function () { commitButton.disabled = true; result.textContent = ""; status.textContent = ""; });
    section.querySelectorAll('#upload-preferences input').forEach(function (input) {
      input.addEventListener("change", function () {
        if (!result.textContent) { return; }
        commitButton.disabled = true;
        status.textContent = "Preview again: the choice changes what is written.";
      });
    });
  }

  // --- background imports: "Importing <file>: N% (rows)" until the job ends ----------------------
  function importJobText(job) {
    if (job.status === "succeeded") {
      var r = job.result || {};
      return "Imported " + job.filename + ": " + job.rows_done + " rows (" + (r.prompts || 0) + " prompts, " +
        (r.tasks || 0) + " tasks, " + (r.judgments || 0) + " judgments; " + (r.skipped_duplicates || 0) + " duplicates skipped)";
    }
    if (job.status === "failed") {
      return "Import of " + job.filename + " failed: " + (job.error || "failed") + (job.errors || []).slice(0, 20).map(function (e) {
        return "; " + (e.line ? "line " + e.line + ": " : "") + e.field + ": " + e.message;
      }).join("");
    }
    return "Importing " + job.filename + ": " + Math.round((job.progress || 0) * 100) + "% (" + job.rows_done + " rows)";
  }

  function importJobPoll(item) {
    fetch(item.getAttribute("data-import-job"), { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (job) {
        if (!job) { return; }
        item.textContent = importJobText(job);
        item.setAttribute("data-status", job.status);
        if (job.status === "succeeded" || job.status === "failed") {
          if (job.status === "succeeded") { refreshTables(); }
          return;
        }
        setTimeout(function () { importJobPoll(item); }, 1000);
      }, function () { setTimeout(function () { importJobPoll(item); }, 3000); });  // a network blip: keep polling
  }

  function importJobAdd(job) {
    var list = document.getElementById("import-jobs");
    if (!list) { return; }
    var item = el("li", importJobText(job));
    item.setAttribute("data-import-job", job.url);
    item.setAttribute("data-status", job.status);
    list.insertBefore(item, list.firstChild);
    importJobPoll(item);
  }

  // After an import the browser and the import history below would still show the page as it was
  // loaded ("No rows."): take them from a fresh copy of this page (the server's escaped HTML).
  function refreshTables() {
    fetch(location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var fresh = new DOMParser().parseFromString(html, "text/html");
        ["table.browse", "p.pager", "table.imports", "#browse-sources"].forEach(function (selector) {
          var now = document.querySelector(selector);
          var next = fresh.querySelector(selector);
          if (now && next) { now.replaceWith(document.importNode(next, true)); }
        });
      }, function () { /* a reload shows the tables */ });
  }

  // --- markdown preview of the instructions ---------------------------------------------------
  function markdownPreview(form) {
    var url = form.getAttribute("data-preview-url");
    form.querySelectorAll("[data-markdown-preview]").forEach(function (area) {
      var out = form.querySelector('[data-preview-for="' + area.id + '"]');
      if (!out) { return; }
      var timer = null;
      function render() {
        var body = new FormData();
        body.append("text", area.value);
        fetch(url, { method: "POST", body: body, headers: { "X-CSRFToken": csrf(form) }, credentials: "same-origin" })
          .then(function (r) {
            return r.json().then(function (data) { return { ok: r.ok, data: data }; }, function () { return null; });
          })
          .then(function (got) {
            if (!got) { return; }
            if (got.ok) { out.innerHTML = got.data.html; }  // sanitised on the server
            else { out.textContent = (got.data.text || ["No preview."]).join(" "); }  // over the size cap
            out.hidden = !area.value;
          });
      }
      area.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(render, 250); });
      if (area.value) { render(); }
    });
  }

  // --- background export with progress --------------------------------------------------------
  function exportJob(button) {
    var box = document.getElementById("export-job-status");
    var bar = box.querySelector("progress");
    var text = box.querySelector("span");

    // A refusal or a failure ends in words and a button that works again, never in a silent stop
    // (an HTML error page, e.g. a 403 after the session ended, is not JSON).
    function json(r) {
      return r.json().then(function (body) { return { ok: r.ok, status: r.status, body: body }; },
                           function () { return { ok: false, status: r.status, body: null }; });
    }
    function fail(message) { text.textContent = message; bar.hidden = true; button.disabled = false; }

    button.addEventListener("click", function () {
      button.disabled = true;
      var old = document.getElementById("export-job-download");  // a second run replaces the first's link
      if (old) { old.remove(); }
      bar.value = 0;
      text.textContent = "Queuing…";
      fetch(button.getAttribute("data-jobs-url"), {
        method: "POST", credentials: "same-origin", body: button.getAttribute("data-body"),
        headers: { "Content-Type": "application/json", "X-CSRFToken": csrf(document.getElementById("export-preview")) },
      }).then(json)
        .then(function (res) {
          if (!res.ok) { fail("Refused (" + res.status + "): " + (res.body ? JSON.stringify(res.body) : "the server answered " + res.status)); return; }
          bar.hidden = false;
          poll(button.getAttribute("data-jobs-url") + res.body.id + "/");
        }, function () { fail("The request failed (network)."); });
    });

    function poll(url) {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(json)
        .then(function (res) {
          if (!res.ok) { fail("Could not read the job (" + res.status + ")."); return; }
          var job = res.body;
          bar.value = job.progress || 0;
          text.textContent = "Job " + job.id + ": " + job.status + ", " + job.rows + " rows";
          if (job.status === "succeeded") {
            bar.value = 1;
            var link = el("a", "Download the export", "button primary");
            link.id = "export-job-download";
            link.href = job.download_url;
            box.appendChild(link);
            button.disabled = false;
          } else if (job.status === "failed") {
            fail(text.textContent + ": " + (job.error || "failed"));
          } else {
            setTimeout(function () { poll(url); }, 1000);
          }
        }, function () { setTimeout(function () { poll(url); }, 3000); });  // a network blip: keep polling
    }
  }

  document.querySelectorAll("#import-jobs [data-import-job]").forEach(function (item) {
    var state = item.getAttribute("data-status");
    if (state === "queued" || state === "running") { importJobPoll(item); }
  });
  var section = document.getElementById("upload");
  if (section) { upload(section); }
  var form = document.getElementById("project-form");
  if (form) { markdownPreview(form); }
  var job = document.getElementById("export-job");
  if (job) { exportJob(job); }
  document.body.setAttribute("data-console-ready", "1");
})();
