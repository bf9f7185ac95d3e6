// The access token, when the docserver asks for one (DOCSERVER_AUTH=jwt or a hook).
// It comes from the URL (`?token=...`, then removed from the address bar) or from the
// token field, and is kept for this tab in sessionStorage.

const KEY = "docagents.token";

/** @returns {string | null} */
export function currentToken() {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("token");
  if (fromUrl) {
    sessionStorage.setItem(KEY, fromUrl);
    url.searchParams.delete("token");
    window.history.replaceState(null, "", url.toString());
    return fromUrl;
  }
  return sessionStorage.getItem(KEY);
}

/** @param {string} token */
export function rememberToken(token) {
  if (token) sessionStorage.setItem(KEY, token);
  else sessionStorage.removeItem(KEY);
}

/** Headers for the docserver's JSON API. @returns {Record<string, string>} */
export function authHeaders() {
  const token = currentToken();
  return token ? { Authorization: `Bearer ${token}` } : {};
}
