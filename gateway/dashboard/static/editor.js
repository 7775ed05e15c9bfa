/* The budget form: create or edit an API budget. Every rule is the API's: the form sends
 * what was typed and shows each problem the API names beside its own field, in the form's
 * words. */

import { $, el } from "./dom.js";
import { NANO_DIGITS, decimalsOf, usd } from "./format.js";
import { LIMITS } from "./budgets.js";

const FIELDS = ["name", ...LIMITS, "alert_threshold", "action", "fallback_model", "max_wait_s",
                "key", "model", "domain", "per", "end_user_required"];
const NUMERIC = new Set([...LIMITS, "alert_threshold", "max_wait_s"]);
const ALIASES = { monthly_limit_usd: "max_cost_per_month", daily_limit_usd: "max_cost_per_day" };
const NUMBER = /(^|[\s(])(-?\d+(?:\.\d+)?(?:e[+-]?\d+)?)(?=$|[\s),;:]|\.(?!\d))/gi;
const API_NAME = new RegExp("'?(?<![.\\w])(max_(?:tokens|cost)_per_(?:hour|day|month)|" +
                            "alert_threshold|max_wait_s|fallback_model|end_user_required)\\b'?", "g");

const input = (name) => $(`b-${name}`);
const modelsOf = (raw) => raw.split(/[\s,]+/).filter(Boolean);  // "a, b" -> ["a", "b"]

export class BudgetEditor {
  /* `send(path, options)`: the admin API of the signed-in key; `saved()`: after a save. */
  constructor(send, saved) {
    this.send = send;
    this.saved = saved;
    this.editing = null;
    this.fallbacks = [];  // the fallback models last sent, to name them in errors
    for (const name of FIELDS) {  // an error line in every field, announced
      const error = el("p", { id: `b-${name}-error`, class: "field-error", role: "alert" });
      input(name).closest(".field").appendChild(error);
      input(name).setAttribute("aria-describedby", error.id);
    }
    $("b-name").closest(".field").appendChild(el("p", { class: "help" }, "Unique; defaults to the id."));
    $("budget-form").addEventListener("submit", (event) => this.save(event));
  }

  get open() { return !$("editor").hidden; }

  show(budget) {
    this.editing = budget || null;
    this.clearErrors();
    for (const name of FIELDS) {
      const field = input(name);
      const value = budget ? budget[name] : null;
      if (field.type === "checkbox") {
        field.checked = Boolean(value);
      } else if (field.tagName === "SELECT") {
        field.value = value || (name === "action" ? "reject" : "");
      } else if (Array.isArray(value)) {
        field.value = value.join(", ");
      } else {
        field.value = value === null || value === undefined ? "" : String(value);
      }
    }
    $("editor-title").textContent = budget ? `Edit budget ${budget.name}` : "New budget";
    $("budget-save").textContent = budget ? "Save changes" : "Create budget";
    $("editor").hidden = false;
    $("b-name").focus();
  }

  close() {
    this.editing = null;
    $("editor").hidden = true;
  }

  clearErrors() {
    for (const name of FIELDS) {
      input(name).removeAttribute("aria-invalid");
      $(`b-${name}-error`).textContent = "";
    }
    $("budget-form-error").textContent = "";
  }

  body() {
    const body = {};
    for (const name of FIELDS) {
      const field = input(name);
      if (field.type === "checkbox") {
        body[name] = field.checked;
        continue;
      }
      const raw = field.value.trim();
      if (raw === "") {
        if (this.editing && name !== "action") body[name] = null;  // PATCH: clear it
        continue;
      }
      if (name === "fallback_model") body[name] = modelsOf(raw);
      // a number when it reads as one, else the text itself: the API says what is wrong
      else body[name] = NUMERIC.has(name) && Number.isFinite(Number(raw)) ? number(raw) : raw;
    }
    if (this.editing && body.name === null) delete body.name;
    if (this.editing && body.max_wait_s === null) delete body.max_wait_s;
    this.fallbacks = body.fallback_model || [];
    return body;
  }

  async save(event) {
    event.preventDefault();
    this.clearErrors();
    const editing = this.editing;
    try {
      if (editing) {
        await this.send(`/budgets/${encodeURIComponent(editing.id)}`,
                        { method: "PATCH", body: this.body() });
      } else {
        await this.send("/budgets", { method: "POST", body: this.body() });
      }
    } catch (error) {
      this.showError(error);
      return;
    }
    this.close();
    await this.saved();
  }

  /* Each problem beside its own field, in the form's words: the API's field names become the
   * form's labels and its numbers are written for people ($9,000,000 for a cost, 9,007,199,...
   * for tokens); a problem of the whole budget, or of a field the form lacks, above the
   * buttons. The first field at fault takes the focus. */
  showError(error) {
    const general = [];
    let first = null;
    for (const problem of error.errors) {
      const param = ALIASES[problem.param] || problem.param;
      const text = this.inFormWords(param, problem.message || "");
      if (param && FIELDS.includes(param)) {
        const line = $(`b-${param}-error`);
        input(param).setAttribute("aria-invalid", "true");
        line.textContent = line.textContent ? `${line.textContent} ${text}` : text;
        first = first || input(param);
      } else {
        general.push(param ? `${labelOf(param)}: ${text}` : text);
      }
    }
    $("budget-form-error").textContent = general.join(" ");
    if (first) first.focus();
  }

  inFormWords(param, message) {
    const money = Boolean(param) && param.startsWith("max_cost_");
    let text = message.replace(/^Invalid budget: /, "");
    if (param === "fallback_model") {  // "entry 1 is a glob": the model as typed, not its index
      text = text.replace(/\bentry (\d+)\b/g, (entry, i) =>
        (this.fallbacks[Number(i)] === undefined ? entry : `"${this.fallbacks[Number(i)]}"`));
    }
    text = text
      .replace(/<= /g, "at most ").replace(/>= /g, "at least ").replace(/> /g, "more than ")
      .replace(NUMBER, (_, before, figure) => before + forPeople(figure, money))
      .replace(API_NAME, (_, name) => `"${labelOf(name)}"`);
    text = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(text) ? text : `${text}.`;
  }
}

// a whole number past 2**53 as typed (JSON.stringify would send 1152921504606847000 for
// 1152921504606846976), so the API judges, and names, the value the user wrote
function number(raw) {
  const value = Number(raw);
  const exact = /^-?\d+$/.test(raw) && !Number.isSafeInteger(value) && JSON.rawJSON;
  return exact ? JSON.rawJSON(raw.replace(/^(-?)0+(?=\d)/, "$1")) : value;
}

function labelOf(param) {
  const label = FIELDS.includes(param) && document.querySelector(`label[for="b-${param}"]`);
  return label ? label.textContent : param;
}

function forPeople(figure, money) {
  if (money) return usd(Number(figure), decimalsOf(Number(figure)));
  if (/^-?\d+$/.test(figure)) return BigInt(figure).toLocaleString("en-US");  // exact
  return Number(figure).toLocaleString("en-US", { maximumFractionDigits: NANO_DIGITS });
}
