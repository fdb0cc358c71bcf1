// The "try the model" panel under the loaded-model card: prompt, Generate/Stop, the streamed
// answer, tokens/s and the time from the load's click to the first token. It follows the same
// websocket as the page (loader.js re-dispatches every message as "mactuner:message"): every
// message is a full snapshot with the current generation in it, so a late joiner sees it too.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const T = JSON.parse($("try-i18n").textContent);
  const els = {
    form: $("try-form"), prompt: $("try-prompt"), chat: $("try-chat"), tokens: $("try-tokens"),
    go: $("try-go"), stop: $("try-stop"), out: $("try-output"), stats: $("try-stats"), error: $("try-error"),
  };
  const lang = () => window.MACTUNER_LANG || document.documentElement.lang || "ko";
  let loaded = null;
  let generation = null;

  function csrf() {
    const m = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
    return m ? decodeURIComponent(m[1]) : "";
  }

  function secs(v) { return v === null || v === undefined ? "—" : Number(v).toFixed(2) + T.seconds; }

  function render() {
    els.form.hidden = !loaded;
    const g = generation && loaded && (generation.state === "running" || generation.model === loaded.name) ? generation : null;
    const running = !!g && g.state === "running";
    els.go.disabled = running || !loaded;
    els.stop.disabled = !running;
    els.out.textContent = g ? g.text : "";
    if (!g) { els.stats.textContent = ""; els.error.hidden = true; return; }
    const parts = [T[g.state] || g.state, g.tokens + " " + T.tokens];
    if (g.tokens_per_s !== null && g.tokens_per_s !== undefined) parts.push(g.tokens_per_s.toFixed(1) + " " + T.rate);
    parts.push(T.first + " " + secs(g.first_token_s));
    if (g.after_load_s !== null && g.after_load_s !== undefined) parts.push(T.afterLoad + " " + secs(g.after_load_s));
    els.stats.textContent = parts.join(" · ");
    const err = g.error && g.error.text ? (g.error.text[lang()] || g.error.text.ko) : "";
    els.error.textContent = err ? "❌ " + err : "";
    els.error.hidden = !err;
  }

  function take(msg) {
    if (!msg) return;
    if ("loaded" in msg) loaded = msg.loaded;
    if ("generation" in msg) generation = msg.generation;
    render();
  }

  async function post(path, body) {
    const res = await fetch(path, {
      method: "POST", credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRFToken": csrf() }, body: JSON.stringify(body || {}),
    });
    let data = {};
    try { data = await res.json(); } catch (e) { /* not JSON */ }
    if (!res.ok) {
      els.error.textContent = "❌ " + (data.error || res.status);
      els.error.hidden = false;
    } else if (data.generation) {
      generation = data.generation;
      render();
    }
  }

  els.form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const tokens = Math.max(1, Math.min(256, parseInt(els.tokens.value, 10) || 32));
    post("/api/generate", { prompt: els.prompt.value, max_new_tokens: tokens, chat: els.chat.checked });
  });
  els.stop.addEventListener("click", () => post("/api/generate/cancel"));
  document.addEventListener("mactuner:message", (ev) => take(ev.detail));
  try { take(JSON.parse($("initial-state").textContent)); } catch (e) { /* the socket fills it */ }
})();
