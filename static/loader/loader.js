/* MACtuner loader page: renders full snapshots from the websocket (and from API replies).
   Every message is a whole state, so a late or reconnecting tab is right after one message. */
(function () {
  "use strict";
  // The page allows no inline script (Content-Security-Policy): its language comes from <html lang>,
  // and the language menu submits from here, not from an onchange attribute.
  window.MACTUNER_LANG = document.documentElement.lang;
  const langSelect = document.querySelector(".lang-switch select");
  if (langSelect) langSelect.addEventListener("change", () => langSelect.form.submit());
  const T = JSON.parse(document.getElementById("i18n").textContent);
  const $ = (id) => document.getElementById(id);
  const els = {
    model: $("model-select"), device: $("device-select"), dtype: $("dtype-select"),
    load: $("load-btn"), cancel: $("cancel-btn"), unload: $("unload-btn"), notice: $("notice"),
    box: $("progress-box"), icon: $("progress-icon"), title: $("progress-title"), message: $("progress-message"),
    fill: $("progress-fill"), percent: $("progress-percent"), detail: $("progress-detail"), stall: $("progress-stall"),
    card: $("metadata-card"), metaName: $("meta-name"), metaList: $("meta-list"), metaNotes: $("meta-notes"), conn: $("connection"),
    chart: $("stage-chart"), historyBody: $("history-body"), historyEmpty: $("history-empty"),
    mergeRow: $("merge-row"), merge: $("merge-check"), search: $("model-search"), historyMore: $("history-more"),
  };
  const adapters = new Set();  // names of PEFT adapter entries: only they can be merged
  const HISTORY_ROWS = 10;
  const BEFORE_BYTES = ["preparing", "tokenizer", "config"];
  let state = JSON.parse(document.getElementById("initial-state").textContent) || { job: null, loaded: null };
  let shown = { id: null, percent: 0 };
  let modelsLoaded = false;
  let history = [];  // job snapshots, newest first
  let historyRows = HISTORY_ROWS;  // grows with each "more": older rows fetched stay on the page
  let historyMore = false;  // the server has rows older than the last one shown
  let modelOptions = [];  // every picker option; the search box shows those whose name matches
  let syncedJob = null;  // the running job whose options the selectors show
  // The model folders' version (catalog/changes.py): a new one (a training run wrote a checkpoint)
  // re-reads the list; names that were not in it before are announced and marked.
  let catalogVersion = (state.catalog && state.catalog.version) || "";
  let knownModels = null;

  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }
  function fmtBytes(n) {
    if (!n) return "0 B";
    const u = ["B", "KB", "MB", "GB", "TB"]; let i = 0;
    while (n >= 1000 && i < u.length - 1) { n /= 1000; i++; }
    return n.toFixed(i ? 1 : 0) + " " + u[i];
  }
  function fmtSecs(s) {
    if (s === null || s === undefined) return "";
    s = Math.max(0, s);
    if (s < 10) return s.toFixed(s < 1 ? 2 : 1) + "s"; // sub-second loads are common: do not print "0s"
    s = Math.round(s);
    return s >= 60 ? Math.floor(s / 60) + "m " + (s % 60) + "s" : s + "s";
  }
  // A label and its value stay on one line ("남은 시간 8.5s"): the line breaks at the " · " between them.
  function together(text) { return text.replace(/ /g, "\u00a0"); }
  function shardCount(n) {
    return (n === 1 ? T.shardsOne : T.shardsOther).replace("{n}", String(n));
  }
  // Messages are said in this page's language, whoever started the load and in whichever language.
  function errorText(job) {
    const e = job.error;
    if (!e) return "";
    return (e.text && e.text[window.MACTUNER_LANG]) || e.message;
  }
  function stageMessage(job) {
    // The job's own message names the step (e.g. which library is importing), said in our language.
    const said = job.message_text && job.message_text[window.MACTUNER_LANG];
    if (said && job.stage !== "done") return said;
    if (job.message && job.lang === window.MACTUNER_LANG && job.stage !== "done") return job.message;
    if (T.stages[job.stage]) return T.stages[job.stage];
    return job.message || T.stages[job.stage] || "";
  }
  function notice(text) { els.notice.textContent = text || ""; els.notice.hidden = !text; }
  // A folder's name as the server spells it for people (loader/pipeline/names.py): invisible and
  // direction characters and look-alike letters as ⟨U+XXXX⟩. The plain name stays what loads.
  const pickerNames = new Map();  // name -> {display, warning} from /api/models, for the click's pending job
  function jobName(job) { return job.model_display || job.model; }
  function nameWarning(code) { return code ? T.nameWarnings[code] || code : ""; }

  function render(next) {
    if (next) state = next;
    const job = state.job, active = !!(job && job.active);
    const picked = els.model.selectedOptions[0];
    els.model.title = picked ? picked.title || picked.textContent : "";
    els.load.disabled = active || !els.model.value;
    els.model.disabled = active;
    els.mergeRow.hidden = !adapters.has(els.model.value); els.merge.disabled = active; els.device.disabled = active; els.dtype.disabled = active;
    if (els.search) els.search.disabled = active;
    els.cancel.disabled = !active || job.cancel_requested;
    els.unload.disabled = active || !state.loaded;
    if (active) syncSelectors(job);
    if (job) upsertHistory(job);
    renderBox(job);
    renderCard(state.loaded);
    renderLost(state.loaded ? null : state.lost);
  }

  // The model a host dropped without an unload (it died, or a cancel had to kill it), and why.
  function renderLost(lost) {
    const el = document.getElementById("lost-note");
    if (!el) return;
    el.hidden = !lost;
    el.textContent = lost ? ((lost.text && lost.text[window.MACTUNER_LANG]) || lost.name) : "";
  }

  function renderBox(job) {
    if (!job) { els.box.hidden = true; return; }
    els.box.hidden = false;
    let pct = job.percent || 0;
    if (shown.id === job.id && job.active) pct = Math.max(pct, shown.percent); // never backwards
    shown = { id: job.id, percent: pct };
    els.box.classList.toggle("error", job.state === "failed" || job.state === "interrupted");
    els.box.classList.toggle("success", job.state === "succeeded");
    els.box.classList.toggle("cancelled", job.state === "cancelled");  // grey: stopped for good, not paused
    els.fill.style.width = pct.toFixed(1) + "%";
    els.percent.textContent = Math.floor(pct) + "%";
    els.box.querySelector(".bar").setAttribute("aria-valuenow", String(Math.floor(pct)));
    const d = job.detail || {};
    let detail = "";
    if (job.active && d.shards && (job.stage === "weights" || job.stage === "device")) {
      detail = together(T.shard + " " + d.shard + "/" + d.shards) + " · " + fmtBytes(d.bytes_done) + " / " + fmtBytes(d.bytes_total);
      if (d.bytes_per_s) detail += " · " + together((d.bytes_per_s / 1e6).toFixed(0) + " MB/s");
      if (d.eta_s !== null && d.eta_s !== undefined && job.stage === "weights") detail += " · " + together(T.eta + " " + fmtSecs(d.eta_s));
    } else if (job.active && BEFORE_BYTES.includes(job.stage) && job.expected_total_s) {
      // Before any byte is read the measured rate says nothing: earlier loads of this model do.
      const began = Date.parse(job.started_at || job.created_at || "") || Date.now();
      detail = T.etaHistory + " ~" + fmtSecs(job.expected_total_s - (Date.now() - began) / 1000);
    } else if (job.state === "succeeded" && totalSeconds(job) !== null) {
      detail = fmtSecs(totalSeconds(job)) + " · " + jobName(job);
    }
    renderChart(els.chart, job.state === "succeeded" ? job.timings : null);
    els.detail.textContent = detail;
    els.stall.hidden = !(job.active && job.stalled);
    if (job.active) {
      els.icon.textContent = "📥"; els.title.textContent = T.loading;
      els.message.textContent = job.cancel_requested ? T.cancelling : stageMessage(job);
    } else if (job.state === "succeeded") {
      els.icon.textContent = ""; els.title.textContent = T.done; els.message.textContent = jobName(job);
    } else if (job.state === "cancelled") {
      els.icon.textContent = ""; els.title.textContent = T.cancelled;
      els.message.textContent = job.error ? jobName(job) + " — " + errorText(job) : jobName(job);  // e.g. abandoned
    } else {
      els.icon.textContent = "";
      els.title.textContent = T.error + " " + (job.error ? errorText(job) : T.interrupted);
      els.message.textContent = jobName(job);
    }
  }

  // A tab that opens mid-load shows what is loading, not its own defaults.
  function syncSelectors(job) {
    if (job.id === "pending" || syncedJob === job.id) return;
    const has = (sel, v) => Array.from(sel.options).some((o) => o.value === v);
    if (has(els.device, job.device_requested)) els.device.value = job.device_requested;
    if (has(els.dtype, job.dtype_requested)) els.dtype.value = job.dtype_requested;
    if (!modelsLoaded) return;  // loadModels() calls render() again once the options exist
    if (has(els.model, job.model)) els.model.value = job.model;
    syncedJob = job.id;
  }

  function renderChart(el, timings) {
    const stages = Object.keys(T.stageNames).filter((s) => typeof (timings || {})[s] === "number");
    const whole = stages.reduce((sum, s) => sum + timings[s], 0);
    el.hidden = !(whole > 0);
    if (el.hidden) { el.replaceChildren(); return; }
    const bar = document.createElement("div"); bar.className = "stage-bar";
    const legend = document.createElement("ul"); legend.className = "stage-legend";
    for (const s of stages) {
      const label = T.stageNames[s] + " " + fmtSecs(timings[s]);
      const seg = document.createElement("div");
      seg.className = "seg seg-" + s; seg.style.width = (100 * timings[s] / whole).toFixed(2) + "%"; seg.title = label;
      bar.append(seg);
      const li = document.createElement("li"); li.dataset.stage = s;
      const sw = document.createElement("span"); sw.className = "swatch seg-" + s;
      li.append(sw, document.createTextNode(label));
      legend.append(li);
    }
    el.replaceChildren(bar, legend);
  }

  // What the user waited: the click to the end (the server's wall_s), preparing and queueing
  // included; the chart beside it keeps the per-stage split.
  function totalSeconds(job) {
    if (typeof job.wall_s === "number") return job.wall_s;
    const began = Date.parse(job.created_at || ""), ended = Date.parse(job.finished_at || "");
    return began && ended ? (ended - began) / 1000 : null;
  }

  function upsertHistory(job) {
    if (typeof job.id !== "number") return;
    history = [job, ...history.filter((j) => j.id !== job.id)].sort((a, b) => b.id - a.id);
    if (history.length > historyRows) { history = history.slice(0, historyRows); historyMore = true; }
    renderHistory();
  }

  // When a load started, in this computer's time zone and the page's language.
  const timeFormat = new Intl.DateTimeFormat(window.MACTUNER_LANG || undefined,
    { month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit" });
  function fmtTime(iso) {
    const t = Date.parse(iso || "");
    return Number.isNaN(t) ? "—" : timeFormat.format(new Date(t));
  }

  const historyHeads = [...document.querySelectorAll("#history thead th")].map((th) => th.textContent);
  function renderHistory() {
    els.historyEmpty.hidden = history.length > 0;
    els.historyBody.replaceChildren(...history.map((job) => {
      const d = job.detail || {}, t = job.timings || {};
      const cells = [
        (job.model_warning ? "⚠ " : "") + jobName(job),
        T.sources[job.source] || job.source,
        T.states[job.state] || job.state,
        job.active ? "—" : fmtSecs(totalSeconds(job)) || "—",
        d.bytes_per_s ? (d.bytes_per_s / 1e6).toFixed(0) + " MB/s" : "—",
        T.cache[d.cache] || "—",
        fmtTime(job.created_at),
      ];
      const tr = document.createElement("tr");
      tr.dataset.jobId = String(job.id); tr.className = "state-" + job.state;
      cells.forEach((text, i) => {
        const td = document.createElement("td"); td.textContent = text;
        td.dataset.label = historyHeads[i] || "";  // a phone shows each value under its column's name
        tr.append(td);
      });
      tr.firstChild.className = "name";  // cut with "…" in the cell: whole on hover
      tr.firstChild.title = jobName(job) + (job.model_warning ? "\n⚠ " + nameWarning(job.model_warning) : "");
      tr.lastChild.className = "time";
      if (job.created_at) tr.lastChild.title = new Date(job.created_at).toLocaleString(window.MACTUNER_LANG || undefined);
      return tr;
    }));
    els.historyMore.hidden = !historyMore;
  }

  // ``older``: the page of jobs before the last row shown (the "more" button); else the newest page.
  async function loadHistory(older) {
    let url = "/api/jobs?limit=" + HISTORY_ROWS;
    if (older && history.length) url += "&before=" + history[history.length - 1].id;
    els.historyMore.disabled = true;
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      const data = await res.json();
      if (!res.ok) { notice(data.error || res.status + " " + res.statusText); return; }
      // Live snapshots may already be newer than this list: keep those.
      const known = new Set(history.map((j) => j.id));
      for (const job of data.jobs || []) if (!known.has(job.id)) history.push(job);
      history.sort((a, b) => b.id - a.id);
      if (older) historyRows = Math.max(historyRows, history.length);
      historyMore = !!data.more || history.length > historyRows;
      history = history.slice(0, historyRows);
      renderHistory();
    } catch (e) { /* the panel stays as the snapshots fill it */ }
    finally { els.historyMore.disabled = false; }
  }
  els.historyMore.addEventListener("click", () => loadHistory(true));

  // "LORA r4 α8 → tiny": what an adapter is and what it sits on, in the picker and on the card.
  function adapterText(a) {
    let text = String(a.type || "PEFT");
    if (a.rank !== null && a.rank !== undefined) text += " r" + a.rank;
    if (a.alpha !== null && a.alpha !== undefined) text += " α" + a.alpha;
    if (a.base) text += " → " + a.base;
    if (a.merged !== undefined) text += " (" + (a.merged ? T.merged : T.separate) + ")";
    return text;
  }

  function renderCard(loaded) {
    if (!loaded) { els.card.hidden = true; return; }
    els.card.hidden = false;
    els.metaName.textContent = els.metaName.title = loaded.display_name || loaded.name;
    const md = loaded.metadata || {};
    const rows = [];
    for (const key of Object.keys(T.meta)) {
      const job = state.job;  // the load that brought this model in: its click-to-ready time
      const wall = job && job.state === "succeeded" && job.model === loaded.name ? totalSeconds(job) : null;
      let v = key === "total" ? (wall !== null ? fmtSecs(wall) : md.timings ? fmtSecs(md.timings.total) : null) : md[key];
      if (v === null || v === undefined) continue;
      if (key === "memory_bytes") v = fmtBytes(v);
      if (key === "parameters") v = Number(v).toLocaleString();
      if (typeof v === "boolean") v = v ? "✓" : "—";
      if (key === "adapter" && typeof v === "object") v = adapterText(v);
      // The class that was loaded; a config that claimed another name is shown beside it, not instead.
      const claim = key === "architecture" && md.claimed_architecture ? "config.json: " + md.claimed_architecture : "";
      rows.push([T.meta[key], String(v), claim]);
    }
    els.metaList.replaceChildren(...rows.flatMap(([k, v, claim]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = v; dd.dataset.key = k;
      if (claim) {
        const note = document.createElement("span"); note.className = "muted small claimed"; note.textContent = claim;
        dd.append(" ", note);
      }
      return [dt, dd];
    }));
    // What the load changed from what was asked or left out (tensors the model had no place for).
    els.metaNotes.replaceChildren(...(loaded.notes || []).map((n) => {
      const li = document.createElement("li"); li.textContent = "ℹ " + (n[window.MACTUNER_LANG] || n.ko || ""); return li;
    }));
  }

  async function api(path, body) {
    const res = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() },
      body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await res.json(); } catch (e) { /* non-JSON error page */ }
    if (!res.ok) notice(data.error || res.status + " " + res.statusText); else notice("");
    // A reply can be older than a snapshot the socket already gave (a cancel that finished at once).
    if (data.job && !isStale(data.job)) render({ job: data.job, loaded: state.loaded, lost: state.lost });
    return { res, data };
  }

  async function loadModels() {
    try {
      const res = await fetch("/api/models", { credentials: "same-origin" });
      const data = await res.json();
      const current = state.job && state.job.model;
      const names = new Set(data.models.map((m) => m.name));
      const arrived = knownModels ? data.models.filter((m) => !knownModels.has(m.name)) : [];
      knownModels = names;
      const arrivedNames = new Set(arrived.map((m) => m.name));
      modelOptions = data.models.map((m) => {
        const o = document.createElement("option");
        o.value = m.name;
        if (m.kind === "adapter") adapters.add(m.name);
        const shown = m.display_name || m.name, warning = nameWarning(m.name_warning);
        pickerNames.set(m.name, { display: shown, warning: m.name_warning || null });
        o.textContent = shown + " (" + fmtBytes(m.size_bytes) + ", " + shardCount(m.shards) + ")";
        if (m.kind === "adapter" && m.adapter) o.textContent += " · " + adapterText(m.adapter);  // a LoRA says so, and its base
        if (m.newest) { o.textContent += " · " + T.newest; o.classList.add("is-newest"); }  // its run's highest step
        if (arrivedNames.has(m.name)) o.classList.add("is-new");
        o.title = shown;  // a long name is cut at the select's width: the whole of it on hover
        if (warning) {  // a name that passes for another one says so where it is picked
          o.textContent += " ⚠ " + warning;
          o.title += "\n⚠ " + warning;
          o.classList.add("has-name-warning");
        }
        if (m.problem) {  // offered with its reason: loading it says the same, in full
          o.textContent += " ⚠ " + m.problem;
          o.title += "\n⚠ " + m.problem;
          o.classList.add("has-problem");
        }
        o.dataset.search = (m.name + "\n" + shown).toLowerCase();
        return o;
      });
      if (!data.models.length) els.model.replaceChildren(new Option(T.noModels, ""));
      else filterModels();
      // The first list shows the running job's model; a refreshed one keeps what the user picked.
      if (!modelsLoaded && current && names.has(current)) els.model.value = current;
      if (arrived.length) notice(T.newModels + " " + arrived.map((m) => m.display_name || m.name).join(", "));
      syncedJob = null;  // the options exist now: show the running job's model
      modelsLoaded = true;
      document.dispatchEvent(new CustomEvent("mactuner:models", { detail: { options: modelOptions } }));  // fit.js
    } catch (e) { notice(String(e)); }
    render();
  }

  els.load.addEventListener("click", () => {
    if (!els.model.value) return;
    // Immediate feedback: the box appears on the click itself, the server's snapshot follows.
    shown = { id: "pending", percent: 0 };
    render({ job: { id: "pending", state: "queued", active: true, stage: "preparing", percent: 0,
      message: T.stages.preparing, model: els.model.value, detail: {},
      model_display: (pickerNames.get(els.model.value) || {}).display,
      model_warning: (pickerNames.get(els.model.value) || {}).warning }, loaded: state.loaded, lost: state.lost });
    const body = { model: els.model.value, device: els.device.value, dtype: els.dtype.value };
    if (adapters.has(els.model.value)) body.merge = els.merge.checked;
    api("/api/load", body).then(({ res, data }) => {
      if (!res.ok && !data.job) render({ job: null, loaded: state.loaded, lost: state.lost });
      socket && socket.readyState === 1 && socket.send(JSON.stringify({ type: "refresh" }));
    });
  });
  els.cancel.addEventListener("click", () => api("/api/cancel").then(() => {
    socket && socket.readyState === 1 && socket.send(JSON.stringify({ type: "refresh" }));
  }));
  els.unload.addEventListener("click", () => api("/api/unload").then(({ res }) => {
    if (res.ok) { state.loaded = null; render(); notice(""); }
  }));
  els.model.addEventListener("change", () => render());

  // The search box narrows the picker to the names that contain its text (any case); the picked
  // model stays picked while it matches, else the first match is.
  function filterModels() {
    if (!modelOptions.length) return;
    const query = els.search ? els.search.value.trim().toLowerCase() : "";
    const picked = els.model.value;
    const matches = query ? modelOptions.filter((o) => o.dataset.search.includes(query)) : modelOptions;
    els.model.replaceChildren(...(matches.length ? matches : [new Option(T.noMatch, "")]));
    if (matches.some((o) => o.value === picked)) els.model.value = picked;
  }
  if (els.search) els.search.addEventListener("input", () => { filterModels(); render(); });

  // Snapshots of one job can arrive from two publishers (the loading process and a server's
  // database watcher); never let an older one overwrite a newer one.
  function isStale(job) {
    const cur = state.job;
    if (!job || !cur || cur.id !== job.id || !cur.updated_at || !job.updated_at) return false;
    return Date.parse(job.updated_at) < Date.parse(cur.updated_at);
  }

  let socket = null, backoff = 500;
  function connect() {
    const proto = location.protocol === "https:" ? "wss://" : "ws://";
    socket = new WebSocket(proto + location.host + "/ws/loader/");
    socket.onopen = () => { backoff = 500; els.conn.textContent = T.connected; };
    socket.onmessage = (ev) => {
      const msg = JSON.parse(ev.data);
      document.dispatchEvent(new CustomEvent("mactuner:message", { detail: msg }));  // generate.js listens
      if (msg.catalog && msg.catalog.version && msg.catalog.version !== catalogVersion) {
        const first = !catalogVersion;
        catalogVersion = msg.catalog.version;
        if (!first && modelsLoaded) loadModels();  // the folders changed since the list was read
      }
      if (msg.type === "snapshot") {
        if (state.job && state.job.id === "pending" && !(msg.job && msg.job.active)) return; // our POST is still in flight
        if (isStale(msg.job)) return;
        render({ job: msg.job, loaded: msg.loaded, lost: msg.lost });
      }
    };
    socket.onclose = () => {
      els.conn.textContent = T.reconnecting;
      setTimeout(connect, backoff);
      backoff = Math.min(backoff * 2, 8000);
    };
  }
  render();
  loadModels();
  loadHistory();
  connect();
  // The history-based ETA counts down between snapshots (a stage may send none for seconds).
  setInterval(() => { if (state.job && state.job.active && BEFORE_BYTES.includes(state.job.stage)) renderBox(state.job); }, 1000);
  window.MACtuner = {
    get state() { return state; }, get modelsLoaded() { return modelsLoaded; }, get history() { return history; },
    fmtBytes,
  };
})();
