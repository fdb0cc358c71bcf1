// Fit hints in the picker: each model says whether it fits the chosen device before the click
// (GET /api/fit: the load's own estimate against free memory), and the picked one says its need
// and the room under the selectors. loader.js builds the options and announces them
// ("mactuner:models"); this script only adds its verdict to each (the option's text keeps
// loader.js's words first, data-fit holds the verdict). It asks again when the device or dtype
// changes, while the server is still estimating (pending), and when a load, unload or
// generation ends (every websocket message arrives as "mactuner:message").
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const T = JSON.parse($("fit-i18n").textContent);
  const picker = $("model-select"), device = $("device-select"), dtype = $("dtype-select"), note = $("fit-note");
  const search = $("model-search");
  const PENDING_MS = 1500, RETRY_MS = 5000;
  let options = [];  // every option loadModels built, shown or filtered out
  let answer = null, hints = new Map();
  let asked = 0, timer = null;
  let seen = null;  // what the last websocket message said is running and loaded

  const bytes = (n) => (window.MACtuner && window.MACtuner.fmtBytes ? window.MACtuner.fmtBytes(n) : n + " B");
  function fill(template, values) {
    return Object.keys(values).reduce((text, key) => text.replace("{" + key + "}", values[key]), template);
  }
  function label(hint) {
    if (hint.fit !== "unknown") return T.verdicts[hint.fit] || hint.fit;
    return answer && answer.pending ? T.checking : T.unknown;
  }

  function decorate() {
    for (const o of options) {
      if (o.dataset.fitBase === undefined) { o.dataset.fitBase = o.textContent; o.dataset.fitTitle = o.title; }
      const hint = hints.get(o.value);
      if (!hint) { delete o.dataset.fit; o.textContent = o.dataset.fitBase; o.title = o.dataset.fitTitle; continue; }
      o.dataset.fit = hint.fit;
      if (o.classList.contains("has-problem")) continue;  // it already says why it cannot load
      o.textContent = o.dataset.fitBase + " · " + label(hint);
      o.title = o.dataset.fitTitle + "\n" + label(hint) + (hint.why ? ": " + hint.why : "");
    }
    showNote();
  }

  // The picked model: its need against the room, or why that is not known.
  function showNote() {
    const hint = hints.get(picker.value);
    note.hidden = !hint;
    if (!hint) return;
    note.className = "fit-note small fit-" + hint.fit;
    let text = label(hint);
    if (hint.need_bytes !== null && hint.available_bytes !== null) {
      text += " — " + fill(T.needFree, { need: bytes(hint.need_bytes), free: bytes(hint.available_bytes), device: answer.target });
      if (answer.freed_bytes) text += " " + fill(T.freed, { freed: bytes(answer.freed_bytes) });
    } else if (hint.why) {
      text += " — " + hint.why;
    }
    note.textContent = text;
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++asked;
    const url = "/api/fit?device=" + encodeURIComponent(device.value) + "&dtype=" + encodeURIComponent(dtype.value);
    try {
      const res = await fetch(url, { credentials: "same-origin" });
      const data = await res.json();
      if (mine !== asked) return;  // the device or dtype changed meanwhile: a newer answer is coming
      if (!res.ok) {
        answer = null; hints = new Map(); decorate();
        note.hidden = false; note.className = "fit-note small fit-unknown"; note.textContent = data.error || String(res.status);
        return;
      }
      answer = data;
      hints = new Map(data.models.map((m) => [m.name, m]));
      decorate();
      if (data.pending) timer = setTimeout(refresh, PENDING_MS);
    } catch (e) {
      if (mine === asked) timer = setTimeout(refresh, RETRY_MS);  // the server restarts: ask again later
    }
  }

  // A load, unload or generation that ended changes the room (and a busy host estimated nothing).
  function follow(msg) {
    if (!msg || (msg.type !== "snapshot" && msg.type !== "generation")) return;
    const running = !!(msg.job && msg.job.active) || !!(msg.generation && msg.generation.state === "running");
    const now = { running, loaded: msg.loaded ? msg.loaded.name + "@" + msg.loaded.device : "" };
    const changed = seen && ((seen.running && !running) || seen.loaded !== now.loaded);
    seen = now;
    if (changed && !running && options.length) refresh();
  }

  document.addEventListener("mactuner:models", (ev) => { options = ev.detail.options || []; decorate(); refresh(); });
  document.addEventListener("mactuner:message", (ev) => follow(ev.detail));
  device.addEventListener("change", refresh);
  dtype.addEventListener("change", refresh);
  picker.addEventListener("change", showNote);
  if (search) search.addEventListener("input", showNote);
})();
