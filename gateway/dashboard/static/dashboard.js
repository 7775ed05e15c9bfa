/* The spend dashboard: a thin client of the admin API (/api/client/v1). This module signs in
 * and out, polls, and wires the page's parts (spend.js, end_users.js, budgets.js, editor.js,
 * batches.js; for an operator, tenants.js and overview.js) together.
 *
 * The key (a tenant's, or an operator's: GET /me says which) lives in sessionStorage only and
 * goes out as an Authorization header; it is never put in a URL. An operator's page is the
 * tenant it picks, every call naming it, or the overview of all of them. Everything from the
 * API is rendered with textContent (never parsed as markup), and every rule (who may edit,
 * what a valid budget is, how much is used) is the API's: this page shows what the API
 * answers.
 */

import { client, forTenant } from "./api.js";
import { renderRunning } from "./batches.js";
import { renderBudgets } from "./budgets.js";
import { $ } from "./dom.js";
import { BudgetEditor } from "./editor.js";
import { EndUsersView } from "./end_users.js";
import { usd } from "./format.js";
import { OverviewView } from "./overview.js";
import { SpendView } from "./spend.js";
import { TenantPicker } from "./tenants.js";

const KEY_STORE = "gateway.dashboard.key";
const POLL_MS = 5000;

const state = { api: null, caller: null, timer: null, busy: false, again: false };
// (a module runs once the page is parsed: its parts find their elements)
// the signed-in key's calls about the tenant shown (an operator's pick)
const send = (path, options) => forTenant(state.api, tenants.tenant)(path, options);
const spend = new SpendView();
const endUsers = new EndUsersView(send);
const editor = new BudgetEditor(send, async () => {
  await refresh();
  $("budgets-title").focus();
});
const tenants = new TenantPicker(() => {
  editor.close();
  endUsers.reset();
  spend.reset();
  refresh();
});
const overview = new OverviewView((tenant) => {
  tenants.pick(tenant);
  $("f-tenant").focus();
});

// -- sign in and out --------------------------------------------------------------------

async function signIn(key) {
  const api = client(key, () => {
    if (state.caller) signOut("The key is no longer accepted; sign in again.");
  });
  const caller = state.caller = await api("/me");  // a refused key stays signed out
  state.api = api;
  sessionStorage.setItem(KEY_STORE, key);
  $("who-text").textContent = (caller.operator
    ? `Operator ${caller.name} (${caller.role}`
    : `Tenant ${caller.tenant} · key ${caller.key_name} (${caller.role}`) +
    (caller.may_change_budgets ? ")" : ", read-only)");
  $("who").hidden = false;
  $("signin").hidden = true;
  $("app").hidden = false;
  showEditRights(caller);
  tenants.start(caller);
  await refresh();
  schedule();
  $("main").focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_STORE);
  clearTimeout(state.timer);
  state.timer = null;
  state.api = null;
  state.caller = null;
  spend.reset();
  endUsers.reset();
  overview.reset();
  tenants.stop();
  $("budgets").replaceChildren();
  $("batches").tBodies[0].replaceChildren();
  editor.close();
  $("who").hidden = true;
  $("app").hidden = true;
  $("signin").hidden = false;
  $("api-key").value = "";
  $("api-key-error").textContent = message || "";
  $("api-key").focus();
}

/* A key that may change budgets gets New budget (and each API budget's Edit and Delete); a
 * member key none of them; a viewer operator the button disabled, saying what it lacks. */
function showEditRights(caller) {
  const viewer = caller.operator === true && !caller.may_change_budgets;
  const button = $("new-budget");
  button.hidden = !caller.may_change_budgets && !viewer;
  button.disabled = viewer;
  $("budgets-read-only").hidden = !viewer;
  $("budgets-read-only").textContent = viewer
    ? `Read-only: changing budgets needs an operator key whose role is editor; ` +
      `${caller.name} is a ${caller.role}.` : "";
}

// -- polling ----------------------------------------------------------------------------

function schedule() {
  clearTimeout(state.timer);
  state.timer = setTimeout(async () => {
    if (!state.api) return;
    if (!document.hidden) {
      try { await refresh(); } catch (e) { /* shown by refresh */ }
    }
    if (state.api) schedule();
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

/* Loads what the page shows (the overview, or one tenant's figures), then shows it unless
 * the operator picked another tenant meanwhile (then it loads again). */
async function refresh() {
  const api = state.api;
  if (!api) return;
  if (state.busy) { state.again = true; return; }  // once the one under way is done
  state.busy = true;
  state.again = false;
  const tenant = tenants.tenant;
  try {
    const asked = filters();
    const show = tenants.all ? await loadOverview(api, asked) : await loadTenant(asked);
    if (state.api === api && tenants.tenant === tenant) {
      show();
      $("filters-error").textContent = "";
      $("refresh-error").textContent = "";
      $("updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshed every ${POLL_MS / 1000} s.`;
    } else {
      state.again = state.api !== null;
    }
  } catch (error) {
    if (error.param === "from" || error.param === "to" || error.param === "group_by") {
      $("filters-error").textContent = error.message;
    } else if (state.api) {
      $("refresh-error").textContent = `Could not refresh: ${error.message}`;
    }
  } finally {
    state.busy = false;
  }
  if (state.again) await refresh();
}

async function loadTenant(asked) {
  const endUser = endUsers.statusPath();
  const [report, budgets, status, running, top, ofEndUser] = await Promise.all([
    send(`/spend/report?${queryOf(asked)}`), send("/budgets"), send("/budgets/status"),
    send("/batches/running"), send(endUsers.topPath(asked)), endUser && send(endUser)]);
  return () => {
    spend.render(report, asked);
    renderBudgets($("budgets"), budgets.data, status.budgets, {
      mayChange: state.caller && state.caller.may_change_budgets,
      edit: (budget) => editor.show(budget),
      remove: deleteBudget,
    });
    renderRunning(running.data);
    endUsers.render(top, ofEndUser, budgets.data);
    $("budgets-error").textContent = "";
  };
}

async function loadOverview(api, asked) {
  const data = await overview.load(api, asked, queryOf(asked));
  return () => {
    spend.render(data.report, asked);
    overview.render(data, asked);
  };
}

async function deleteBudget(budget) {
  if (!window.confirm(`Delete budget ${budget.name}?`)) return;
  try {
    await send(`/budgets/${encodeURIComponent(budget.id)}`, { method: "DELETE" });
  } catch (error) {
    $("budgets-error").textContent = error.message;
    return;
  }
  if (editor.editing && editor.editing.id === budget.id) editor.close();
  await refresh();
}

// -- wiring -----------------------------------------------------------------------------

function init() {
  $("budgets-title").setAttribute("tabindex", "-1");
  $("signin-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    $("api-key-error").textContent = "";
    $("api-key").removeAttribute("aria-invalid");
    if (!key) {
      $("api-key").setAttribute("aria-invalid", "true");
      $("api-key-error").textContent = "Enter an API key.";
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
  $("new-budget").addEventListener("click", () => editor.show(null));
  $("budget-cancel").addEventListener("click", () => { editor.close(); $("new-budget").focus(); });
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

init();
