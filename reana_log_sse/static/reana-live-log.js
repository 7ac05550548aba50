// <reana-live-log>: live job logs from reana-log-sse, as a dependency-free custom element.
//
//   <script type="module" src="/static/reana-live-log.js"></script>
//   <reana-live-log src="/api/workflows/<id>/logs/stream" token="..." tail="5000"
//                   job="fitdata" timestamps></reana-live-log>
//
// `stream-only`: use no path but `src` itself (no JSON backfill from .../logs, no download
// link), for a page where only the stream path reaches the service, as on REANA's own host
// behind the stream-only Ingress (manifests/overlays/example/ingress-reana-log-sse.yaml).
// The stream's own `tail=` is then the backfill.
//
// One EventSource per workflow; jobs are filtered client-side. Log text only ever reaches the
// DOM through textContent / text nodes: it is never parsed as HTML. See web_widget/README.md.
//
// reana-ui bundles a verbatim copy (src/vendor/reana-live-log.js): to update it, copy this
// file of reana-log-sse again (integrations/reana-ui/ in reana-log-sse checks they match).

const ANSI_NAMES = ["black", "red", "green", "yellow", "blue", "magenta", "cyan", "white"];
const ANSI_DEFAULTS = [
  "#000000", "#cd3131", "#0dbc79", "#e5e510", "#2472c8", "#bc3fbc", "#11a8cd", "#e5e5e5",
  "#767676", "#f14c4c", "#23d18b", "#f5f543", "#3b8eea", "#d670d6", "#29b8db", "#ffffff",
];
const OVERSCAN = 10; // rows rendered above and below the visible ones
const BACKOFF_MAX_MS = 30000;
const WAIT_MS = 2000; // asking again for a workflow with no line yet
const NOT_YET = "no line nor status stored for it yet (a wrong id, or it has not started)";
const ANNOUNCE_EVERY_MS = 5000; // screen-reader summaries of new lines, at most this often
const FLUSH_BUDGET_MS = 8; // per animation frame, for turning received events into lines
const SEARCH_BUDGET_MS = 6;
const DEFAULT_MAX_LINES = 500000;
const BACKFILL_PAGE = 5000; // lines per JSON page of the initial catch-up
const MAX_SCROLL_PX = 30000000; // browsers cap element heights around 33.5 million px
const ENGINE_KEY = "@workflow";

function ansiColorRules() {
  const rules = [];
  for (let i = 0; i < 16; i++) {
    const name = (i >= 8 ? "bright-" : "") + ANSI_NAMES[i % 8];
    rules.push(`.fg${i}{color:var(--rll-ansi-${name},${ANSI_DEFAULTS[i]})}`);
    rules.push(`.bg${i}{background:var(--rll-ansi-${name},${ANSI_DEFAULTS[i]})}`);
  }
  return rules.join("\n");
}

const STYLE = `
:host {
  --_bg: var(--rll-bg, #1e1e1e);
  --_fg: var(--rll-fg, #d4d4d4);
  --_muted: var(--rll-muted, #9a9a9a);
  --_border: var(--rll-border, #3c3c3c);
  --_panel: var(--rll-panel-bg, #252526);
  --_accent: var(--rll-accent, #3b8eea);
  --_rh: var(--rll-row-height, 1.5em);
  display: flex; flex-direction: column; height: 32rem; min-height: 12rem;
  box-sizing: border-box; overflow: hidden; container-type: inline-size;
  color: var(--_fg); background: var(--_bg);
  border: 1px solid var(--_border); border-radius: var(--rll-radius, 6px);
  font: var(--rll-ui-font-size, 13px)/1.4 var(--rll-ui-font, system-ui, sans-serif);
}
:host([hidden]) { display: none; }
:host([theme="light"]) {
  --_bg: var(--rll-bg, #ffffff); --_fg: var(--rll-fg, #1f1f1f);
  --_muted: var(--rll-muted, #6e6e6e); --_border: var(--rll-border, #d0d0d0);
  --_panel: var(--rll-panel-bg, #f3f3f3); --_accent: var(--rll-accent, #0451a5);
  --rll-ansi-yellow: #949800; --rll-ansi-bright-yellow: #b5ba00;
  --rll-ansi-white: #555555; --rll-ansi-bright-white: #a5a5a5;
  --rll-ansi-green: #00a000; --rll-ansi-bright-green: #14a014;
  --rll-ansi-cyan: #0598bc; --rll-ansi-bright-cyan: #0598bc;
  --rll-stderr-fg: #b00020; --rll-selected-bg: #dbeafe; --rll-focus: #0451a5;
  --rll-state-live: #0a7d2c; --rll-state-reconnecting: #8a6100;
  --rll-job-column-fg: #2f6f8f; --rll-jump-bg: #0451a5;
  --rll-status-running: #0451a5; --rll-status-finished: #0a7d2c;
  --rll-status-stopped: #8a6100; --rll-status-failed: #b00020;
}
*, *::before, *::after { box-sizing: border-box; }
button, input { font: inherit; color: inherit; }
.sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip-path: inset(50%);
  white-space: nowrap; }
:focus-visible { outline: 2px solid var(--rll-focus, #f5f543); outline-offset: -2px; }

.toolbar { display: flex; flex-wrap: wrap; align-items: center; gap: .5rem .75rem;
  padding: .4rem .6rem; background: var(--_panel); border-bottom: 1px solid var(--_border); }
.state { display: inline-flex; align-items: center; gap: .4rem; font-weight: 600;
  padding: .1rem .55rem; border-radius: 999px; border: 1px solid currentColor;
  color: var(--_muted); white-space: nowrap; }
.state::before { content: ""; width: .55rem; height: .55rem; border-radius: 50%;
  background: currentColor; }
.state[data-state="live"] { color: var(--rll-state-live, #23d18b); }
.state[data-state="live"]::before { animation: pulse 2s ease-in-out infinite; }
.state[data-state="reconnecting"], .state[data-state="connecting"],
.state[data-state="waiting"] {
  color: var(--rll-state-reconnecting, #f5c543); }
.state[data-state="reconnecting"]::before { animation: pulse .8s ease-in-out infinite; }
.state[data-state="ended"] { color: var(--rll-state-ended, #9a9a9a); }
.state[data-state="error"] { color: var(--rll-state-error, #f14c4c); }
@keyframes pulse { 50% { opacity: .25; } }
@media (prefers-reduced-motion: reduce) { .state::before { animation: none !important; } }
.state-detail { font-weight: 400; }
.wf-status { color: var(--_muted); white-space: nowrap; }
.wf-status b { color: var(--_fg); }
.grow { flex: 1 1 auto; }
.search { display: inline-flex; align-items: center; gap: .25rem; }
.search input { width: 14rem; max-width: 40vw; padding: .2rem .45rem; background: var(--_bg);
  border: 1px solid var(--_border); border-radius: 4px; }
.matches { color: var(--_muted); min-width: 5.5rem; font-variant-numeric: tabular-nums; }
.tool { padding: .15rem .5rem; background: transparent; border: 1px solid var(--_border);
  border-radius: 4px; cursor: pointer; }
.tool:hover { border-color: var(--_accent); }
.tool:disabled { opacity: .4; cursor: default; }
.check { display: inline-flex; align-items: center; gap: .3rem; white-space: nowrap;
  cursor: pointer; }
.download { color: var(--_accent); white-space: nowrap; }
.download[hidden] { display: none; }

.body { flex: 1 1 auto; display: flex; min-height: 0; }
.jobs { flex: 0 0 var(--rll-jobs-width, 15rem); overflow: auto; padding: .35rem;
  background: var(--_panel); border-right: 1px solid var(--_border); display: flex;
  flex-direction: column; gap: 2px; }
.jobs[hidden] { display: none; }
.job { display: grid; grid-template-columns: 1fr auto; grid-template-rows: auto auto;
  column-gap: .5rem; width: 100%; text-align: left; padding: .3rem .5rem; cursor: pointer;
  background: transparent; border: 1px solid transparent; border-radius: 4px; }
.job:hover { border-color: var(--_border); }
.job[aria-selected="true"] { background: var(--rll-selected-bg, #04395e);
  border-color: var(--_accent); }
.job-name { overflow: hidden; text-overflow: ellipsis; white-space: nowrap; font-weight: 600; }
.job-count { color: var(--_muted); font-size: .85em; text-align: right;
  font-variant-numeric: tabular-nums; }
.job-status { grid-column: 1 / -1; font-size: .85em; color: var(--_muted); }
.job-status::before { content: "\\25CF\\00a0"; }
.job-status:empty { display: none; }
[data-status="running"] .job-status, .wf-status[data-status="running"] b {
  color: var(--rll-status-running, #3b8eea); }
[data-status="finished"] .job-status, .wf-status[data-status="finished"] b {
  color: var(--rll-status-finished, #23d18b); }
[data-status="failed"] .job-status, .wf-status[data-status="failed"] b {
  color: var(--rll-status-failed, #f14c4c); }
[data-status="stopped"] .job-status, .wf-status[data-status="stopped"] b {
  color: var(--rll-status-stopped, #f5c543); }

.main { position: relative; flex: 1 1 auto; min-width: 0; display: flex;
  flex-direction: column; }
.notice { padding: .3rem .6rem; color: var(--_muted); border-bottom: 1px solid var(--_border); }
.notice[hidden] { display: none; }
.viewport { position: relative; flex: 1 1 auto; overflow: auto; overflow-anchor: none;
  font: var(--rll-font-size, 13px)/var(--_rh) var(--rll-font, ui-monospace, "DejaVu Sans Mono",
  Menlo, Consolas, monospace); tab-size: 8; }
.sizer { position: relative; min-height: 100%; }
.rows { position: absolute; top: 0; left: 0; min-width: 100%; will-change: transform; }
.row { height: var(--_rh); white-space: pre; padding: 0 .75rem 0 .5rem;
  border-left: 3px solid transparent; }
.row.err { color: var(--rll-stderr-fg, #f48771);
  background: var(--rll-stderr-bg, rgba(241, 76, 76, .08));
  border-left-color: var(--rll-stderr-border, #f14c4c); }
.row.current { background: var(--rll-current-row-bg, rgba(245, 245, 67, .12)); }
.probe { position: absolute; visibility: hidden; pointer-events: none; }
.ts { color: var(--rll-timestamp-fg, var(--_muted)); user-select: none; }
.ts::after { content: "  "; }
.jobcol { display: inline-block; width: var(--rll-job-column-width, 11ch); overflow: hidden;
  vertical-align: top; text-overflow: ellipsis; color: var(--rll-job-column-fg, #6a9fb5);
  user-select: none; }
.trunc { color: var(--_muted); font-style: italic; }
mark { background: var(--rll-match-bg, #f5f543); color: var(--rll-match-fg, #1e1e1e);
  border-radius: 2px; }
.current mark { background: var(--rll-current-match-bg, #ff9632); }
mark > span { color: inherit !important; background: transparent !important; }
.empty { position: absolute; inset: 0; display: flex; align-items: center;
  justify-content: center; color: var(--_muted); pointer-events: none; }
.empty[hidden] { display: none; }
.jump { position: absolute; right: 1.25rem; bottom: 1rem; padding: .35rem .8rem;
  border-radius: 999px; border: 1px solid var(--_accent); cursor: pointer;
  background: var(--rll-jump-bg, #0e639c); color: var(--rll-jump-fg, #ffffff);
  box-shadow: 0 2px 8px rgba(0, 0, 0, .4); }
.jump[hidden] { display: none; }

.b { font-weight: 700; } .d { opacity: .7; } .i { font-style: italic; }
.u { text-decoration: underline; } .s { text-decoration: line-through; }
.u.s { text-decoration: underline line-through; }
.fgx { color: var(--c); } .bgx { background: var(--bgc); }
.fginv { color: var(--_bg); } .bginv { background: var(--_fg); }
${ansiColorRules()}

@container (max-width: 42rem) {
  .body { flex-direction: column; }
  .jobs { flex: 0 0 auto; flex-direction: row; overflow-x: auto; border-right: 0;
    border-bottom: 1px solid var(--_border); }
  .job { width: auto; min-width: 9rem; }
}
`;

const TEMPLATE = document.createElement("template");
// Static markup only: no log text ever goes through innerHTML.
TEMPLATE.innerHTML = `<style>${STYLE}</style>
<div class="toolbar" part="toolbar">
  <span class="state" part="state" role="status" data-state="idle"><span class="state-text"
    >Idle</span><span class="state-detail"></span></span>
  <span class="wf-status" part="workflow-status"></span>
  <span class="grow"></span>
  <span class="search" part="search" role="search">
    <input type="search" placeholder="Search loaded lines" aria-label="Search loaded lines"
      spellcheck="false" autocomplete="off">
    <button class="tool prev" type="button" aria-label="Previous match" title="Previous match (Shift+Enter)" disabled>&#8593;</button>
    <button class="tool next" type="button" aria-label="Next match" title="Next match (Enter)" disabled>&#8595;</button>
    <span class="matches" aria-live="polite"></span>
  </span>
  <label class="check" part="timestamps-toggle"><input type="checkbox" class="ts-toggle"> Timestamps</label>
  <a class="download" part="download" hidden download>Download full log</a>
</div>
<div class="body">
  <div class="jobs" part="jobs" role="tablist" aria-label="Jobs" aria-orientation="vertical"></div>
  <div class="main">
    <div class="notice" part="notice" hidden></div>
    <div class="viewport" part="viewport" id="viewport" role="log" tabindex="0" aria-live="off"
      aria-label="Log lines">
      <div class="sizer"><div class="row probe" aria-hidden="true">X</div><div class="rows"></div></div>
    </div>
    <div class="empty" part="empty">Waiting for log lines&#8230;</div>
    <button class="jump" part="jump" type="button" hidden>Jump to latest</button>
  </div>
</div>
<div class="sr announcer" aria-live="polite" aria-atomic="true"></div>`;

// ---- ANSI SGR -----------------------------------------------------------------------------

// CSI sequences, OSC strings, other two-byte escapes and C0 controls except \t.
// eslint-disable-next-line no-control-regex
const ESCAPES = /\x1b\[([0-9;:?<=>]*)[ -/]*([@-~])|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[P^_X][^\x1b]*(?:\x1b\\)?|\x1b[ -/]*[0-~]?|[\x00-\x08\x0a-\x1f\x7f]/g;
// eslint-disable-next-line no-control-regex
const SPECIAL = /[\x00-\x08\x0a-\x1f\x7f]/;

function newSgr() {
  return { fg: null, bg: null, b: false, d: false, i: false, u: false, s: false, inv: false };
}

function xterm256(n) {
  if (n < 16) return n;
  if (n >= 232) {
    const v = 8 + 10 * (n - 232);
    return `rgb(${v},${v},${v})`;
  }
  const levels = [0, 95, 135, 175, 215, 255];
  n -= 16;
  return `rgb(${levels[Math.floor(n / 36)]},${levels[Math.floor(n / 6) % 6]},${levels[n % 6]})`;
}

function applySgr(st, params) {
  const codes = params === "" ? [0] : params.split(/[;:]/).map((x) => (x === "" ? 0 : +x));
  for (let k = 0; k < codes.length; k++) {
    const c = codes[k];
    if (c === 0) Object.assign(st, newSgr());
    else if (c === 1) st.b = true;
    else if (c === 2) st.d = true;
    else if (c === 3) st.i = true;
    else if (c === 4) st.u = true;
    else if (c === 7) st.inv = true;
    else if (c === 9) st.s = true;
    else if (c === 22) st.b = st.d = false;
    else if (c === 23) st.i = false;
    else if (c === 24) st.u = false;
    else if (c === 27) st.inv = false;
    else if (c === 29) st.s = false;
    else if (c >= 30 && c <= 37) st.fg = c - 30;
    else if (c >= 90 && c <= 97) st.fg = c - 90 + 8;
    else if (c === 39) st.fg = null;
    else if (c >= 40 && c <= 47) st.bg = c - 40;
    else if (c >= 100 && c <= 107) st.bg = c - 100 + 8;
    else if (c === 49) st.bg = null;
    else if (c === 38 || c === 48) {
      let color = null;
      if (codes[k + 1] === 5 && k + 2 < codes.length) {
        color = xterm256(codes[k + 2] & 255);
        k += 2;
      } else if (codes[k + 1] === 2 && k + 4 < codes.length) {
        color = `rgb(${codes[k + 2] & 255},${codes[k + 3] & 255},${codes[k + 4] & 255})`;
        k += 4;
      } else {
        k = codes.length;
      }
      if (c === 38) st.fg = color;
      else st.bg = color;
    }
  }
}

// [className, style-variables or null] for the current SGR state.
function sgrClass(st) {
  let fg = st.fg;
  let bg = st.bg;
  let cls = "";
  let style = null;
  if (st.inv) {
    [fg, bg] = [bg === null ? "inv" : bg, fg === null ? "inv" : fg];
  }
  if (fg === "inv") cls += " fginv";
  else if (typeof fg === "number") cls += " fg" + fg;
  else if (fg !== null) {
    cls += " fgx";
    style = { "--c": fg };
  }
  if (bg === "inv") cls += " bginv";
  else if (typeof bg === "number") cls += " bg" + bg;
  else if (bg !== null) {
    cls += " bgx";
    (style ||= {})["--bgc"] = bg;
  }
  if (st.b) cls += " b";
  if (st.d) cls += " d";
  if (st.i) cls += " i";
  if (st.u) cls += " u";
  if (st.s) cls += " s";
  return [cls.trim(), style];
}

/** A log message as styled segments [text, className, styleVars|null] and its plain text.
 *  A `\r` starts the line over (progress bars): only what follows the last one is shown,
 *  in the colours set before it. Other escape sequences and control characters are dropped. */
export function parseMessage(msg) {
  msg = msg.replace(/[\r\n]+$/, "");
  if (!msg.includes("\x1b") && !SPECIAL.test(msg)) return { segs: [[msg, "", null]], plain: msg };
  const st = newSgr();
  const cut = msg.lastIndexOf("\r");
  if (cut >= 0) {
    for (const m of msg.slice(0, cut).matchAll(ESCAPES)) {
      if (m[2] === "m") applySgr(st, m[1]);
    }
    msg = msg.slice(cut + 1);
  }
  const segs = [];
  let plain = "";
  let [cls, style] = sgrClass(st);
  let last = 0;
  const emit = (text) => {
    if (!text) return;
    segs.push([text, cls, style]);
    plain += text;
  };
  ESCAPES.lastIndex = 0;
  for (let m; (m = ESCAPES.exec(msg)); ) {
    emit(msg.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[0] === "\n") emit("\u21b5 ");
    else if (m[2] === "m") {
      applySgr(st, m[1]);
      [cls, style] = sgrClass(st);
    }
  }
  emit(msg.slice(last));
  return { segs, plain };
}

export function plainText(msg) {
  return parseMessage(msg).plain;
}

// ---- helpers ------------------------------------------------------------------------------

const pad2 = (n) => (n < 10 ? "0" : "") + n;
const pad3 = (n) => (n < 10 ? "00" : n < 100 ? "0" : "") + n;

function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return String(iso ?? "");
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}.${pad3(d.getMilliseconds())}`;
}

function ranges(haystack, needle) {
  const out = [];
  if (!needle) return out;
  for (let i = haystack.indexOf(needle); i >= 0; i = haystack.indexOf(needle, i + needle.length)) {
    out.push(i, i + needle.length);
  }
  return out;
}

function lowerBound(arr, value) {
  let lo = 0;
  let hi = arr.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (arr[mid] < value) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function span(cls, text) {
  const el = document.createElement("span");
  el.className = cls;
  el.textContent = text;
  return el;
}

// ---- the element --------------------------------------------------------------------------

export class ReanaLiveLog extends HTMLElement {
  static observedAttributes = [
    "src", "token", "tail", "job", "timestamps", "max-lines", "stream-only",
  ];

  constructor() {
    super();
    const root = this.attachShadow({ mode: "open" });
    root.append(TEMPLATE.content.cloneNode(true));
    const $ = (sel) => root.querySelector(sel);
    this._ui = {
      state: $(".state"), stateText: $(".state-text"), stateDetail: $(".state-detail"),
      wfStatus: $(".wf-status"), search: $(".search input"), prev: $(".prev"),
      next: $(".next"), matches: $(".matches"), tsToggle: $(".ts-toggle"),
      download: $(".download"), jobs: $(".jobs"), viewport: $(".viewport"),
      sizer: $(".sizer"), rows: $(".rows"), probe: $(".probe"), empty: $(".empty"),
      jump: $(".jump"), notice: $(".notice"), announcer: $(".announcer"),
    };
    this._src = null;
    this._es = null;
    this._retryTimer = 0;
    this._attempt = 0;
    this._connGen = 0;
    this._raf = 0;
    this._timer = 0;
    this._rh = 0;
    this._timestamps = false;
    this._maxLines = DEFAULT_MAX_LINES;
    this._selected = null;
    this._reflecting = false;
    this._state = "idle";
    this._resetModel();
    this._wire();
  }

  // ---- public API ----

  /** "idle" | "connecting" | "waiting" | "live" | "reconnecting" | "ended" | "error" */
  get state() { return this._state; }
  /** The id of the last log line received (0: none yet). */
  get lastEventId() { return this._lastId; }
  /** Lines received since `src` was set (including any dropped by max-lines). */
  get lineCount() { return this._dropped + this._lines.length; }
  /** Lines in the current (job-filtered) view. */
  get viewLineCount() { return this._viewLength(); }
  get workflowStatus() { return this._workflowStatus; }
  get following() { return this._following; }
  /** The lines held in memory, oldest first (a copy). */
  get lines() {
    return this._lines.map((l) => ({
      id: l.id, job_id: l.job.id, step: l.job.step, kind: l.job.key === ENGINE_KEY ? "workflow" : "job",
      stream: l.err ? "stderr" : "stdout", timestamp: l.ts, message: l.msg,
    }));
  }
  /** Jobs seen so far: [{key, job_id, step, label, status, lines}]. */
  get jobs() {
    return this._jobList.map((j) => ({
      key: j.key, job_id: j.id, step: j.step, label: j.label, status: j.status, lines: j.count,
    }));
  }

  /** Show only the lines of a job (job id, step name; null: all jobs). */
  selectJob(job) { this._select(job || null, true); }
  search(query) {
    this._ui.search.value = query ?? "";
    this._setQuery(this._ui.search.value);
  }
  nextMatch() { this._gotoMatch(1); }
  previousMatch() { this._gotoMatch(-1); }
  jumpToLatest() {
    this._following = true;
    this._newWhilePaused = 0;
    this._schedule();
  }
  /** Reconnect now (resuming after the last line received), e.g. after a token change. */
  reconnect() {
    if (!this._src) return;
    this._ended = false;
    this._attempt = 0;
    this._open();
  }
  /** Stop following (closes the stream); keeps what was loaded. */
  disconnect() {
    this._closeStream();
    this._setState("idle");
  }

  // ---- lifecycle ----

  connectedCallback() {
    this._measure();
    if (!this._ro) {
      this._ro = new ResizeObserver(() => {
        this._measure();
        this._schedule();
      });
    }
    this._ro.observe(this._ui.viewport);
    if (this._src && !this._es && !this._retryTimer && !this._ended) this._openSoon();
    this._schedule();
  }

  disconnectedCallback() {
    this._closeStream();
    this._ro?.disconnect();
    cancelAnimationFrame(this._raf);
    clearTimeout(this._timer);
    clearTimeout(this._announceTimer);
    this._raf = this._timer = 0;
  }

  attributeChangedCallback(name, old, value) {
    if (old === value) return;
    if (name === "src") {
      this._closeStream();
      this._src = value || null;
      this._resetModel();
      this._rebuildJobsUi();
      this._updateDownload();
      this._gen++;
      if (this._src && this.isConnected) this._openSoon();
      else this._setState("idle");
      this._schedule();
    } else if (name === "token") {
      this._updateDownload();
      if (this._src && this.isConnected && !this._ended && this._state !== "idle") {
        this._attempt = 0;
        this._openSoon();
      }
    } else if (name === "job") {
      if (!this._reflecting) this._select(value || null, false);
    } else if (name === "timestamps") {
      this._timestamps = value !== null;
      this._ui.tsToggle.checked = this._timestamps;
      this._gen++;
      this._schedule();
    } else if (name === "stream-only") {
      this._updateDownload();
    } else if (name === "max-lines") {
      const n = parseInt(value ?? "", 10);
      this._maxLines = n > 0 ? n : DEFAULT_MAX_LINES;
      this._schedule();
    }
  }

  // ---- model ----

  _resetModel() {
    this._lines = []; // {id, job, err, ts, msg, tr}
    this._dropped = 0; // lines dropped from the front (max-lines); "global index" = dropped + i
    this._view = this._selected == null ? null : []; // null: every line; else sorted global
    // indices of the selected job's lines
    this._jobs = new Map(); // key (job id, "step:<name>", ENGINE_KEY) -> job
    this._jobList = [];
    this._dirtyJobs = new Set();
    this._jobsUiStale = true;
    this._lastId = 0;
    this._ended = false;
    this._pending = [];
    this._pendingPos = 0;
    this._workflowStatus = null;
    this._following = true;
    this._newWhilePaused = 0;
    this._programmaticTop = 0;
    this._unannounced = 0;
    this._lastAnnounce = 0;
    this._gen = (this._gen || 0) + 1;
    this._rowMap = new Map();
    this._rendered = "";
    this._sizerPx = -1;
    this._query = "";
    this._matches = [];
    this._scanPos = 0;
    this._current = -1;
    this._matchesText = "";
    this._ui.rows.replaceChildren();
    this._ui.wfStatus.replaceChildren();
    this._ui.notice.hidden = true;
    this._ui.search.value = "";
  }

  _viewLength() { return this._view ? this._view.length : this._lines.length; }
  _viewGlobal(k) { return this._view ? this._view[k] : this._dropped + k; }
  _viewPos(g) { return this._view ? lowerBound(this._view, g) : g - this._dropped; }
  _line(g) { return this._lines[g - this._dropped]; }

  _jobFor(kind, jobId, step) {
    let key;
    if (kind === "workflow") key = ENGINE_KEY;
    else key = jobId || (step ? "step:" + step : "@job");
    let job = this._jobs.get(key);
    if (job) {
      if (step && !job.step) {
        job.step = step;
        this._labelJob(job);
      }
      return job;
    }
    if (jobId && step) {
      // a status that named only the step came first: it is this job
      const byStep = this._jobs.get("step:" + step);
      if (byStep && !byStep.id) {
        byStep.id = jobId;
        this._jobs.set(jobId, byStep);
        this._labelJob(byStep);
        return byStep;
      }
    }
    job = { key, id: kind === "workflow" ? null : jobId || null, step: step || null, label: "",
            short: "", status: null, count: 0, selected: false, el: null };
    this._labelJob(job);
    job.selected = this._matchesSelection(job);
    this._jobs.set(key, job);
    this._jobList.push(job);
    this._jobsUiStale = true;
    return job;
  }

  _labelJob(job) {
    if (job.key === ENGINE_KEY) {
      job.label = "Workflow engine";
      job.short = "engine";
    } else {
      job.label = job.step || job.id || "job";
      job.short = job.step || (job.id || "job").replace(/^reana-run-job-/, "").slice(0, 8);
      // another job of the same step: both tabs now show their job ids (_tabName)
      for (const j of this._jobList) if (j !== job && j.step && j.step === job.step) this._dirtyJobs.add(j);
    }
    this._dirtyJobs.add(job);
    this._gen++;
    const selected = this._matchesSelection(job);
    if (selected !== job.selected && this._jobs.has(job.key)) {
      // learnt its step or id after the fact, and that decides whether it is selected
      job.selected = selected;
      this._rebuildView();
    }
  }

  _rebuildView() {
    if (this._selected === null) {
      this._view = null;
      return;
    }
    const view = [];
    const lines = this._lines;
    for (let i = 0; i < lines.length; i++) if (lines[i].job.selected) view.push(this._dropped + i);
    this._view = view;
  }

  _matchesSelection(job) {
    const sel = this._selected;
    if (sel === null) return true;
    return job.key === sel || (job.id !== null && job.id === sel) || job.step === sel;
  }

  _ingest(item) {
    if (item.__status) {
      this._applyStatus(item.__status);
      return;
    }
    const job = this._jobFor(item.kind, item.job_id, item.step);
    const g = this._dropped + this._lines.length;
    this._lines.push({ id: item.id, job, err: item.stream === "stderr", ts: item.timestamp,
                       msg: typeof item.message === "string" ? item.message : String(item.message ?? ""),
                       tr: item.truncated === true });
    job.count++;
    this._dirtyJobs.add(job);
    if (job.selected) {
      if (this._view) this._view.push(g);
      if (!this._following) this._newWhilePaused++;
      this._unannounced++;
    }
  }

  _applyStatus(s) {
    if (!s.job_id && !s.step) {
      this._workflowStatus = s.status;
      this._renderWorkflowStatus();
      return;
    }
    const job = this._jobFor("job", s.job_id, s.step);
    job.status = s.status;
    this._dirtyJobs.add(job);
  }

  _prune() {
    const limit = Math.max(1000, Math.min(this._maxLines, Math.floor(MAX_SCROLL_PX / (this._rh || 20))));
    const excess = this._lines.length - limit;
    if (excess <= 0 || (excess < limit / 10 && excess < 50000)) return;
    const removed = this._lines.splice(0, excess);
    for (const line of removed) {
      line.job.count--;
      this._dirtyJobs.add(line.job);
    }
    this._dropped += excess;
    let shift = excess;
    if (this._view) {
      shift = lowerBound(this._view, this._dropped);
      this._view.splice(0, shift);
    }
    const m = lowerBound(this._matches, this._dropped);
    if (m) {
      this._matches.splice(0, m);
      this._current = this._current >= m ? this._current - m : -1;
    }
    this._scanPos = Math.max(0, this._scanPos - shift);
    if (!this._following && shift) {
      this._ui.viewport.scrollTop -= shift * this._rh;
      this._programmaticTop = this._ui.viewport.scrollTop;
    }
    const n = this._dropped;
    this._ui.notice.textContent =
      `${n.toLocaleString()} earlier line${n === 1 ? "" : "s"} not kept in the page ` +
      `(max-lines ${limit.toLocaleString()})` +
      (this._ui.download.hidden ? "." : "; the download has everything.");
    this._ui.notice.hidden = false;
  }

  // ---- selection ----

  _select(sel, reflect) {
    if (sel === this._selected) return;
    this._selected = sel;
    const all = sel === null;
    for (const job of this._jobList) job.selected = this._matchesSelection(job);
    this._rebuildView();
    if (reflect) {
      this._reflecting = true;
      if (all) this.removeAttribute("job");
      else this.setAttribute("job", sel);
      this._reflecting = false;
      this.dispatchEvent(new CustomEvent("jobchange", { detail: { job: sel } }));
    }
    for (const job of this._jobList) this._dirtyJobs.add(job);
    this._allTabDirty = true;
    this._following = true;
    this._newWhilePaused = 0;
    this._restartSearch();
    this._updateDownload();
    this._gen++;
    this._schedule();
  }

  // ---- connection ----

  _setState(state, detail = "") {
    const labels = { idle: "Idle", connecting: "Connecting", live: "Live", waiting: "Waiting",
                     reconnecting: "Reconnecting", ended: "Ended", error: "Error" };
    const changed = state !== this._state;
    this._state = state;
    const ui = this._ui;
    ui.state.dataset.state = state;
    ui.stateText.textContent = labels[state] || state;
    ui.stateDetail.textContent = detail ? ` \u00b7 ${detail}` : "";
    if (changed) this.dispatchEvent(new CustomEvent("statechange", { detail: { state, detail } }));
  }

  _streamUrl() {
    const url = new URL(this._src, document.baseURI);
    const token = this.getAttribute("token");
    if (token) url.searchParams.set("access_token", token);
    if (this._lastId > 0) {
      url.searchParams.delete("tail");
      url.searchParams.set("since", String(this._lastId));
    } else {
      const tail = this.getAttribute("tail");
      if (tail && /^\d+$/.test(tail.trim())) url.searchParams.set("tail", tail.trim());
    }
    return url;
  }

  // The plain read endpoint next to the stream: .../logs/stream -> .../logs (none with
  // `stream-only`: that path may not reach this service, e.g. it is reana-server's own)
  _readUrl() {
    if (!this._src || this.hasAttribute("stream-only")) return null;
    let url;
    try {
      url = new URL(this._src, document.baseURI);
    } catch {
      return null;
    }
    if (!/\/stream\/?$/.test(url.pathname)) return null;
    url.pathname = url.pathname.replace(/\/stream\/?$/, "");
    for (const k of ["tail", "since", "access_token"]) url.searchParams.delete(k);
    const token = this.getAttribute("token");
    if (token) url.searchParams.set("access_token", token);
    return url;
  }

  // Attributes arrive one by one (src, then token, tail...): connect once they are all set.
  _openSoon() {
    if (this._openQueued) return;
    this._openQueued = true;
    queueMicrotask(() => {
      this._openQueued = false;
      if (this.isConnected && this._src && !this._ended) this._open();
    });
  }

  async _open() {
    this._closeStream();
    const gen = this._connGen;
    if (!this._src || this._ended) return;
    let url;
    try {
      url = this._streamUrl();
    } catch {
      this._setState("error", "invalid src");
      return;
    }
    if (this._state !== "waiting") {
      this._setState(this._attempt || this._lastId ? "reconnecting" : "connecting");
    }
    const problem = await this._backfill(gen);
    if (gen !== this._connGen) return; // closed or superseded meanwhile
    if (problem?.fatal) {
      this._setState("error", problem.text);
      return;
    }
    if (problem?.retry) {
      this._retryLater(problem.text);
      return;
    }
    if (problem?.wait) { // not started yet: ask again at a steady pace, said once
      this._setState("waiting", problem.text);
      this._retryTimer = setTimeout(() => {
        this._retryTimer = 0;
        if (gen === this._connGen && this.isConnected && !this._ended) this._open();
      }, WAIT_MS);
      return;
    }
    url = this._streamUrl(); // since = the last line the backfill brought
    const es = new EventSource(url.href);
    this._es = es;
    es.onopen = () => {
      if (es !== this._es) return;
      this._attempt = 0;
      this._setState("live");
    };
    es.onerror = () => {
      if (es !== this._es || this._ended) return;
      if (es.readyState === EventSource.CLOSED) {
        // A non-200 answer (e.g. a 502/503 during a rollout): EventSource gives up for good.
        this._es = null;
        this._retryLater(this._why);
      } else {
        this._setState("reconnecting"); // the browser retries by itself with Last-Event-ID
      }
    };
    es.addEventListener("log", (e) => {
      let line;
      try {
        line = JSON.parse(e.data);
      } catch {
        return;
      }
      const id = typeof line.id === "number" ? line.id : Number(e.lastEventId);
      if (!(id > this._lastId)) return; // already have it: every line shows once
      this._lastId = id;
      line.id = id;
      this._pending.push(line);
      this._schedule();
    });
    es.addEventListener("status", (e) => {
      try {
        this._pending.push({ __status: JSON.parse(e.data) });
      } catch {
        return;
      }
      this._schedule();
    });
    es.addEventListener("end", (e) => {
      if (es !== this._es) return;
      let data = {};
      try {
        data = JSON.parse(e.data);
      } catch { /* keep {} */ }
      es.close(); // or the browser would reconnect and replay
      this._es = null;
      this._ended = true;
      clearTimeout(this._retryTimer);
      this._retryTimer = 0;
      if (data.status) {
        this._workflowStatus = data.status;
        this._renderWorkflowStatus();
      }
      this._setState("ended");
      this.dispatchEvent(new CustomEvent("end", { detail: data }));
    });
  }

  _closeStream() {
    this._connGen++;
    this._abort?.abort();
    this._abort = null;
    if (this._es) {
      this._es.close();
      this._es = null;
    }
    clearTimeout(this._retryTimer);
    this._retryTimer = 0;
  }

  _retryLater(why = "") {
    const gen = this._connGen;
    const delay = Math.min(BACKOFF_MAX_MS, 1000 * 2 ** this._attempt) * (0.75 + Math.random() / 2);
    this._attempt++;
    const retry = `retry in ${Math.max(1, Math.round(delay / 1000))} s`;
    this._setState("reconnecting", why ? `${why}; ${retry}` : retry);
    this._retryTimer = setTimeout(() => {
      this._retryTimer = 0;
      if (gen === this._connGen && this.isConnected && !this._ended) this._open();
    }, delay);
  }

  /* Before (re)opening the EventSource, fetch what it would replay from the plain read
   * endpoint, in pages of JSON: a browser dispatches EventSource events one by one (tens of
   * microseconds each), far slower than one JSON.parse per page, which matters for the
   * hundreds of thousands of lines of a big log. The EventSource then starts after the last
   * id fetched. Also tells why a failed stream failed, which EventSource does not.
   * Returns null (go on with the stream) or {fatal|retry, text}. */
  async _backfill(gen) {
    const base = this._readUrl();
    if (!base) return null;
    base.searchParams.set("format", "json");
    const tailAttr = (this.getAttribute("tail") || "").trim();
    let tail = this._lastId === 0 && /^\d+$/.test(tailAttr) ? tailAttr : null;
    const abort = (this._abort = new AbortController());
    this._why = "";
    for (;;) {
      const url = new URL(base);
      if (tail !== null) url.searchParams.set("tail", tail);
      else {
        url.searchParams.set("since", String(this._lastId));
        url.searchParams.set("limit", String(BACKFILL_PAGE));
      }
      let body;
      try {
        const r = await fetch(url, { signal: abort.signal, cache: "no-store" });
        if (r.status === 401) return { fatal: true, text: "not signed in (401)" };
        if (r.status === 403) return { fatal: true, text: "not allowed (403)" };
        if (r.status === 404) {
          // No line nor status yet: wait for it (asking again), or with no-wait say so.
          // The same words as `reana-log-sse logs` (reana_log_sse/client/logs.py NOT_YET).
          const said = await r.json().catch(() => ({}));
          const what = typeof said?.error === "string" ? said.error : "unknown workflow";
          if (this.hasAttribute("no-wait")) return { fatal: true, text: `${what}: ${NOT_YET}` };
          return { wait: true, text: `${what}: ${NOT_YET}; waiting for its first line` };
        }
        if (r.status >= 500) return { retry: true, text: `service unavailable (${r.status})` };
        if (!r.ok) return null;
        body = await r.json();
      } catch {
        if (gen !== this._connGen) return null;
        return { retry: true, text: "service unreachable" };
      }
      if (gen !== this._connGen) return null;
      const lines = Array.isArray(body?.lines) ? body.lines : [];
      for (const line of lines) {
        if (line && line.id > this._lastId) {
          this._lastId = line.id;
          this._pending.push(line);
        }
      }
      if (lines.length) this._schedule();
      if (tail !== null || lines.length < BACKFILL_PAGE) return null;
      tail = null;
      this._setState(this._state, `loading ${this._lastId.toLocaleString()}\u2026`);
    }
  }

  // ---- frame loop ----

  _schedule() {
    if (this._raf || this._timer || !this.isConnected) return;
    if (document.hidden) {
      // no animation frames in background tabs: still turn events into lines, slowly
      this._timer = setTimeout(() => {
        this._timer = 0;
        this._frame();
      }, 250);
    } else {
      this._raf = requestAnimationFrame(() => {
        this._raf = 0;
        this._frame();
      });
    }
  }

  _frame() {
    const t0 = performance.now();
    const p = this._pending;
    let i = this._pendingPos;
    const hadLines = this._lines.length;
    while (i < p.length) {
      this._ingest(p[i++]);
      if ((i & 127) === 0 && performance.now() - t0 > FLUSH_BUDGET_MS) break;
    }
    if (i >= p.length) {
      this._pending = [];
      this._pendingPos = 0;
    } else {
      this._pendingPos = i;
      this._schedule();
    }
    if (this._lines.length !== hadLines) this._prune();
    this._scan(SEARCH_BUDGET_MS);
    this._renderJobs();
    this._render();
    this._announce();
  }

  _measure() {
    const h = this._ui.probe.getBoundingClientRect().height;
    if (h > 0 && h !== this._rh) {
      this._rh = h;
      this._sizerPx = -1;
      this._gen++;
    }
  }

  _render() {
    const ui = this._ui;
    const vp = ui.viewport;
    if (!this._rh) this._measure();
    const rh = this._rh || 20;
    const n = this._viewLength();
    const total = n * rh;
    if (total !== this._sizerPx) {
      ui.sizer.style.height = `${total}px`;
      this._sizerPx = total;
    }
    const height = vp.clientHeight;
    if (total <= height) this._following = true; // nothing to scroll: nothing to jump to
    if (this._following) {
      const bottom = Math.max(0, total - height);
      if (Math.abs(vp.scrollTop - bottom) > 1) vp.scrollTop = bottom;
      this._programmaticTop = vp.scrollTop;
    }
    const top = vp.scrollTop;
    const first = Math.max(0, Math.floor(top / rh) - OVERSCAN);
    const last = Math.min(n, Math.ceil((top + (height || 800)) / rh) + OVERSCAN);
    const firstG = first < last ? this._viewGlobal(first) : -1;
    const lastG = first < last ? this._viewGlobal(last - 1) : -1;
    const key = `${first}:${last}:${firstG}:${lastG}:${this._gen}`;
    if (key !== this._rendered) {
      this._rendered = key;
      const old = this._rowMap;
      const fresh = new Map();
      const els = new Array(last - first);
      const todo = [];
      for (let k = first; k < last; k++) {
        const g = this._viewGlobal(k);
        const el = old.get(g);
        if (el && el._gen === this._gen) {
          old.delete(g);
          els[k - first] = el;
          fresh.set(g, el);
        } else todo.push(k);
      }
      const spare = [...old.values()];
      for (const k of todo) {
        const g = this._viewGlobal(k);
        const el = spare.pop() || document.createElement("div");
        this._fillRow(el, this._line(g), g);
        els[k - first] = el;
        fresh.set(g, el);
      }
      this._rowMap = fresh;
      ui.rows.style.transform = `translateY(${first * rh}px)`;
      ui.rows.replaceChildren(...els);
    }
    ui.empty.hidden = n > 0;
    if (n === 0) {
      ui.empty.textContent = this._selected !== null && this._lines.length
        ? "No lines for this job yet."
        : this._ended ? "This workflow has no log lines." : "Waiting for log lines\u2026";
    }
    ui.jump.hidden = this._following;
    if (!this._following) {
      const fresh = this._newWhilePaused;
      ui.jump.textContent = fresh ? `Jump to latest (${fresh.toLocaleString()} new)` : "Jump to latest";
    }
  }

  _fillRow(el, line, g) {
    el._gen = this._gen;
    let cls = line.err ? "row err" : "row";
    const current = this._current >= 0 && this._matches[this._current] === g;
    if (current) cls += " current";
    el.className = cls;
    el.dataset.id = line.id;
    const parts = [];
    if (this._timestamps) {
      const ts = span("ts", formatTime(line.ts));
      ts.title = String(line.ts ?? "");
      parts.push(ts);
    }
    if (this._selected === null && this._jobList.length > 1) {
      const j = span("jobcol", line.job.short);
      j.title = line.job.label;
      parts.push(j);
    }
    const { segs, plain } = parseMessage(line.msg);
    const hits = this._query ? ranges(plain.toLowerCase(), this._query) : [];
    let pos = 0;
    let h = 0; // hits: [start0, end0, start1, end1, ...], sorted, not overlapping
    for (const [text, scls, style] of segs) {
      const end = pos + text.length;
      for (let at = pos; at < end; ) {
        while (h < hits.length && hits[h + 1] <= at) h += 2;
        const inMatch = h < hits.length && hits[h] <= at;
        const stop = Math.min(end, h < hits.length ? hits[inMatch ? h + 1 : h] : end);
        const piece = text.slice(at - pos, stop - pos);
        let node;
        if (scls || style) {
          node = span(scls, piece);
          if (style) for (const prop in style) node.style.setProperty(prop, style[prop]);
        } else node = document.createTextNode(piece);
        if (inMatch) {
          const mark = document.createElement("mark");
          mark.setAttribute("part", "match");
          mark.append(node);
          node = mark;
        }
        parts.push(node);
        at = stop;
      }
      pos = end;
    }
    if (line.tr) parts.push(span("trunc", " [truncated]"));
    el.replaceChildren(...parts);
  }

  _renderWorkflowStatus() {
    const ui = this._ui;
    const s = this._workflowStatus;
    if (!s) {
      ui.wfStatus.replaceChildren();
      return;
    }
    ui.wfStatus.dataset.status = s;
    const b = document.createElement("b");
    b.textContent = s;
    ui.wfStatus.replaceChildren("Workflow ", b);
  }

  // ---- jobs list ----

  _rebuildJobsUi() {
    this._ui.jobs.replaceChildren();
    this._allTab = null;
    this._jobsUiStale = true;
  }

  _makeTab(job) {
    const b = document.createElement("button");
    b.type = "button";
    b.className = "job";
    b.setAttribute("role", "tab");
    b.setAttribute("part", "job");
    b.setAttribute("aria-controls", "viewport");
    b.append(span("job-name", ""), span("job-count", ""), span("job-status", ""));
    b.addEventListener("click", () => this._select(job ? job.id || job.step || job.key : null, true));
    return b;
  }

  /* A job's tab: its step, and its short job id when another job has the same step. */
  _tabName(job) {
    if (!job.step || !job.id) return job.label;
    const twin = this._jobList.some((j) => j !== job && j.step === job.step);
    return twin ? `${job.label} \u00b7 ${job.id.replace(/^reana-run-job-/, "").slice(0, 8)}` : job.label;
  }

  _renderJobs() {
    const ui = this._ui;
    if (this._jobsUiStale) {
      this._jobsUiStale = false;
      if (!this._allTab) {
        this._allTab = this._makeTab(null);
        this._allTab.firstChild.textContent = "All jobs";
        ui.jobs.append(this._allTab);
      }
      for (const job of this._jobList) {
        if (!job.el) {
          job.el = this._makeTab(job);
          ui.jobs.append(job.el);
          this._dirtyJobs.add(job);
        }
      }
      this._allTabDirty = true;
      // a job column only helps when there is more than one job
      this._gen++;
    }
    if (this._allTabDirty || this._dirtyJobs.size) {
      const all = this._allTab;
      const allSel = this._selected === null;
      all.setAttribute("aria-selected", String(allSel));
      all.children[1].textContent = this.lineCount.toLocaleString();
      this._allTabDirty = false;
      let focusable = allSel ? all : null;
      for (const job of this._dirtyJobs) {
        const el = job.el;
        if (!el) continue;
        el.children[0].textContent = this._tabName(job);
        el.title = job.id && job.step ? `${job.step} (${job.id})` : job.label;
        el.children[1].textContent = job.count.toLocaleString();
        el.children[2].textContent = job.status || "";
        if (job.status) el.dataset.status = job.status;
        el.setAttribute("aria-selected", String(!allSel && job.selected));
      }
      this._dirtyJobs.clear();
      if (!focusable) focusable = this._jobList.find((j) => j.selected && j.el)?.el || all;
      for (const el of ui.jobs.children) el.tabIndex = el === focusable ? 0 : -1;
    }
    this._allTabDirty = false;
  }

  // ---- search ----

  _setQuery(raw) {
    const q = raw.trim().toLowerCase();
    if (q === this._query) return;
    this._query = q;
    this._restartSearch();
    this._gen++;
    this._schedule();
  }

  _restartSearch() {
    this._matches = [];
    this._scanPos = 0;
    this._current = -1;
    this._jumpToFirstMatch = this._query !== "";
    this._updateMatches();
  }

  _scan(budget) {
    const q = this._query;
    if (!q) return;
    const n = this._viewLength();
    if (this._scanPos >= n) return;
    const t0 = performance.now();
    let k = this._scanPos;
    while (k < n) {
      const g = this._viewGlobal(k);
      const msg = this._line(g).msg;
      const text = msg.includes("\x1b") || SPECIAL.test(msg) ? plainText(msg) : msg;
      if (text.toLowerCase().includes(q)) this._matches.push(g);
      k++;
      if ((k & 255) === 0 && performance.now() - t0 > budget) break;
    }
    this._scanPos = k;
    if (k < n) this._schedule();
    if (this._jumpToFirstMatch && this._matches.length) {
      this._jumpToFirstMatch = false;
      this._gotoMatch(0, true);
    }
    this._updateMatches();
  }

  _updateMatches() {
    const ui = this._ui;
    const n = this._matches.length;
    const scanning = this._query && this._scanPos < this._viewLength();
    let text = "";
    if (this._query) {
      if (!n) text = scanning ? "Searching\u2026" : "No matches";
      else text = `${this._current >= 0 ? (this._current + 1).toLocaleString() : "\u2013"} / ${n.toLocaleString()}${scanning ? "+" : ""}`;
    }
    if (text !== this._matchesText) {
      this._matchesText = text;
      ui.matches.textContent = text;
    }
    ui.prev.disabled = ui.next.disabled = n === 0;
  }

  _gotoMatch(delta, first = false) {
    const n = this._matches.length;
    if (!n) return;
    if (first) this._current = 0;
    else if (this._current < 0) this._current = delta > 0 ? 0 : n - 1;
    else this._current = (this._current + delta + n) % n;
    const pos = this._viewPos(this._matches[this._current]);
    const vp = this._ui.viewport;
    const rh = this._rh || 20;
    vp.scrollTop = Math.max(0, pos * rh - (vp.clientHeight - rh) / 2);
    this._programmaticTop = vp.scrollTop;
    // stop following unless the match is on the last screen anyway
    this._following = vp.scrollTop + vp.clientHeight >= this._viewLength() * rh - 1;
    this._gen++;
    this._updateMatches();
    this._schedule();
  }

  // ---- accessibility ----

  _announce() {
    if (!this._unannounced) return;
    if (!this._following) {
      this._unannounced = 0; // the jump button counts them
      return;
    }
    const wait = this._lastAnnounce + ANNOUNCE_EVERY_MS - performance.now();
    if (wait > 0) {
      if (!this._announceTimer) {
        this._announceTimer = setTimeout(() => {
          this._announceTimer = 0;
          this._announce();
        }, wait);
      }
      return;
    }
    const n = this._unannounced;
    this._unannounced = 0;
    this._lastAnnounce = performance.now();
    const k = this._viewLength() - 1;
    const last = k >= 0 ? plainText(this._line(this._viewGlobal(k)).msg).slice(0, 160) : "";
    this._ui.announcer.textContent = `${n.toLocaleString()} new log line${n === 1 ? "" : "s"}. Last: ${last}`;
  }

  // ---- UI wiring ----

  _updateDownload() {
    const a = this._ui.download;
    const url = this._readUrl();
    if (!url) {
      a.hidden = true;
      a.removeAttribute("href");
      return;
    }
    url.searchParams.set("format", "text");
    url.searchParams.delete("job");
    let name = "workflow";
    const m = url.pathname.match(/workflows\/([^/]+)\/logs/);
    if (m) name = decodeURIComponent(m[1]);
    if (this._selected !== null && this._selected !== ENGINE_KEY) {
      url.searchParams.append("job", this._selected);
      name += "-" + this._selected;
    } else if (this._selected === ENGINE_KEY) {
      url.searchParams.set("kind", "workflow");
      name += "-engine";
    }
    a.href = url.href;
    a.download = `${name}.log`.replace(/[^\w.-]+/g, "_");
    a.textContent = this._selected === null ? "Download full log" : "Download job log";
    a.hidden = false;
  }

  _wire() {
    const ui = this._ui;
    ui.viewport.addEventListener("scroll", () => {
      const vp = ui.viewport;
      const gap = vp.scrollHeight - vp.scrollTop - vp.clientHeight;
      if (gap <= Math.max(2, (this._rh || 20) / 2)) {
        if (!this._following) {
          this._following = true;
          this._newWhilePaused = 0;
        }
      } else if (Math.abs(vp.scrollTop - this._programmaticTop) > 2) {
        this._following = false; // the user scrolled up: stop following
      }
      this._schedule();
    }, { passive: true });
    ui.viewport.addEventListener("keydown", (e) => {
      if (e.key === "/" && !e.ctrlKey && !e.metaKey && !e.altKey) {
        e.preventDefault();
        ui.search.focus();
      } else if (e.key === "End" && !e.shiftKey) {
        e.preventDefault();
        this.jumpToLatest();
      }
    });
    ui.jump.addEventListener("click", () => {
      this.jumpToLatest();
      ui.viewport.focus({ preventScroll: true });
    });
    let debounce = 0;
    ui.search.addEventListener("input", () => {
      clearTimeout(debounce);
      debounce = setTimeout(() => this._setQuery(ui.search.value), 150);
    });
    ui.search.addEventListener("keydown", (e) => {
      if (e.key === "Enter") {
        e.preventDefault();
        clearTimeout(debounce);
        if (ui.search.value.trim().toLowerCase() !== this._query) this._setQuery(ui.search.value);
        else this._gotoMatch(e.shiftKey ? -1 : 1);
      } else if (e.key === "Escape") {
        ui.search.value = "";
        this._setQuery("");
      }
    });
    ui.next.addEventListener("click", () => this._gotoMatch(1));
    ui.prev.addEventListener("click", () => this._gotoMatch(-1));
    ui.tsToggle.addEventListener("change", () => {
      this.toggleAttribute("timestamps", ui.tsToggle.checked);
    });
    ui.jobs.addEventListener("keydown", (e) => {
      const tabs = [...ui.jobs.children];
      const at = tabs.indexOf(this._root().activeElement);
      if (at < 0) return;
      let to = -1;
      if (e.key === "ArrowDown" || e.key === "ArrowRight") to = Math.min(tabs.length - 1, at + 1);
      else if (e.key === "ArrowUp" || e.key === "ArrowLeft") to = Math.max(0, at - 1);
      else if (e.key === "Home") to = 0;
      else if (e.key === "End") to = tabs.length - 1;
      if (to < 0) return;
      e.preventDefault();
      tabs[to].focus();
      tabs[to].click();
    });
  }

  _root() { return this.shadowRoot; }
}

if (!customElements.get("reana-live-log")) customElements.define("reana-live-log", ReanaLiveLog);
