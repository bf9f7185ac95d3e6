// Runtime configuration served by the docserver at GET /api/config.

/** @typedef {{ partyName: string, fragment: string, auth: string }} EditorConfig */

/** @type {EditorConfig} */
export const DEFAULT_CONFIG = Object.freeze({
  partyName: "document",
  fragment: "prosemirror",
  auth: "none",
});

/**
 * Fetch the runtime config; any failure falls back to the defaults so that the
 * page still works against a plain y-websocket server.
 * @returns {Promise<EditorConfig>}
 */
export async function loadConfig() {
  try {
    const response = await fetch("/api/config", { headers: { Accept: "application/json" } });
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    return {
      partyName: nonEmptyString(body?.partyName) ?? DEFAULT_CONFIG.partyName,
      fragment: nonEmptyString(body?.fragment) ?? DEFAULT_CONFIG.fragment,
      auth: nonEmptyString(body?.auth) ?? DEFAULT_CONFIG.auth,
    };
  } catch (error) {
    console.warn("docagents: /api/config unavailable, using defaults", error);
    return { ...DEFAULT_CONFIG };
  }
}

/** @param {unknown} value */
function nonEmptyString(value) {
  return typeof value === "string" && value.length > 0 ? value : undefined;
}
