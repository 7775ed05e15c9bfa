/* The admin API (/api/client/v1) with the signed-in key: sent as an Authorization header,
 * never put in a URL. */

const API = "/api/client/v1";

export class ApiError extends Error {
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

/* `api(path, {method, body})` for `key`: the answer's JSON (null for a 204), else an
 * ApiError. A read refused with a 401 calls `refused` first (the key was revoked). */
export function client(key, refused) {
  return async function api(path, options = {}) {
    const headers = { Authorization: `Bearer ${key}` };
    if (options.body !== undefined) headers["Content-Type"] = "application/json";
    const response = await fetch(API + path, {
      method: options.method || "GET", headers, cache: "no-store", credentials: "omit",
      body: options.body === undefined ? undefined : JSON.stringify(options.body),
    });
    if (response.status === 204) return null;
    let body = null;
    try { body = await response.json(); } catch (e) { body = null; }
    if (!response.ok) {
      if (response.status === 401 && options.method === undefined) refused();
      throw new ApiError(response.status, body);
    }
    return body;
  };
}

/* `api` about one tenant's figures, as an operator's key names them (GET /me gives the
 * tenants it may name): `tenant` in every call's query (a reader's "all": every tenant), and
 * in a new budget's body instead. A tenant key names none (`tenant` null): its own. */
export function forTenant(api, tenant) {
  if (!tenant) return api;
  return (path, options = {}) => {
    if (options.method === "POST" && path === "/budgets") {
      return api(path, { ...options, body: { ...options.body, tenant } });
    }
    const sep = path.includes("?") ? "&" : "?";
    return api(`${path}${sep}tenant=${encodeURIComponent(tenant)}`, options);
  };
}
