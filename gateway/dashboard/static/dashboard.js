/* The spend dashboard: a thin client of the admin API (/api/client/v1).
 *
 * The tenant key lives in sessionStorage only and goes out as an Authorization header; it is
 * never put in a URL. Everything from the API is rendered with textContent (never parsed as
 * markup), and every rule (who may edit, what a valid budget is, how much is used) is the
 * API's: this file shows what the API answers.
 */
"use strict";

(function () {
  const API = "/api/client/v1";
  const KEY_STORE = "gateway.dashboard.key";
  const POLL_MS = 5000;
  const MAX_PERIODS = 744;  // bars in the chart at most: 31 days of hours
  const LIMITS = ["max_tokens_per_hour", "max_tokens_per_day", "max_cost_per_hour",
                  "max_cost_per_day", "max_cost_per_month"];
  const FORM_FIELDS = ["name", ...LIMITS, "alert_threshold", "action", "max_wait_s", "key",
                       "model", "domain"];
  const LIMIT_NAMES = {
    max_tokens_per_hour: "Tokens per hour", max_tokens_per_day: "Tokens per day",
    max_cost_per_hour: "Cost per hour", max_cost_per_day: "Cost per day",
    max_cost_per_month: "Cost per month",
  };
  const COLOURS = ["#0b5cad", "#d4622b", "#2e8540", "#8a3ffc", "#b28600", "#007d79",
                   "#c2185b", "#5a6872"];

  const $ = (id) => document.getElementById(id);
  const state = { key: null, caller: null, chart: null, timer: null, models: new Set(),
                  editing: null, busy: false, again: false };

  class ApiError extends Error {
    constructor(status, body) {
      const error = (body && body.error) || {};
      super(error.message || `HTTP ${status}`);
      this.status = status;
      this.param = error.param || null;
      // an invalid budget lists every field at fault: [{param, message}], param null for
      // the budget as a whole
      this.errors = Array.isArray(error.errors) && error.errors.length ? error.errors
        : [{ param: this.param, message: this.message }];
    }
  }

  async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${state.key}` };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(API + path, {
      method: options.method || "GET", headers, cache: "no-store", credentials: "omit",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    if (response.status === 204) return null;
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      if (response.status === 401 && options.method === undefined && state.caller) {
        signOut("The key is no longer accepted; sign in again.");
      }
      throw new ApiError(response.status, body);
    }
    return body;
  }

  // -- formatting -------------------------------------------------------------------------

  const integer = new Intl.NumberFormat("en-US");
  const NANO_DIGITS = 9;  // the store keeps nano-dollars: no amount has more decimals

  /* The page's one money format. Without `digits`, the CLI's rule (gateway/admin/tables.py
   * usd()): four decimals, more for an amount too small to show in four, so a non-zero amount
   * never reads as $0.0000. With `digits`, exactly that many (chart ticks share theirs).
   * Never exponent notation: 6e-5 is $0.0001 here, and $0.00006 with digits = 5. */
  function usd(amount, digits) {
    const value = Number(amount);
    const magnitude = Math.abs(value);
    const tiny = digits === undefined && value !== 0 && magnitude < 0.00005;
    let text = fixed(magnitude, digits === undefined ? (tiny ? NANO_DIGITS : 4) : digits);
    if (tiny) text = text.replace(/0+$/, "");
    const [whole, fraction] = text.split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (value < 0 ? "-$" : "$") + grouped + (fraction === undefined ? "" : `.${fraction}`);
  }
  // `magnitude` to `places` decimals, rounded as Python's format() rounds (the exact binary
  // value, an exact tie to even), so the page and the CLI print the same figure
  function fixed(magnitude, places) {
    const up = magnitude.toFixed(places);  // exact value; a tie goes up
    const exact = magnitude.toFixed(places + 30);
    const point = exact.indexOf(".");
    if (!/^50*$/.test(exact.slice(point + 1 + places))) return up;
    const down = exact.slice(0, places ? point + 1 + places : point);
    return Number(down.slice(-1)) % 2 === 0 ? down : up;
  }
  // the decimals `value` needs to be shown exactly, to the nano-dollar
  function decimalsOf(value) {
    const fraction = Math.abs(Number(value)).toFixed(NANO_DIGITS).split(".")[1];
    return fraction.replace(/0+$/, "").length;
  }
  function duration(seconds) {
    if (seconds < 60) return `${seconds} s`;
    const minutes = Math.ceil(seconds / 60);
    if (minutes < 120) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    if (hours < 48) return `${hours} h ${minutes % 60} min`;
    return `${Math.floor(hours / 24)} d ${hours % 24} h`;
  }
  function setFigure(el, value, text) {
    el.dataset.value = String(value);
    el.textContent = text;
  }
  function el(tag, attrs = {}, text) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // -- sign in and out --------------------------------------------------------------------

  async function signIn(key) {
    state.key = key;
    try {
      state.caller = await api("/me");
    } catch (error) {
      state.key = null;
      state.caller = null;
      throw error;
    }
    sessionStorage.setItem(KEY_STORE, key);
    $("who-text").textContent =
      `Tenant ${state.caller.tenant} · key ${state.caller.key_name} (${state.caller.role}` +
      (state.caller.may_change_budgets ? ")" : ", read-only)");
    $("who").hidden = false;
    $("signin").hidden = true;
    $("app").hidden = false;
    $("new-budget").hidden = !state.caller.may_change_budgets;
    await refresh();
    schedule();
    $("main").focus();
  }

  function signOut(message) {
    sessionStorage.removeItem(KEY_STORE);
    clearTimeout(state.timer);
    state.timer = null;
    state.key = null;
    state.caller = null;
    state.models = new Set();
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    $("models").tBodies[0].replaceChildren();
    $("budgets").replaceChildren();
    closeEditor();
    $("who").hidden = true;
    $("app").hidden = true;
    $("signin").hidden = false;
    $("api-key").value = "";
    $("api-key-error").textContent = message || "";
    $("api-key").focus();
  }

  // -- polling ----------------------------------------------------------------------------

  function schedule() {
    clearTimeout(state.timer);
    state.timer = setTimeout(async () => {
      if (!state.key) return;
      if (!document.hidden) {
        try { await refresh(); } catch (e) { /* shown by refresh */ }
      }
      if (state.key) schedule();
    }, POLL_MS);
  }

  function filters() {
    return { from: $("f-from").value, to: $("f-to").value,
             group_by: $("f-group").value, model: $("f-model").value };
  }
  function queryOf(values) {
    const query = new URLSearchParams();
    for (const [name, value] of Object.entries(values)) if (value) query.set(name, value);
    return query.toString();
  }

  async function refresh() {
    if (!state.key) return;
    if (state.busy) { state.again = true; return; }  // once the one under way is done
    state.busy = true;
    state.again = false;
    try {
      const asked = filters();
      const [report, budgets, status] = await Promise.all([
        api(`/spend/report?${queryOf(asked)}`), api("/budgets"), api("/budgets/status")]);
      $("filters-error").textContent = "";
      renderReport(report, asked);
      renderBudgets(budgets.data, status.budgets);
      $("budgets-error").textContent = "";
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${POLL_MS / 1000} s.`;
    } catch (error) {
      if (error.param === "from" || error.param === "to" || error.param === "group_by") {
        $("filters-error").textContent = error.message;
      } else if (state.key) {
        $("budgets-error").textContent = `Could not refresh: ${error.message}`;
      }
    } finally {
      state.busy = false;
    }
    if (state.again) await refresh();
  }

  // -- spend ------------------------------------------------------------------------------

  function renderReport(report, asked) {
    setFigure($("total-cost"), report.total_cost, usd(report.total_cost));
    setFigure($("total-requests"), report.requests, integer.format(report.requests));
    setFigure($("total-input"), report.total_input_tokens,
              integer.format(report.total_input_tokens));
    setFigure($("total-output"), report.total_output_tokens,
              integer.format(report.total_output_tokens));
    renderModelTable(report.by_model);
    rememberModels(report.by_model.map((m) => m.model_key));
    renderChart(report, asked);
  }

  function renderModelTable(rows) {
    const body = $("models").tBodies[0];
    body.replaceChildren();
    if (rows.length === 0) {
      const row = body.insertRow();
      const cell = row.insertCell();
      cell.colSpan = 5;
      cell.textContent = "No spend in this range.";
      return;
    }
    for (const m of rows) {
      const row = body.insertRow();
      row.dataset.model = m.model_key;
      const name = el("th", { scope: "row" }, m.model_key);
      row.appendChild(name);
      const cells = [["cost", m.cost, usd(m.cost)],
                     ["requests", m.requests, integer.format(m.requests)],
                     ["input_tokens", m.input_tokens, integer.format(m.input_tokens)],
                     ["output_tokens", m.output_tokens, integer.format(m.output_tokens)]];
      for (const [field, value, text] of cells) {
        const cell = el("td", { class: "num", "data-field": field });
        setFigure(cell, value, text);
        row.appendChild(cell);
      }
    }
  }

  function rememberModels(models) {
    const select = $("f-model");
    let added = false;
    for (const model of models) {
      if (!state.models.has(model)) { state.models.add(model); added = true; }
    }
    if (!added) return;
    const chosen = select.value;
    const options = [el("option", { value: "" }, "All models")];
    for (const model of [...state.models].sort()) options.push(el("option", { value: model }, model));
    select.replaceChildren(...options);
    select.value = chosen;
  }

  /* The chart's periods: every hour, day or month of the range, zero where nothing was spent.
   * The range is the one the report was asked for (from and to: whole UTC days); without
   * them, from the first period with spend to the current one. At most MAX_PERIODS bars:
   * past that, the latest ones, and the caption says so (the totals and the table still
   * cover the whole range). */
  function periods(report, asked) {
    const group = report.group_by;
    const spent = report.timeseries.map((p) => p.period);
    const { from, to } = asked;
    const first = from ? truncate(group, parseDay(from))
      : spent.length ? parsePeriod(spent[0]) : null;
    if (first === null) return { labels: [], total: 0 };
    let last = to ? truncate(group, new Date(parseDay(to).getTime() + DAY_MS - HOUR_MS))
      : truncate(group, new Date());
    if (!to && spent.length) {
      const latest = parsePeriod(spent[spent.length - 1]);
      if (latest > last) last = latest;
    }
    if (first > last) return { labels: [], total: 0 };
    const total = between(group, first, last);
    const shown = Math.min(total, MAX_PERIODS);
    const labels = [];
    for (let i = shown - 1; i >= 0; i--) labels.push(periodLabel(group, shift(group, last, -i)));
    return { labels, total };
  }

  const HOUR_MS = 3600 * 1000, DAY_MS = 24 * HOUR_MS;
  function utc(year, month, day, hour) {  // setUTCFullYear: Date.UTC reads 0-99 as 19xx
    const d = new Date(0);
    d.setUTCFullYear(year, month, day);
    d.setUTCHours(hour, 0, 0, 0);
    return d;
  }
  function parseDay(text) {
    const [y, m, d] = text.split("-").map(Number);
    return utc(y, m - 1, d, 0);
  }
  function parsePeriod(text) {  // "2026-05", "2026-05-01" or "2026-05-01T13:00:00Z"
    const [y, m, d] = text.slice(0, 10).split("-").map(Number);
    return utc(y, m - 1, d || 1, text.length > 10 ? Number(text.slice(11, 13)) : 0);
  }
  function truncate(group, d) {
    return utc(d.getUTCFullYear(), d.getUTCMonth(), group === "month" ? 1 : d.getUTCDate(),
               group === "hour" ? d.getUTCHours() : 0);
  }
  function shift(group, d, n) {
    if (group === "month") return utc(d.getUTCFullYear(), d.getUTCMonth() + n, 1, 0);
    return new Date(d.getTime() + n * (group === "hour" ? HOUR_MS : DAY_MS));
  }
  function between(group, a, b) {  // periods from a to b, both included
    if (group === "month") {
      return (b.getUTCFullYear() - a.getUTCFullYear()) * 12 + b.getUTCMonth() - a.getUTCMonth() + 1;
    }
    return Math.round((b - a) / (group === "hour" ? HOUR_MS : DAY_MS)) + 1;
  }
  function periodLabel(group, d) {  // as the spend report names its periods
    const two = (n) => String(n).padStart(2, "0");
    const day = `${String(d.getUTCFullYear()).padStart(4, "0")}-${two(d.getUTCMonth() + 1)}`;
    if (group === "month") return day;
    if (group === "day") return `${day}-${two(d.getUTCDate())}`;
    return `${day}-${two(d.getUTCDate())}T${two(d.getUTCHours())}:00:00Z`;
  }

  function renderChart(report, asked) {
    const { labels, total } = periods(report, asked);
    const byPeriod = new Map(report.timeseries.map((p) => [p.period, p.by_model || []]));
    const models = report.by_model.map((m) => m.model_key);
    const datasets = models.map((model, i) => ({
      label: model,
      backgroundColor: COLOURS[i % COLOURS.length],
      data: labels.map((period) => {
        const found = (byPeriod.get(period) || []).find((m) => m.model_key === model);
        return found ? found.cost : 0;
      }),
    }));
    const unit = report.group_by;
    const caption = $("chart-caption");
    caption.dataset.periods = String(total);
    caption.dataset.shown = String(labels.length);
    caption.textContent = !labels.length ? "No spend in this range."
      : `Cost per ${unit}, stacked by model, ${labels[0]} to ${labels[labels.length - 1]}` +
        (total > labels.length
          ? `: showing the last ${integer.format(labels.length)} of ${integer.format(total)} ` +
            `${unit}s (the chart's limit). The totals and the table cover the whole range; ` +
            "narrow the range or group by a longer period to chart the rest."
          : ".");
    if (typeof window.Chart !== "function") return;  // the table carries the same figures
    if (state.chart) {
      state.chart.data.labels = labels;
      state.chart.data.datasets = datasets;
      state.chart.update("none");
      return;
    }
    state.chart = new window.Chart($("chart"), {
      type: "bar",
      data: { labels, datasets },
      options: {
        animation: false, responsive: true, maintainAspectRatio: false,
        scales: {
          x: { stacked: true },
          y: {
            stacked: true, beginAtZero: true, title: { display: true, text: "USD" },
            // every tick with the decimals the finest one needs: $0.00002, $0.00004, ...
            ticks: { callback: (value, index, ticks) =>
              usd(value, Math.max(...ticks.map((t) => decimalsOf(t.value)))) },
          },
        },
        plugins: {
          legend: { position: "bottom" },
          tooltip: { callbacks: { label: (ctx) => `${ctx.dataset.label}: ${usd(ctx.parsed.y)}` } },
        },
      },
    });
  }

  // -- budgets ----------------------------------------------------------------------------

  function renderBudgets(budgets, statuses) {
    const container = $("budgets");
    const byId = new Map(statuses.map((s) => [s.id, s]));
    const cards = budgets.map((budget) => budgetCard(budget, byId.get(budget.id)));
    if (cards.length === 0) cards.push(el("p", { class: "help" }, "No budgets yet."));
    container.replaceChildren(...cards);
  }

  function budgetCard(budget, status) {
    const card = el("article", { class: "budget", "data-budget-id": budget.id,
                                 "data-source": budget.source });
    const titleId = `budget-${budget.id}`.replace(/[^A-Za-z0-9_-]/g, "_");
    card.setAttribute("aria-labelledby", titleId);
    const head = el("header");
    head.appendChild(el("h3", { id: titleId }, budget.name));
    head.appendChild(el("span", { class: "badge", "data-role": "source" },
                        budget.source === "file" ? "source: file (YAML)" : "source: api"));
    head.appendChild(el("span", { class: "badge" }, `action: ${budget.action}`));
    card.appendChild(head);
    const scope = [budget.key && `key ${budget.key}`, budget.model && `model ${budget.model}`,
                   budget.domain && `domain ${budget.domain}`].filter(Boolean);
    if (scope.length) card.appendChild(el("p", { class: "help" }, `Only ${scope.join(", ")}`));
    for (const limit of (status ? status.limits : [])) {
      card.appendChild(gauge(limit, budget.alert_threshold));
    }
    if (budget.source === "file") {
      card.appendChild(el("p", { class: "note" },
        "Defined in the gateway's YAML configuration: edit the file to change it (it is reloaded on save)."));
    } else if (state.caller && state.caller.may_change_budgets) {
      const actions = el("div", { class: "actions" });
      const edit = el("button", { type: "button", class: "secondary", "data-action": "edit" },
                      "Edit");
      edit.setAttribute("aria-label", `Edit budget ${budget.name}`);
      edit.addEventListener("click", () => openEditor(budget));
      const remove = el("button", { type: "button", class: "danger", "data-action": "delete" },
                        "Delete");
      remove.setAttribute("aria-label", `Delete budget ${budget.name}`);
      remove.addEventListener("click", () => deleteBudget(budget));
      actions.append(edit, remove);
      card.appendChild(actions);
    }
    return card;
  }

  function gauge(limit, threshold) {
    const cost = limit.limit.startsWith("max_cost");
    const show = (v) => (cost ? usd(v) : `${integer.format(v)} tokens`);
    const box = el("div", { class: "limit", "data-limit": limit.limit });
    const label = el("div", { class: "label" });
    label.appendChild(el("span", {}, LIMIT_NAMES[limit.limit] || limit.limit));
    const figures = el("span", { "data-role": "figures" },
                       `${show(limit.used)} of ${show(limit.max)} (${Math.round(limit.ratio * 100)}%)`);
    label.appendChild(figures);
    box.appendChild(label);
    const level = limit.ratio >= 1 ? "over"
      : (threshold !== null && threshold !== undefined && limit.ratio >= threshold) ? "warn" : "ok";
    const bar = el("div", {
      class: `gauge ${level}`, role: "meter", "aria-valuemin": "0",
      "aria-valuemax": String(limit.max), "aria-valuenow": String(Math.min(limit.used, limit.max)),
      "aria-valuetext": `${show(limit.used)} of ${show(limit.max)}` +
        (level === "over" ? ", limit reached" : level === "warn" ? ", past the alert threshold" : ""),
      "aria-label": LIMIT_NAMES[limit.limit] || limit.limit, "data-level": level,
    });
    const fill = el("div", { class: "fill" });
    fill.style.width = `${Math.min(limit.ratio, 1) * 100}%`;
    bar.appendChild(fill);
    box.appendChild(bar);
    const span = limit.window === "month" ? "calendar month (UTC)" : `rolling ${limit.window}`;
    const resets = limit.resets_in_s === null || limit.resets_in_s === undefined
      ? `${span}; nothing counted yet`
      : limit.window === "month"
        ? `${span}; resets in ${duration(limit.resets_in_s)}`
        : `${span}; capacity frees up in ${duration(limit.resets_in_s)}`;
    box.appendChild(el("div", { class: "resets", "data-role": "resets" }, resets));
    const refusing = refusal(limit, level, cost, show);
    if (refusing) box.appendChild(el("div", { class: `refusing ${level}`, "data-role": "refusing" },
                                     refusing));
    return box;
  }

  /* What the limit refuses now, from the status API's `available` (max - used, reservations in
   * flight counted): nothing at all once it is reached; past the alert threshold, any request
   * whose reservation is larger than what is left. */
  function refusal(limit, level, cost, show) {
    const available = limit.available === undefined ? Math.max(limit.max - limit.used, 0)
      : limit.available;
    if (level === "over" || available <= 0) return "Refusing requests: the limit is reached.";
    if (level !== "warn") return "";
    return cost
      ? `Refusing any request that may cost more than the ${show(available)} left.`
      : `Refusing any request that needs more than the ${show(available)} left ` +
        "(its input plus max_tokens).";
  }

  // -- the budget editor ------------------------------------------------------------------

  function fieldInput(name) { return $(`b-${name}`); }

  function clearErrors() {
    for (const name of FORM_FIELDS) {
      fieldInput(name).removeAttribute("aria-invalid");
      $(`b-${name}-error`).textContent = "";
    }
    $("budget-form-error").textContent = "";
  }

  function openEditor(budget) {
    state.editing = budget || null;
    clearErrors();
    for (const name of FORM_FIELDS) {
      const input = fieldInput(name);
      const value = budget ? budget[name] : null;
      if (input.tagName === "SELECT") {
        input.value = value || (name === "action" ? "reject" : "");
      } else {
        input.value = value === null || value === undefined ? "" : String(value);
      }
    }
    $("editor-title").textContent = budget ? `Edit budget ${budget.name}` : "New budget";
    $("budget-save").textContent = budget ? "Save changes" : "Create budget";
    $("editor").hidden = false;
    $("b-name").focus();
  }

  function closeEditor() {
    state.editing = null;
    $("editor").hidden = true;
  }

  function formBody() {
    const body = {};
    for (const name of FORM_FIELDS) {
      const raw = fieldInput(name).value.trim();
      if (raw === "") {
        if (state.editing && name !== "action") body[name] = null;  // PATCH: clear it
        continue;
      }
      const numeric = LIMITS.includes(name) || name === "alert_threshold" || name === "max_wait_s";
      // a number when it reads as one, else the text itself: the API says what is wrong
      body[name] = numeric && raw !== "" && Number.isFinite(Number(raw)) ? number(raw) : raw;
    }
    if (state.editing && body.name === null) delete body.name;
    if (state.editing && body.max_wait_s === null) delete body.max_wait_s;
    return body;
  }

  // a whole number past 2**53 as typed (JSON.stringify would send 1152921504606847000 for
  // 1152921504606846976), so the API judges, and names, the value the user wrote
  function number(raw) {
    const value = Number(raw);
    const exact = /^-?\d+$/.test(raw) && !Number.isSafeInteger(value) && JSON.rawJSON;
    return exact ? JSON.rawJSON(raw.replace(/^(-?)0+(?=\d)/, "$1")) : value;
  }

  async function saveBudget(event) {
    event.preventDefault();
    clearErrors();
    const editing = state.editing;
    try {
      if (editing) {
        await api(`/budgets/${encodeURIComponent(editing.id)}`, { method: "PATCH", body: formBody() });
      } else {
        await api("/budgets", { method: "POST", body: formBody() });
      }
    } catch (error) {
      showError(error);
      return;
    }
    closeEditor();
    await refresh();
    $("budgets-title").focus();
  }

  /* Each problem beside its own field, in the form's words: the API's field names become the
   * form's labels and its numbers are written for people ($9,000,000 for a cost, 9,007,199,...
   * for tokens); a problem of the whole budget, or of a field the form lacks, above the
   * buttons. The first field at fault takes the focus. */
  function showError(error) {
    const general = [];
    let first = null;
    for (const problem of error.errors) {
      const param = ALIASES[problem.param] || problem.param;
      const text = inFormWords(param, problem.message || "");
      if (param && FORM_FIELDS.includes(param)) {
        const input = fieldInput(param);
        const line = $(`b-${param}-error`);
        input.setAttribute("aria-invalid", "true");
        line.textContent = line.textContent ? `${line.textContent} ${text}` : text;
        first = first || input;
      } else {
        general.push(param ? `${labelOf(param)}: ${text}` : text);
      }
    }
    $("budget-form-error").textContent = general.join(" ");
    if (first) first.focus();
  }

  const ALIASES = { monthly_limit_usd: "max_cost_per_month", daily_limit_usd: "max_cost_per_day" };
  const NUMBER = /(^|[\s(])(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?=$|[\s),;:]|\.(?!\d))/gi;

  function labelOf(param) {
    const label = FORM_FIELDS.includes(param) && document.querySelector(`label[for="b-${param}"]`);
    return label ? label.textContent : param;
  }

  function inFormWords(param, message) {
    const money = Boolean(param) && param.startsWith("max_cost_");
    let text = message
      .replace(/^Invalid budget: /, "")
      .replace(/<= /g, "at most ").replace(/>= /g, "at least ").replace(/> /g, "more than ")
      .replace(NUMBER, (_, before, number) => before + forPeople(number, money))
      .replace(/'?(?<![.\w])(max_(?:tokens|cost)_per_(?:hour|day|month)|alert_threshold|max_wait_s)\b'?/g,
               (_, name) => `"${labelOf(name)}"`);
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(text) ? text : `${text}.`;
  }

  function forPeople(number, money) {
    if (money) return usd(Number(number), decimalsOf(Number(number)));
    if (/^-?\d+$/.test(number)) return BigInt(number).toLocaleString("en-US");  // exact
    return Number(number).toLocaleString("en-US", { maximumFractionDigits: NANO_DIGITS });
  }

  async function deleteBudget(budget) {
    if (!window.confirm(`Delete budget ${budget.name}?`)) return;
    try {
      await api(`/budgets/${encodeURIComponent(budget.id)}`, { method: "DELETE" });
    } catch (error) {
      $("budgets-error").textContent = error.message;
      return;
    }
    if (state.editing && state.editing.id === budget.id) closeEditor();
    await refresh();
  }

  // -- wiring -----------------------------------------------------------------------------

  function init() {
    for (const name of FORM_FIELDS) {  // an error line beside every field, announced
      const input = fieldInput(name);
      const error = el("p", { id: `b-${name}-error`, class: "field-error", role: "alert" });
      input.insertAdjacentElement("afterend", error);
      input.setAttribute("aria-describedby", error.id);
    }
    $("b-name").closest(".field").appendChild(el("p", { class: "help" }, "Unique; defaults to the id."));
    $("budgets-title").setAttribute("tabindex", "-1");
    $("signin-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      const key = $("api-key").value.trim();
      $("api-key-error").textContent = "";
      $("api-key").removeAttribute("aria-invalid");
      if (!key) {
        $("api-key").setAttribute("aria-invalid", "true");
        $("api-key-error").textContent = "Enter a tenant key.";
        return;
      }
      try {
        await signIn(key);
        $("api-key").value = "";
      } catch (error) {
        $("api-key").setAttribute("aria-invalid", "true");
        $("api-key-error").textContent = error.message;
      }
    });
    $("sign-out").addEventListener("click", () => signOut(""));
    $("filters").addEventListener("submit", (event) => { event.preventDefault(); refresh(); });
    for (const id of ["f-group", "f-model"]) $(id).addEventListener("change", () => refresh());
    $("new-budget").addEventListener("click", () => openEditor(null));
    $("budget-form").addEventListener("submit", saveBudget);
    $("budget-cancel").addEventListener("click", () => { closeEditor(); $("new-budget").focus(); });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    const saved = sessionStorage.getItem(KEY_STORE);
    if (saved) {
      signIn(saved).catch(() => signOut("Your saved key is no longer accepted; sign in again."));
    } else {
      $("api-key").focus();
    }
  }

  // the page's formats, read by its browser tests (and handy from the console)
  window.gatewayDashboard = Object.freeze({ usd });

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
