// The labeling page: InstructGPT flow (rate each response, then rank), keyboard first. "Revise last"
// reopens the annotator's newest judgment over the current task and posts a correction that supersedes it.
// Response HTML arrives sanitized by the server (markdown-it without HTML, then nh3).
(function () {
  "use strict";
  const cfg = JSON.parse(document.getElementById("pairwise-config").textContent);
  const $ = (id) => document.getElementById(id);
  const el = (tag, attrs, text) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  };
  const LETTERS = "ABCDEFGHI";
  let state = null; // the task on screen
  let paused = null; // the task set aside while the last judgment is revised
  let last = cfg.last; // the newest judgment of this annotator here: what "revise last" reopens
  let prefetched = cfg.next;
  let done = cfg.progress.done;
  let busy = false;

  function randomKey() {
    const bytes = new Uint8Array(16);
    crypto.getRandomValues(bytes);
    return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  }

  function post(url, body) {
    return fetch(url, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": cfg.csrf },
      body: JSON.stringify(body || {}),
    }).then((res) => res.json().catch(() => ({})).then((data) => ({ status: res.status, data, retryAfter: res.headers.get("Retry-After") })));
  }

  // A network error or a 502/503/504 (server or database restarting) is retried with the same
  // body, idempotency key included: the server stores a submit once however often it arrives.
  const RETRY_DELAYS_MS = [500, 1000, 2000, 4000, 8000];
  function postRetrying(url, body, attempt = 0) {
    const again = (retryAfter) => {
      setStatus("Connection problem; retrying…", "error");
      const seconds = Number(retryAfter); // absent or an HTTP date: our own backoff
      const wait = seconds > 0 ? Math.min(10, seconds) * 1000 : RETRY_DELAYS_MS[attempt];
      return new Promise((resolve) => setTimeout(resolve, wait)).then(() => postRetrying(url, body, attempt + 1))
        .then((res) => { if (res.status < 500) setStatus(""); return res; });
    };
    const last = attempt >= RETRY_DELAYS_MS.length;
    return post(url, body).then(
      (res) => ([502, 503, 504].includes(res.status) && !last ? again(res.retryAfter) : res),
      (err) => { if (last) throw err; return again(null); });
  }
  const assignmentUrl = (template, id) => template.replace("/0/", "/" + id + "/");

  function setStatus(text, kind) {
    const s = $("status");
    s.textContent = text || "";
    s.className = "status" + (kind ? " " + kind : "");
  }

  function showProgress() {
    const p = cfg.progress;
    const complete = Math.min(p.tasks_total, p.tasks_complete);
    const count = (n) => n.toLocaleString("en-US");
    $("progress").value = p.tasks_total ? Math.round((100 * complete) / p.tasks_total) : 0;
    $("progress-text").textContent = "You: " + count(done) + " done · project: " + count(complete) + " of "
      + count(p.tasks_total) + " tasks complete";
  }

  // --- rendering --------------------------------------------------------------------------------
  function show(payload) {
    $("empty").hidden = !!payload;
    $("task").hidden = !payload;
    state = payload ? newState(payload, null) : null;
    if (state) render();
    showRevise();
  }

  // prior: a judgment record ({judgment, ranking, both_bad, likert, flags, rationale}) to revise.
  function newState(payload, prior) {
    const s = {
      payload, key: randomKey(), started: performance.now(), cursor: 0, picked: null, verdict: null,
      likert: {}, flags: {}, rationale: "", revising: null,
      arranged: false, // the annotator moved or tied something in the ranking: it is no longer derived from the ratings
      phase: cfg.mode === "demonstrate" ? "write" : (cfg.likert || cfg.flags.length ? "rate" : "rank"),
      order: payload.responses.map((r) => ({ id: r.id, tied: false })),
    };
    if (!prior) return s;
    const ids = payload.responses.map((r) => r.id);
    Object.assign(s, {
      revising: prior.judgment, phase: "rank", arranged: true, likert: { ...prior.likert }, flags: { ...prior.flags },
      rationale: prior.rationale || "",
      order: prior.ranking.flatMap((group) => group.map((id, j) => ({ id, tied: j > 0 }))),
      verdict: prior.both_bad ? "X" : prior.ranking.length === 1 ? "=" : prior.ranking[0][0] === ids[0] ? "A" : "B",
    });
    return s;
  }

  function render() {
    $("empty").hidden = true;
    $("task").hidden = false;
    $("task").classList.toggle("revising", !!state.revising);
    renderPrompt(state.payload.prompt);
    renderResponses();
    renderRanking();
    $("rationale").value = state.rationale;
    $("submit").disabled = false;
    renderPhase();
    window.scrollTo(0, 0);
  }

  function showRevise() {
    const b = $("revise");
    b.hidden = cfg.mode === "demonstrate" || !last;
    b.disabled = !!paused;
  }

  function renderPrompt(prompt) {
    const box = $("prompt");
    box.replaceChildren();
    if (prompt.messages) {
      for (const m of prompt.messages) {
        const bubble = el("div", { class: "msg role-" + (m.role === "user" ? "user" : "other") });
        bubble.append(el("div", { class: "role" }, m.role));
        const body = el("div", { class: "md", dir: "auto" });
        body.innerHTML = m.html; // sanitized server-side
        bubble.append(body);
        box.append(bubble);
      }
    } else {
      const body = el("div", { class: "md", dir: "auto" });
      body.innerHTML = prompt.html; // sanitized server-side
      box.append(body);
    }
  }

  function label(index) {
    return cfg.mode === "pairwise" ? LETTERS[index] : String(index + 1);
  }

  function renderResponses() {
    const box = $("responses");
    box.replaceChildren();
    if (cfg.mode === "demonstrate") {
      const area = el("textarea", { id: "demonstration", rows: "14", dir: "auto", "aria-label": "Ideal response" });
      box.append(el("label", { class: "demo" }, "Write the ideal response (Ctrl+Enter submits)"), area);
      return;
    }
    state.payload.responses.forEach((r, i) => {
      const card = el("article", { class: "response card", id: "resp-" + r.id, "data-index": String(i), tabindex: "-1" });
      const head = el("header");
      head.append(el("span", { class: "badge" }, label(i)));
      if (cfg.likert) {
        const scale = el("div", { class: "likert", role: "radiogroup", "aria-label": "Rating of " + label(i) });
        for (let v = 1; v <= 7; v++) {
          const b = el("button", { type: "button", "data-value": String(v), "aria-pressed": "false" }, String(v));
          b.addEventListener("click", () => { state.cursor = i; rate(v); });
          scale.append(b);
        }
        head.append(scale);
      }
      card.append(head);
      const body = el("div", { class: "md body", dir: "auto" });
      body.innerHTML = r.html; // sanitized server-side
      card.append(body);
      if (cfg.flags.length) {
        const fs = el("details", { class: "flags" });
        fs.append(el("summary", {}, "Flags"));
        for (const [key, text] of cfg.flags) {
          const lab = el("label");
          const box2 = el("input", { type: "checkbox", "data-flag": key });
          box2.checked = (state.flags[r.id] || []).includes(key);
          box2.addEventListener("change", () => toggleFlag(r.id, key, box2.checked));
          lab.append(box2, " " + text);
          fs.append(lab);
        }
        card.append(fs);
      }
      card.addEventListener("click", () => { state.cursor = i; renderPhase(); });
      box.append(card);
    });
  }

  function renderRanking() {
    const panel = $("ranking-panel");
    panel.replaceChildren();
    if (cfg.mode === "demonstrate") { panel.hidden = true; return; }
    panel.hidden = false;
    const ids = state.payload.responses.map((r) => r.id);
    if (cfg.mode === "pairwise") {
      panel.append(el("h2", {}, "Which is better?"));
      const row = el("div", { class: "verdicts" });
      for (const [key, text] of [["A", "A is better"], ["B", "B is better"], ["=", "Tie"], ["X", "Both bad"]]) {
        const b = el("button", { type: "button", "data-verdict": key, "aria-pressed": String(state.verdict === key) }, key + " · " + text);
        b.addEventListener("click", () => setVerdict(key));
        row.append(b);
      }
      panel.append(row);
      return;
    }
    panel.append(el("h2", {}, "Ranking, best first"));
    if (state.phase === "rate") {
      panel.append(el("p", { class: "muted note", id: "ranking-note" }, cfg.likert
        ? "Ordered by your ratings so far (ties where they tie); step 2 shows it for you to check before saving."
        : "Step 2: check this order before saving."));
    }
    const list = el("ol", { class: "ranking", id: "ranking" });
    state.order.forEach((item, pos) => {
      const idx = ids.indexOf(item.id);
      const li = el("li", {
        draggable: "true", "data-id": String(item.id), class: (item.tied ? "tied " : "") + (state.picked === item.id ? "picked" : ""),
      });
      li.append(el("span", { class: "badge" }, label(idx)), el("span", { class: "tie-mark" }, item.tied ? "= tied with above" : ""));
      if (pos > 0) { // ties by mouse: the same toggle as T
        const tie = el("button", {
          type: "button", class: "tie", "aria-pressed": String(item.tied), title: "Tie with the one above (T)",
          "aria-label": "Tie " + label(idx) + " with the one above",
        }, "=");
        tie.addEventListener("click", (e) => { e.stopPropagation(); pick(item.id); toggleTie(); });
        li.append(tie);
      }
      li.addEventListener("click", () => pick(item.id));
      // Drag and drop: the dragged response takes the place of the one it is dropped on.
      li.addEventListener("dragstart", (e) => { e.dataTransfer.setData("text/plain", String(item.id)); li.classList.add("dragging"); });
      li.addEventListener("dragend", () => li.classList.remove("dragging"));
      li.addEventListener("dragover", (e) => { e.preventDefault(); li.classList.add("drop-target"); });
      li.addEventListener("dragleave", () => li.classList.remove("drop-target"));
      li.addEventListener("drop", (e) => {
        e.preventDefault();
        state.phase = "rank";
        moveTo(Number(e.dataTransfer.getData("text/plain")), pos);
        renderPhase();
      });
      list.append(li);
    });
    panel.append(list);
  }

  function renderPhase() {
    if (!state) return;
    const names = { rate: "Step 1: rate each response (1–7) and flag problems", rank: "Step 2: rank the responses", write: "Write the ideal response" };
    $("phase").textContent = state.revising ? "Revising your last judgment · Enter saves the revision · Esc cancels"
      : names[state.phase] + " · press ? for shortcuts";
    document.querySelectorAll(".response").forEach((card, i) => {
      card.classList.toggle("current", state.phase === "rate" && i === state.cursor);
      const r = state.payload.responses[i];
      card.querySelectorAll(".likert button").forEach((b) => b.setAttribute("aria-pressed", String(state.likert[r.id] === Number(b.dataset.value))));
    });
    const current = document.querySelector(".response.current");
    if (current) current.scrollIntoView({ block: "nearest" });
    // Keyboard focus on a response follows the highlight (screen readers announce the response).
    if (current && document.activeElement?.classList.contains("response")) current.focus({ preventScroll: true });
  }

  // --- actions ----------------------------------------------------------------------------------
  function pick(id) {
    if (state.phase === "rate") { toRanking(id); return; }
    state.picked = id;
    renderRanking();
    renderPhase();
  }

  // A rating never moves the focus (J/K, the arrows and the mouse do): a digit then J rates the
  // next response, and 7 J 6 J … rates each response exactly once.
  function rate(value) {
    const r = state.payload.responses[state.cursor];
    state.likert[r.id] = value;
    if (cfg.mode === "rank" && !state.arranged) { state.order = orderFromRatings(); renderRanking(); }
    renderPhase();
  }

  // Best first by rating, responses with equal ratings tied, in display order within a tie;
  // unrated ones last (submitting asks for their rating first).
  function orderFromRatings() {
    const score = (id) => state.likert[id] ?? 0;
    const ids = state.payload.responses.map((r) => r.id).sort((a, b) => score(b) - score(a));
    return ids.map((id, i) => ({ id, tied: i > 0 && score(id) > 0 && score(id) === score(ids[i - 1]) }));
  }

  // Step 2. Until the annotator arranges it, the ranking is the one their ratings give.
  function toRanking(picked) {
    state.phase = "rank";
    if (cfg.likert && !state.arranged) state.order = orderFromRatings();
    state.picked = picked ?? state.order[0].id;
    renderRanking();
    renderPhase();
  }

  // K-way with Likert on: every response needs its rating. Says which one is missing and focuses it.
  function requireRatings() {
    if (cfg.mode !== "rank" || !cfg.likert) return true;
    const i = state.payload.responses.findIndex((r) => state.likert[r.id] === undefined);
    if (i < 0) return true;
    state.cursor = i;
    renderPhase();
    document.querySelectorAll(".response")[i].focus();
    setStatus("Rate response " + label(i) + " first (1–7): every response needs a rating.", "error");
    return false;
  }

  // A response rated strictly higher may not be ranked below a lower-rated one (the server refuses it too).
  function contradiction() {
    if (cfg.mode !== "rank") return null;
    const ids = state.payload.responses.map((r) => r.id);
    const groups = ranking();
    for (let g = 0; g < groups.length; g++) {
      for (const above of groups[g]) {
        for (const below of groups.slice(g + 1).flat()) {
          const a = state.likert[above], b = state.likert[below];
          if (a !== undefined && b !== undefined && a < b) {
            return "Response " + label(ids.indexOf(above)) + " (rated " + a + ") is ranked above response "
              + label(ids.indexOf(below)) + " (rated " + b + "): change the ranking or the ratings.";
          }
        }
      }
    }
    return null;
  }

  function toggleFlag(id, key, on) {
    const set = new Set(state.flags[id] || []);
    if (on) set.add(key); else set.delete(key);
    state.flags[id] = Array.from(set);
  }

  function setVerdict(key) {
    state.verdict = key;
    state.phase = "rank";
    renderRanking();
    renderPhase();
  }

  function moveTo(id, pos) {
    const from = state.order.findIndex((x) => x.id === id);
    if (from < 0) return;
    state.arranged = true;
    const [item] = state.order.splice(from, 1);
    item.tied = false;
    state.order.splice(Math.max(0, Math.min(pos, state.order.length)), 0, item);
    if (state.order[0]) state.order[0].tied = false;
    state.picked = id;
    renderRanking();
  }

  function move(delta) {
    if (state.picked === null) return;
    const at = state.order.findIndex((x) => x.id === state.picked);
    moveTo(state.picked, at + delta);
  }

  function toggleTie() {
    const at = state.order.findIndex((x) => x.id === state.picked);
    if (at <= 0) return;
    state.arranged = true;
    state.order[at].tied = !state.order[at].tied;
    renderRanking();
  }

  function ranking() {
    const ids = state.payload.responses.map((r) => r.id);
    if (cfg.mode === "pairwise") {
      const [a, b] = ids;
      return { A: [[a], [b]], B: [[b], [a]], "=": [[a, b]], X: [[a, b]] }[state.verdict];
    }
    const groups = [];
    for (const item of state.order) {
      if (item.tied && groups.length) groups[groups.length - 1].push(item.id);
      else groups.push([item.id]);
    }
    return groups;
  }

  function submit() {
    if (!state || busy) return;
    const s = state;
    let body;
    if (cfg.mode === "demonstrate") {
      const text = $("demonstration").value;
      if (!text.trim()) { setStatus("Write the ideal response first.", "error"); return; }
      body = { text };
    } else {
      if (cfg.mode === "pairwise" && !s.verdict) { setStatus("Choose A, B, = (tie) or X (both bad) first.", "error"); return; }
      if (!requireRatings()) return;
      // K-way: never save a ranking nobody made. From step 1, show the ranking first; Submit again saves it.
      if (cfg.mode === "rank" && s.phase === "rate") {
        toRanking();
        setStatus(cfg.likert ? "Check the ranking from your ratings (ties where they tie), then Submit (Enter) to save it."
          : "Check the ranking, then Submit (Enter) to save it.", "info");
        return;
      }
      const problem = contradiction();
      if (problem) { setStatus(problem, "error"); return; }
      body = { ranking: ranking(), both_bad: s.verdict === "X", likert: s.likert, flags: s.flags, rationale: $("rationale").value };
    }
    body.idempotency_key = s.key;
    body.time_spent_ms = Math.round(performance.now() - s.started);
    busy = true;
    $("submit").disabled = true;
    if (s.revising) { correct(s, body); return; }
    postRetrying(assignmentUrl(cfg.urls.submit, s.payload.assignment), body).then(({ status, data }) => {
      busy = false;
      if (status === 201 && data.judgment) { remember(data.judgment, s.payload, body); suggest(data.judgment, s.payload, body); }
      if (status === 201) {
        done += 1;
        // With overlap 1 a submit completes its task; with more, others' work decides: the page-load count stays.
        if (cfg.overlap === 1) cfg.progress.tasks_complete += 1;
        setStatus("Saved.", "ok");
        advance();
      } else if (status === 409) {
        setStatus(data.detail || "This task is no longer yours.", "error");
        advance();
      } else {
        $("submit").disabled = false;
        setStatus(Object.entries(data).map(([k, v]) => k + ": " + [].concat(v).join(" ")).join(" · ") || "Could not save.", "error");
      }
      showProgress();
    }, () => { busy = false; $("submit").disabled = false; setStatus("Network error; press Enter to retry.", "error"); });
  }

  // --- the reward model's pick, asked for only once the judgment is stored --------------------------
  // The server answers 404 for a judgment that does not exist yet, so the pick can never be seen
  // before submitting; the panel shows it for the task just judged, beside the annotator's own choice.
  function suggest(judgment, payload, body) {
    const box = $("suggestion");
    if (!cfg.urls.suggestion || !box) return;
    const at = cfg.urls.suggestion.lastIndexOf("/0/");
    const url = cfg.urls.suggestion.slice(0, at) + "/" + judgment + "/" + cfg.urls.suggestion.slice(at + 3);
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then((res) => (res.status === 200 ? res.json() : null))
      .then((data) => {
        if (!data) { box.hidden = true; return; }
        const ids = payload.responses.map((r) => r.id);
        const name = (id) => (ids.indexOf(id) >= 0 ? label(ids.indexOf(id)) : "?");
        const top = (body.ranking || [])[0] || [];
        const yours = body.both_bad ? "both bad" : top.length === 1 ? name(top[0]) : "a tie";
        box.replaceChildren(
          el("strong", {}, "Reward model's pick for the task you just judged: "),
          el("span", { class: "suggestion-pick" }, name(data.pick)),
          el("span", {}, " with probability " + Math.round(100 * data.probability) + "% (you chose " + yours + "; model "
            + data.version_name + ")."));
        box.hidden = false;
      }, () => { box.hidden = true; });
  }

  function remember(judgment, payload, body) {
    last = { judgment, prompt: payload.prompt, responses: payload.responses, ranking: body.ranking,
             both_bad: body.both_bad, likert: body.likert, flags: body.flags, rationale: body.rationale };
  }

  // --- revising the last judgment ----------------------------------------------------------------
  function revise() {
    if (busy || paused || !last || cfg.mode === "demonstrate") return;
    if (state) state.rationale = $("rationale").value;
    paused = { state };
    state = newState(last, last);
    render();
    showRevise();
    setStatus("");
  }

  function resume(text, kind) {
    state = paused.state;
    paused = null;
    if (state) render(); else show(null);
    showRevise();
    setStatus(text, kind);
  }

  function correct(s, body) {
    postRetrying(assignmentUrl(cfg.urls.correct, s.revising), body).then(({ status, data }) => {
      busy = false;
      if (status === 201) { remember(data.judgment, s.payload, body); resume("Revised.", "ok"); }
      else if (status === 409 || status === 404) resume(data.detail || "This judgment can no longer be revised.", "error");
      else {
        $("submit").disabled = false;
        setStatus(Object.entries(data).map(([k, v]) => k + ": " + [].concat(v).join(" ")).join(" · ") || "Could not save.", "error");
      }
    }, () => { busy = false; $("submit").disabled = false; setStatus("Network error; press Enter to retry.", "error"); });
  }

  function skip() {
    if (!state || busy || state.revising) return;
    busy = true;
    post(assignmentUrl(cfg.urls.skip, state.payload.assignment)).then(({ status, data }) => {
      busy = false;
      setStatus(status === 200 ? "Skipped." : (data.detail || "Could not skip."), status === 200 ? "ok" : "error");
      advance();
    }, () => { busy = false; setStatus("Network error.", "error"); });
  }

  // A task that arrives while the last judgment is being revised waits until the revision is done.
  function present(payload) {
    if (paused) paused.state = payload ? newState(payload, null) : null;
    else show(payload);
  }

  // The prefetched task is shown at once; the refill of the next one runs in the background.
  function advance() {
    const upcoming = prefetched;
    prefetched = null;
    if (upcoming) show(upcoming);
    else { $("task").hidden = true; setStatus("Loading…"); }
    postRetrying(cfg.urls.next).then(({ status, data }) => {
      if (status !== 200) { setStatus(data.detail || "Could not load the next task.", "error"); return; }
      if (!upcoming || !data.current || data.current.assignment !== upcoming.assignment) present(data.current);
      prefetched = data.next;
      if (!upcoming && data.current) setStatus("");
    }, () => setStatus("Could not load the next task; check the connection and reload.", "error"));
  }

  // --- keyboard ---------------------------------------------------------------------------------
  function onKey(e) {
    if ($("help").open) return;
    const typing = e.target instanceof HTMLTextAreaElement || (e.target instanceof HTMLInputElement && e.target.type !== "checkbox");
    if (typing) {
      if (e.key === "Escape") e.target.blur();
      else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) { e.preventDefault(); submit(); }
      return;
    }
    const plain = !(e.ctrlKey || e.metaKey || e.altKey);
    if (plain && (e.key === "e" || e.key === "E")) { e.preventDefault(); revise(); return; }
    if (plain && e.key === "Escape" && paused && !busy && !(e.target instanceof HTMLInputElement)) {
      e.preventDefault(); resume("Revision cancelled."); return;
    }
    if (e.ctrlKey || e.metaKey || e.altKey || !state) {
      if (e.key === "?") $("help").showModal();
      return;
    }
    if (e.target instanceof HTMLInputElement && e.key === "Escape") { e.target.blur(); return; }
    const key = e.key;
    let handled = true;
    if (key === "?") $("help").showModal();
    else if (key === "Enter") {
      if (state.phase === "rate" && cfg.mode !== "pairwise") { if (requireRatings()) { setStatus(""); toRanking(); } }
      else submit();
    } else if (key === "s" || key === "S") skip();
    else if (key === "r" || key === "R") $("rationale").focus();
    else if (cfg.mode === "demonstrate") handled = false;
    else if (cfg.mode === "pairwise" && ["a", "b", "A", "B", "=", "x", "X"].includes(key)) setVerdict(key.toUpperCase());
    else if (state.phase === "rate") handled = rateKey(key);
    else handled = rankKey(key);
    if (handled) e.preventDefault();
  }

  function rateKey(key) {
    const n = state.payload.responses.length;
    if (key === "ArrowDown" || key === "j" || key === "J" || key === "ArrowRight") state.cursor = Math.min(n - 1, state.cursor + 1);
    else if (key === "ArrowUp" || key === "k" || key === "K" || key === "ArrowLeft") state.cursor = Math.max(0, state.cursor - 1);
    else if (/^[1-7]$/.test(key) && cfg.likert) { rate(Number(key)); return true; }
    else if (key === "f" || key === "F") {
      const first = document.querySelectorAll(".response")[state.cursor].querySelector(".flags");
      if (first) { first.open = true; first.querySelector("input").focus(); }
    } else return false;
    renderPhase();
    return true;
  }

  function rankKey(key) {
    const ids = state.payload.responses.map((r) => r.id);
    if (/^[1-9]$/.test(key) && Number(key) <= ids.length) { state.picked = ids[Number(key) - 1]; renderRanking(); }
    else if (key === "ArrowUp") move(-1);
    else if (key === "ArrowDown") move(1);
    else if (key === "t" || key === "T") toggleTie();
    else return false;
    return true;
  }

  document.addEventListener("keydown", onKey);
  $("submit").addEventListener("click", submit);
  $("skip").addEventListener("click", skip);
  $("help-button").addEventListener("click", () => $("help").showModal());
  $("revise").addEventListener("click", revise);
  showProgress();
  show(cfg.current);
  if (!cfg.current) setStatus("");
  document.body.dataset.ready = String(Math.round(performance.now()));
})();
