// CloudRemoteControl dashboard: one ES module, no framework, no build step.
// Every piece of data is written with textContent / createTextNode / setAttribute, never as HTML.

const TOKEN_KEY = "crc.token";
const MAX_EVENTS = 500;
const MAX_OUTPUT_CHARS = 200_000; // per order, in the live output panel
const RESULTS_LIMIT = 50;
const SVG_NS = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);

const state = {
  token: "",
  me: null,
  scenario: "", // the scenario shown
  generation: 0, // bumps when the shown scenario changes, so late answers for an older one are dropped
  machines: [], // from GET /v1/scenarios/{name}
  steps: new Map(), // machine id or name -> text of its current step
  commands: new Map(), // order id -> command text (from command_queued)
  plans: [],
  cursor: 0, // last event cursor seen: the WebSocket resumes from it
  ws: null,
  backoff: 500,
  reconnectTimer: 0,
  outputs: new Map(), // order id -> {section, pre, size}
};

// ---------- helpers ----------

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = String(value);
    else if (key === "class") node.className = value;
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function svg(tag, attrs = {}) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, String(value));
  return node;
}

function showError(message) {
  const box = $("error");
  box.textContent = message || "";
  box.hidden = !message;
}

function formatTime(ts) {
  if (ts === null || ts === undefined || ts === "") return "—";
  const date = new Date(Number(ts) * 1000);
  if (Number.isNaN(date.getTime())) return String(ts);
  return date.toLocaleTimeString([], { hour12: false });
}

function formatAgo(ts) {
  if (ts === null || ts === undefined) return "never";
  const seconds = Math.max(0, Math.round(Date.now() / 1000 - Number(ts)));
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.round(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.round(seconds / 3600)} h ago`;
  return new Date(Number(ts) * 1000).toLocaleString();
}

function formatBytes(n) {
  if (typeof n !== "number" || !Number.isFinite(n)) return "";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024;
    i += 1;
  }
  return `${n >= 10 || i === 0 ? Math.round(n) : n.toFixed(1)} ${units[i]}`;
}

function compact(value, max = 160) {
  if (value === null || value === undefined) return "";
  let text;
  if (typeof value === "string") text = value;
  else {
    try {
      text = JSON.stringify(value);
    } catch {
      text = String(value);
    }
  }
  if (text === "{}" || text === "[]") return "";
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function safeId(text) {
  return String(text).replace(/[^A-Za-z0-9_.:-]/g, "_");
}

// ---------- REST ----------

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(path, { method = "GET", body, token = state.token } = {}) {
  const headers = { Accept: "application/json" };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(new URL(path, document.baseURI), {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
      credentials: "omit",
    });
  } catch (exc) {
    throw new ApiError(0, "network", `cannot reach the hub: ${exc.message || exc}`);
  }
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error ? data.error : {};
    throw new ApiError(
      response.status,
      error.code || `http_${response.status}`,
      error.message || `${response.status} ${response.statusText}`,
    );
  }
  return data;
}

const scenarioPath = (name, rest = "") => `v1/scenarios/${encodeURIComponent(name)}${rest}`;

// Coalesces refreshes: many events in a burst (a replay) cause one fetch, and one more if any came meanwhile.
class Refresher {
  constructor(load, delay = 150) {
    this.load = load;
    this.delay = delay;
    this.timer = 0;
    this.running = false;
    this.again = false;
  }

  schedule() {
    if (this.running) {
      this.again = true;
      return;
    }
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.run(), this.delay);
  }

  async run() {
    this.running = true;
    try {
      await this.load();
    } catch (exc) {
      if (exc instanceof ApiError && exc.status === 401) signOut(exc.message);
      else console.warn("refresh failed", exc);
    } finally {
      this.running = false;
      if (this.again) {
        this.again = false;
        this.schedule();
      }
    }
  }

  cancel() {
    clearTimeout(this.timer);
    this.again = false;
  }
}

// ---------- sign in / out ----------

async function signIn(token) {
  token = token.trim();
  if (!token) {
    showError("Paste an access token first.");
    return;
  }
  let me;
  try {
    me = await api("v1/me", { token });
  } catch (exc) {
    const reason = exc.status === 401 ? `the hub refused this token: ${exc.message}` : exc.message;
    showError(`Sign-in failed: ${reason}`);
    sessionStorage.removeItem(TOKEN_KEY);
    return;
  }
  showError("");
  state.token = token;
  state.me = me;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  $("signin").hidden = true;
  $("app").hidden = false;
  $("who").hidden = false;
  const scope = me.scenario ? `scenario ${me.scenario}` : "all scenarios";
  $("whoami").textContent = `${me.role} · ${scope} · token ${me.token}`;
  applyRole();
  await loadScenarios();
  route();
}

function signOut(message = "") {
  closeScenario();
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  state.me = null;
  $("app").hidden = true;
  $("who").hidden = true;
  $("signin").hidden = false;
  $("scenario-list").replaceChildren();
  showError(message ? `Signed out: ${message}` : "");
}

function isOperator() {
  return Boolean(state.me && state.me.role === "operator");
}

function applyRole() {
  const operator = isOperator();
  $("command-fields").disabled = !operator;
  $("command-note").hidden = operator;
  $("command-form").setAttribute("aria-disabled", String(!operator));
}

// ---------- scenarios ----------

async function loadScenarios() {
  let data;
  try {
    data = await api("v1/scenarios");
  } catch (exc) {
    if (exc.status === 401) return signOut(exc.message);
    showError(`Cannot list scenarios: ${exc.message}`);
    return;
  }
  const list = $("scenario-list");
  const items = (data.scenarios || []).map((sc) =>
    el(
      "li",
      {},
      el("a", {
        href: `#/scenario/${encodeURIComponent(sc.name)}`,
        "data-testid": `scenario-link-${sc.name}`,
        "aria-current": sc.name === state.scenario ? "page" : null,
        text: sc.name,
      }),
      el("span", { class: "muted", text: ` ${sc.ready}/${sc.machines} ready` }),
    ),
  );
  list.replaceChildren(...items);
  $("scenario-empty").hidden = items.length > 0;
}

function route() {
  if (!state.token) return;
  const match = /^#\/scenario\/(.+)$/.exec(location.hash);
  let name = "";
  if (match) {
    try {
      name = decodeURIComponent(match[1]);
    } catch {
      name = "";
    }
  } else if (state.me && state.me.scenario) {
    name = state.me.scenario;
  }
  if (!name) {
    closeScenario();
    $("pick").hidden = false;
    return;
  }
  if (name !== state.scenario) openScenario(name);
}

const machinesRefresh = new Refresher(loadMachines);
const resultsRefresh = new Refresher(loadResults, 250);
const plansRefresh = new Refresher(loadPlans, 200);
const scenariosRefresh = new Refresher(loadScenarios, 1000);

function closeScenario() {
  state.generation += 1;
  state.scenario = "";
  disconnectLive();
  for (const refresher of [machinesRefresh, resultsRefresh, plansRefresh]) refresher.cancel();
  state.machines = [];
  state.steps = new Map();
  state.commands = new Map();
  state.plans = [];
  state.cursor = 0;
  state.outputs = new Map();
  $("scenario").hidden = true;
  $("event-log").replaceChildren();
  $("event-count").textContent = "";
  $("output-panel").replaceChildren(el("p", { class: "muted", text: "Output of running commands shows here." }));
  $("results").tBodies[0].replaceChildren();
  $("machines").tBodies[0].replaceChildren();
  $("plans").replaceChildren(el("p", { class: "muted", text: "No plans." }));
  $("command-error").hidden = true;
  $("command-status").textContent = "";
}

async function openScenario(name) {
  closeScenario();
  state.scenario = name;
  const generation = state.generation;
  $("pick").hidden = true;
  $("scenario").hidden = false;
  $("scenario-title").textContent = name;
  document.title = `${name} · CloudRemoteControl`;
  for (const link of $("scenario-list").querySelectorAll("a")) {
    if (link.textContent === name) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
  try {
    await loadMachines();
  } catch (exc) {
    if (generation !== state.generation) return;
    if (exc.status === 401) return signOut(exc.message);
    showError(`Cannot open scenario ${name}: ${exc.message}`);
    $("scenario").hidden = true;
    return;
  }
  if (generation !== state.generation) return;
  showError("");
  connectLive();
  resultsRefresh.run();
  plansRefresh.run();
}

// ---------- machines ----------

async function loadMachines() {
  const name = state.scenario;
  const generation = state.generation;
  if (!name) return;
  const machines = [];
  let after = "";
  for (let page = 0; page < 40; page += 1) {
    const query = after ? `?after=${encodeURIComponent(after)}` : "";
    const data = await api(scenarioPath(name, query));
    if (generation !== state.generation) return;
    machines.push(...(data.machines || []));
    if (!data.more || !machines.length) break;
    after = machines[machines.length - 1].name;
  }
  state.machines = machines;
  renderMachines();
}

function machineFor(key) {
  if (!key) return null;
  return state.machines.find((m) => m.id === key) || state.machines.find((m) => m.name === key) || null;
}

function machineName(key) {
  const machine = machineFor(key);
  return machine ? machine.name : key || "";
}

function factsText(facts) {
  if (!facts || typeof facts !== "object") return "";
  const parts = [];
  const cpus = facts.cpus;
  if (cpus && typeof cpus === "object" && cpus.logical) parts.push(`${cpus.logical} CPU`);
  else if (typeof cpus === "number") parts.push(`${cpus} CPU`);
  const memory = facts.memory_total ?? facts.memory;
  if (typeof memory === "number") parts.push(formatBytes(memory));
  if (facts.os_release) parts.push(String(facts.os_release));
  return parts.join(" · ");
}

function renderMachines() {
  const rows = state.machines.map((m) => {
    const status = String(m.status || "offline");
    const step = state.steps.get(m.id) || state.steps.get(m.name) || "";
    const ips = Array.isArray(m.ips) ? m.ips.join(", ") : "";
    return el(
      "tr",
      { "data-testid": `machine-${m.name}`, "data-status": status },
      el("td", {}, el("span", { class: `badge status-${safeId(status)}`, "data-testid": `status-${m.name}`, text: status })),
      el("th", { scope: "row", text: m.name }),
      el("td", { text: m.role || "" }),
      el("td", { text: m.os || "" }),
      el("td", { class: "mono", text: ips }),
      el("td", { title: m.last_seen ? new Date(m.last_seen * 1000).toLocaleString() : "", text: formatAgo(m.last_seen) }),
      el("td", { text: factsText(m.facts) }),
      el("td", { class: "mono", "data-testid": `step-${m.name}`, text: step }),
    );
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 8, class: "muted", text: "No machines." })));
  $("machines").tBodies[0].replaceChildren(...rows);
}

function setMachineStatus(key, status) {
  const machine = machineFor(key);
  if (!machine) return false;
  machine.status = status;
  return true;
}

// ---------- live events ----------

function liveStatus(text, kind) {
  const node = $("live-status");
  node.textContent = text;
  node.className = `live live-${kind}`;
}

function disconnectLive() {
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = 0;
  if (state.ws) {
    const ws = state.ws;
    state.ws = null;
    ws.onclose = null;
    ws.onmessage = null;
    ws.onerror = null;
    try {
      ws.close(1000, "bye");
    } catch {
      // already closed
    }
  }
  liveStatus("offline", "off");
}

function connectLive() {
  const scenario = state.scenario;
  const generation = state.generation;
  if (!scenario || !state.token) return;
  const url = new URL("v1/live", document.baseURI);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  liveStatus("connecting…", "wait");
  let ws;
  try {
    ws = new WebSocket(url);
  } catch (exc) {
    scheduleReconnect(generation, `cannot open the live connection: ${exc.message || exc}`);
    return;
  }
  state.ws = ws;
  let fatal = false;
  ws.onopen = () => {
    ws.send(JSON.stringify({ token: state.token, scenario, after: state.cursor }));
  };
  ws.onmessage = (message) => {
    if (generation !== state.generation) return;
    let data;
    try {
      data = JSON.parse(message.data);
    } catch {
      return;
    }
    switch (data.type) {
      case "welcome":
        state.backoff = 500;
        liveStatus("live", "on");
        break;
      case "event":
        onEvent(data);
        break;
      case "output":
        onOutput(data);
        break;
      case "error":
        fatal = ["unauthorized", "revoked", "expired", "forbidden", "not_found"].includes(data.code);
        showError(`Live updates: ${data.message || data.code}`);
        break;
      default:
        break;
    }
  };
  ws.onclose = () => {
    if (state.ws !== ws) return;
    state.ws = null;
    if (generation !== state.generation) return;
    if (fatal) {
      liveStatus("stopped", "off");
      return;
    }
    scheduleReconnect(generation);
  };
  ws.onerror = () => {
    // onclose follows and reconnects
  };
}

function scheduleReconnect(generation, message = "") {
  if (generation !== state.generation) return;
  const delay = state.backoff;
  state.backoff = Math.min(state.backoff * 2, 15_000);
  const jittered = Math.round(delay * (0.8 + Math.random() * 0.4));
  liveStatus(`reconnecting in ${Math.max(1, Math.round(jittered / 1000))} s${message ? ` (${message})` : ""}`, "wait");
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = setTimeout(() => {
    if (generation === state.generation) connectLive();
  }, jittered);
}

const shortId = (id) => {
  const text = String(id || "");
  return text.length > 12 ? `${text.slice(0, 8)}…` : text;
};

function eventSummary(event) {
  const d = event.data && typeof event.data === "object" ? event.data : {};
  switch (event.kind) {
    case "boot_step":
      return [d.step, d.status, d.detail].filter(Boolean).join(" · ");
    case "command_queued":
      return `${shortId(d.order_id)} ${d.step ? `step ${d.step}: ` : ""}${d.sealed ? `sealed ${d.kind || ""}` : compact(d.command, 120) || d.kind || ""}`;
    case "command_finished":
      return `${shortId(d.order_id)} ${d.status || ""}${d.exit_code !== undefined && d.exit_code !== null ? ` exit ${d.exit_code}` : ""}`;
    case "plan_step":
      return `plan ${shortId(d.plan)} step ${d.name || d.step || ""}: ${d.state || ""}`;
    case "plan_finished":
      return `plan ${shortId(d.plan)}: ${d.outcome || ""}`;
    case "machine_ready":
      return factsText(d.facts || d);
    case "machines_added":
      return `joined: ${Array.isArray(d.machines) ? d.machines.join(", ") : ""}`;
    case "composition_assigned":
      return `job ${d.job || ""}${d.version ? ` v${d.version}` : ""} assigned to ${d.target || ""}` +
        (Array.isArray(d.members) && d.members.length ? `, queued for ${d.members.join(", ")}` : "");
    case "composition_unassigned":
      return `job ${d.job || ""} unassigned (composition ${shortId(d.composition)})`;
    default: {
      const shown = { ...d };
      for (const key of ["order_id", "plan"]) if (typeof shown[key] === "string") shown[key] = shortId(shown[key]);
      return compact(shown);
    }
  }
}

function stepFromEvent(event) {
  const d = event.data && typeof event.data === "object" ? event.data : {};
  switch (event.kind) {
    case "boot_step":
      return `boot: ${[d.step, d.status].filter(Boolean).join(" ")}`;
    case "plan_step":
      return `plan step ${d.name || d.step || ""}: ${d.state || ""}`;
    case "command_queued":
      return `${d.step ? `step ${d.step}: ` : ""}${compact(d.command, 60) || d.kind || "command"} (queued)`;
    case "command_delivered":
    case "command_started": {
      const command = state.commands.get(d.order_id);
      return `${command ? `${compact(command, 60)} → ` : ""}${event.kind === "command_started" ? "running" : "delivered"}`;
    }
    case "command_finished": {
      const command = state.commands.get(d.order_id);
      const exit = d.exit_code !== undefined && d.exit_code !== null ? ` exit ${d.exit_code}` : "";
      return `${command ? `${compact(command, 60)} → ` : ""}${d.status || "finished"}${exit}`;
    }
    default:
      return null;
  }
}

const STATUS_BY_KIND = {
  machine_connected: "connected",
  machine_ready: "ready",
  machine_offline: "offline",
  machine_revoked: "revoked",
};

function onEvent(event) {
  const cursor = Number(event.cursor);
  if (Number.isFinite(cursor)) {
    if (cursor <= state.cursor) return; // already seen (a replay overlapping what we have)
    state.cursor = cursor;
  }
  appendEvent(event);
  const d = event.data && typeof event.data === "object" ? event.data : {};
  if (event.kind === "command_queued" && d.order_id) {
    state.commands.set(d.order_id, `${d.step ? `step ${d.step}: ` : ""}${d.command || d.kind || ""}`);
  }

  let machinesChanged = false;
  const step = stepFromEvent(event);
  if (step !== null && event.machine) {
    const machine = machineFor(event.machine);
    state.steps.set(machine ? machine.id : event.machine, step);
    machinesChanged = true;
  }
  if (event.kind in STATUS_BY_KIND) {
    if (setMachineStatus(event.machine, STATUS_BY_KIND[event.kind])) machinesChanged = true;
    if (event.kind === "machine_ready" && d.facts) {
      const machine = machineFor(event.machine);
      if (machine) machine.facts = d.facts;
    }
    machinesRefresh.schedule();
    scenariosRefresh.schedule();
  }
  if (event.kind === "machines_added") scenariosRefresh.schedule();
  if (
    event.kind === "machine_key_rotated" ||
    event.kind === "machines_added" ||
    (event.machine && !machineFor(event.machine))
  ) {
    machinesRefresh.schedule();
  }
  if (machinesChanged) renderMachines();

  if (event.kind === "command_finished") {
    markOutputFinished(d);
    resultsRefresh.schedule();
  }
  if (event.kind === "command_queued") resultsRefresh.schedule();
  if (event.kind === "plan_step") {
    applyPlanStep(d);
    plansRefresh.schedule();
  }
  if (event.kind === "plan_finished") {
    const plan = state.plans.find((p) => p.id === d.plan);
    if (plan && !plan.done) {
      plan.done = true;
      plan.outcome = d.outcome;
      renderPlans();
    }
  }
  if (event.kind === "plan_finished" || (event.kind === "command_queued" && d.plan)) plansRefresh.schedule();
}

function appendEvent(event) {
  const log = $("event-log");
  const atBottom = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  const row = el(
    "li",
    { "data-cursor": event.cursor, "data-kind": event.kind, class: `kind-${safeId(event.kind)}` },
    el("span", { class: "cursor", text: `#${event.cursor}` }),
    el("time", { text: formatTime(event.ts) }),
    el("span", { class: "kind", text: event.kind }),
    el("span", { class: "machine", text: machineName(event.machine) }),
    el("span", { class: "detail", text: eventSummary(event), title: compact(event.data, 2000) }),
  );
  log.append(row);
  while (log.childElementCount > MAX_EVENTS) log.firstElementChild.remove();
  $("event-count").textContent = `(last #${state.cursor})`;
  if (atBottom) log.scrollTop = log.scrollHeight;
}

// ---------- live output ----------

function onOutput(message) {
  const panel = $("output-panel");
  const orderId = String(message.order_id || "");
  let entry = state.outputs.get(orderId);
  if (!entry) {
    const empty = $("output-empty");
    if (empty) empty.remove();
    for (const p of panel.querySelectorAll("p.muted")) p.remove();
    const status = el("span", { class: "order-status", text: "running" });
    const header = el(
      "header",
      {},
      el("strong", { text: machineName(message.machine) }),
      el("span", { class: "mono muted", text: ` ${orderId}` }),
      " ",
      status,
    );
    const command = state.commands.get(orderId);
    const pre = el("pre", { "data-testid": `output-text-${orderId}` });
    const section = el(
      "section",
      { class: "output", "data-testid": `output-${orderId}`, "data-machine": machineName(message.machine) },
      header,
      command ? el("div", { class: "mono muted command", text: `$ ${command}` }) : null,
      pre,
    );
    panel.append(section);
    entry = { section, pre, status, size: 0 };
    state.outputs.set(orderId, entry);
  }
  const text = typeof message.data === "string" ? message.data : String(message.data ?? "");
  const chunk = message.stream === "stderr" ? el("span", { class: "stderr", text }) : document.createTextNode(text);
  const atBottom = entry.pre.scrollHeight - entry.pre.scrollTop - entry.pre.clientHeight < 30;
  entry.pre.append(chunk);
  entry.size += text.length;
  while (entry.size > MAX_OUTPUT_CHARS && entry.pre.firstChild) {
    entry.size -= entry.pre.firstChild.textContent.length;
    entry.pre.firstChild.remove();
  }
  if (atBottom) entry.pre.scrollTop = entry.pre.scrollHeight;
}

function markOutputFinished(d) {
  const entry = state.outputs.get(String(d.order_id || ""));
  if (!entry) return;
  const exit = d.exit_code !== undefined && d.exit_code !== null ? ` (exit ${d.exit_code})` : "";
  entry.status.textContent = `${d.status || "finished"}${exit}`;
  entry.section.classList.add("finished");
}

// ---------- results ----------

async function loadResults() {
  const name = state.scenario;
  const generation = state.generation;
  if (!name) return;
  const data = await api(scenarioPath(name, `/results?limit=${RESULTS_LIMIT}`));
  if (generation !== state.generation) return;
  const rows = (data.results || []).map((r) => {
    const output = el("div", { class: "result-output" });
    if (r.sealed) output.append(el("span", { class: "sealed", "data-testid": "result-sealed", text: "sealed: only its master reads it" }));
    if (r.stdout) output.append(el("pre", { class: "stdout", "data-testid": "result-stdout", text: compact(r.stdout, 4000) }));
    if (r.stderr) output.append(el("pre", { class: "stderr", "data-testid": "result-stderr", text: compact(r.stderr, 4000) }));
    const exit = r.exit_code === null || r.exit_code === undefined ? "" : String(r.exit_code);
    return el(
      "tr",
      { "data-testid": `result-${r.order_id}`, "data-order": r.order_id, "data-state": r.state },
      el("td", { text: formatTime(r.updated || r.created), title: r.order_id }),
      el("td", { text: machineName(r.machine) }),
      el("td", { class: "mono", text: `${r.plan_step ? `step ${r.plan_step}: ` : ""}${r.command || r.kind || ""}` }),
      el("td", {}, el("span", { class: `badge state-${safeId(r.state)}`, "data-testid": "result-state", text: r.state })),
      el("td", { class: "mono", "data-testid": "result-exit", text: exit }),
      el("td", {}, output),
    );
  });
  if (rows.length === 0) rows.push(el("tr", {}, el("td", { colspan: 6, class: "muted", text: "No results yet." })));
  $("results").tBodies[0].replaceChildren(...rows);
}

// ---------- plans ----------

async function loadPlans() {
  const name = state.scenario;
  const generation = state.generation;
  if (!name) return;
  const data = await api(scenarioPath(name, "/plans"));
  if (generation !== state.generation) return;
  state.plans = data.plans || [];
  renderPlans();
}

function applyPlanStep(d) {
  const plan = state.plans.find((p) => p.id === d.plan || p.name === d.plan);
  if (!plan) return;
  const step = (plan.steps || []).find((s) => s.id === d.step || s.name === d.step);
  if (!step || !d.state) return;
  step.state = d.state;
  renderPlans();
}

function layoutPlan(steps) {
  const byId = new Map(steps.map((s) => [s.id, s]));
  const depth = new Map();
  const visiting = new Set();
  const depthOf = (id) => {
    if (depth.has(id)) return depth.get(id);
    if (visiting.has(id)) return 0; // a cycle (refused by the hub anyway)
    visiting.add(id);
    const step = byId.get(id);
    const deps = (step && step.depends_on) || [];
    let d = 0;
    for (const dep of deps) if (byId.has(dep)) d = Math.max(d, depthOf(dep) + 1);
    visiting.delete(id);
    depth.set(id, d);
    return d;
  };
  const columns = [];
  for (const step of steps) {
    const d = depthOf(step.id);
    (columns[d] ||= []).push(step);
  }
  return { columns, depth };
}

function renderPlan(plan, index) {
  const steps = plan.steps || [];
  const { columns } = layoutPlan(steps);
  const W = 150;
  const H = 46;
  const GX = 60;
  const GY = 18;
  const PAD = 10;
  const position = new Map();
  let rows = 0;
  columns.forEach((column, c) => {
    (column || []).forEach((step, r) => {
      position.set(step.id, { x: PAD + c * (W + GX), y: PAD + r * (H + GY) });
      rows = Math.max(rows, r + 1);
    });
  });
  const width = PAD * 2 + Math.max(1, columns.length) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, rows) * (H + GY) - GY;
  const markerId = `arrow-${index}`;
  const graph = svg("svg", {
    viewBox: `0 0 ${width} ${height}`,
    width,
    height,
    role: "img",
    class: "plan-graph",
    "aria-label": `plan ${plan.name || plan.id}: ${steps.map((s) => `${s.name || s.id} ${s.state}`).join(", ")}`,
  });
  const defs = svg("defs");
  const marker = svg("marker", {
    id: markerId,
    viewBox: "0 0 10 10",
    refX: 10,
    refY: 5,
    markerWidth: 8,
    markerHeight: 8,
    orient: "auto-start-reverse",
  });
  marker.append(svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow-head" }));
  defs.append(marker);
  graph.append(defs);
  for (const step of steps) {
    const to = position.get(step.id);
    for (const dep of step.depends_on || []) {
      const from = position.get(dep);
      if (!from || !to) continue;
      const x1 = from.x + W;
      const y1 = from.y + H / 2;
      const x2 = to.x - 2;
      const y2 = to.y + H / 2;
      const mid = (x1 + x2) / 2;
      graph.append(
        svg("path", {
          d: `M ${x1} ${y1} C ${mid} ${y1}, ${mid} ${y2}, ${x2} ${y2}`,
          class: "edge",
          "marker-end": `url(#${markerId})`,
        }),
      );
    }
  }
  for (const step of steps) {
    const at = position.get(step.id);
    if (!at) continue;
    const stateName = String(step.state || "pending");
    const group = svg("g", {
      class: `step state-${safeId(stateName)}`,
      transform: `translate(${at.x} ${at.y})`,
      "data-testid": `plan-step-${step.id}`,
      "data-state": stateName,
    });
    const title = svg("title");
    title.textContent = `${step.name || step.id} → ${step.target || ""}: ${stateName}`;
    group.append(title);
    group.append(svg("rect", { width: W, height: H, rx: 6, ry: 6 }));
    const label = svg("text", { x: W / 2, y: 19, "text-anchor": "middle", class: "step-name" });
    const name = String(step.name || step.id);
    label.textContent = name.length > 20 ? `${name.slice(0, 19)}…` : name;
    const sub = svg("text", { x: W / 2, y: 36, "text-anchor": "middle", class: "step-state" });
    sub.textContent = stateName;
    group.append(label, sub);
    graph.append(group);
  }
  const failed = steps.some((s) => s.state === "failed" || s.state === "timed_out");
  const cancelled = steps.some((s) => s.state === "cancelled");
  const outcome = plan.outcome || (failed ? "failed" : cancelled ? "cancelled" : "succeeded");
  const done = plan.done ? outcome : "running";
  return el(
    "figure",
    { class: "plan", "data-testid": `plan-${plan.id}`, "data-done": String(Boolean(plan.done)) },
    el(
      "figcaption",
      {},
      el("strong", { text: plan.name || plan.id }),
      el("span", { class: "muted mono", text: ` ${plan.id} · ` }),
      el("span", { class: `badge state-${safeId(done)}`, "data-testid": "plan-status", text: done }),
    ),
    el("div", { class: "scroll" }, graph),
  );
}

function renderPlans() {
  const area = $("plans");
  if (state.plans.length === 0) {
    area.replaceChildren(el("p", { class: "muted", text: "No plans." }));
    return;
  }
  area.replaceChildren(...state.plans.map((plan, i) => renderPlan(plan, i)));
}

// ---------- commands ----------

async function submitCommand(event) {
  event.preventDefault();
  const errorBox = $("command-error");
  const status = $("command-status");
  errorBox.hidden = true;
  errorBox.textContent = "";
  if (!isOperator()) {
    errorBox.textContent = "viewer tokens can only read";
    errorBox.hidden = false;
    return;
  }
  const target = $("command-target").value.trim() || "all";
  const command = $("command-text").value;
  const timeoutText = $("command-timeout").value.trim();
  const timeout = timeoutText ? Number(timeoutText) : null;
  if (!command.trim()) {
    errorBox.textContent = "Type a command to run.";
    errorBox.hidden = false;
    return;
  }
  const button = $("command-form").querySelector("button[type=submit]");
  button.disabled = true;
  status.textContent = "sending…";
  try {
    const data = await api(scenarioPath(state.scenario, "/commands"), {
      method: "POST",
      body: { target, command, timeout },
    });
    const orders = data.orders || [];
    for (const order of orders) state.commands.set(order.order_id, command);
    status.textContent = `queued ${orders.length} order${orders.length === 1 ? "" : "s"}: ${orders
      .map((o) => `${machineName(o.machine)} (${o.order_id})`)
      .join(", ")}`;
    resultsRefresh.schedule();
  } catch (exc) {
    status.textContent = "";
    errorBox.textContent = `${exc.code}: ${exc.message}`;
    errorBox.hidden = false;
    if (exc.status === 401) signOut(exc.message);
  } finally {
    button.disabled = false;
  }
}

// ---------- start ----------

function start() {
  $("signin-form").addEventListener("submit", (event) => {
    event.preventDefault();
    signIn($("token").value);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("command-form").addEventListener("submit", submitCommand);
  window.addEventListener("hashchange", route);
  // Relative times ("12 s ago") stay current.
  setInterval(() => {
    if (state.scenario && state.machines.length) renderMachines();
  }, 10_000);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) signIn(saved);
}

start();
