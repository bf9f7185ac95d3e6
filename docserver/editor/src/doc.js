// "/doc/{id}": the collaborative editor.
import { Editor } from "@tiptap/core";
import Collaboration from "@tiptap/extension-collaboration";
import CollaborationCaret from "@tiptap/extension-collaboration-caret";
import { Placeholder } from "@tiptap/extensions";
import StarterKit from "@tiptap/starter-kit";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

import { agentLabelExtension } from "./agent-label.js";
import { loadConfig } from "./config.js";
import { GeoMark } from "./geo-mark.js";
import { bindGeoTooltip } from "./geo-tooltip.js";
import { localUser } from "./identity.js";
import { bindPlacesPanel } from "./places.js";
import { bindPresenceList } from "./presence.js";
import { currentToken } from "./token.js";

/** @param {string} documentId */
export async function showDocument(documentId) {
  document.title = `${documentId} · docagents`;
  /** @type {HTMLElement} */ (document.getElementById("doc-view")).hidden = false;
  /** @type {HTMLElement} */ (document.getElementById("doc-title")).textContent = documentId;
  const status = /** @type {HTMLElement} */ (document.getElementById("status"));
  status.hidden = false;
  setStatus(status, "connecting");

  const config = await loadConfig();
  const token = currentToken();
  if (config.auth === "token" && !token) {
    showNotice("This docserver needs an access token: open the link with ?token=... or paste one on the home page.");
    setStatus(status, "disconnected");
    return;
  }
  const user = localUser();
  const ydoc = new Y.Doc();
  const scheme = window.location.protocol === "https:" ? "wss" : "ws";
  // y-websocket appends the room verbatim; encode it so any id survives the URL.
  const provider = new WebsocketProvider(
    `${scheme}://${window.location.host}/parties/${encodeURIComponent(config.partyName)}`,
    encodeURIComponent(documentId),
    ydoc,
    { shouldReconnect: isRetryableClose, params: token ? { token } : {} },
  );
  provider.on("status", ({ status: value }) => setStatus(status, value));
  provider.on("closed", ({ code, reason }) => {
    // a permanent refusal (e.g. an invalid document id): say why instead of retrying
    setStatus(status, "disconnected");
    const message = `The server closed this document: ${reason || `close code ${code}`}`;
    status.title = message;
    showNotice(message);
  });
  if (provider.wsconnected) setStatus(status, "connected");

  const editor = new Editor({
    element: /** @type {HTMLElement} */ (document.getElementById("editor")),
    extensions: [
      // Collaboration brings its own undo manager; TipTap requires history off.
      StarterKit.configure({ undoRedo: false }),
      Collaboration.configure({ document: ydoc, field: config.fragment }),
      CollaborationCaret.configure({ provider, user }),
      GeoMark,
      Placeholder.configure({ placeholder: PLACEHOLDER }),
      agentLabelExtension(() => agentIdentity(provider.awareness)),
    ],
    editorProps: { attributes: { spellcheck: "false", "aria-label": `Document ${documentId}` } },
  });

  bindGeoTooltip(/** @type {HTMLElement} */ (document.getElementById("editor")));
  bindPresenceList(provider.awareness, /** @type {HTMLUListElement} */ (document.getElementById("presence")));
  bindPlacesPanel(
    editor,
    /** @type {HTMLUListElement} */ (document.getElementById("places")),
    /** @type {HTMLElement} */ (document.getElementById("places-empty")),
  );

  // Leave promptly when the tab goes away (the server turns that into 'idle'),
  // and come back if the page is restored from the back/forward cache.
  window.addEventListener("pagehide", () => provider.disconnect());
  window.addEventListener("pageshow", (event) => {
    if (event.persisted) provider.connect();
  });
  window.docagents = { editor, ydoc, provider, config, user, documentId };
  editor.commands.focus("end");
}

/** What an empty document says (TipTap's Placeholder shows it until the first character). */
export const PLACEHOLDER =
  "Type a sentence that names places, e.g. “We flew from Lisbon to Buenos Aires.” — " +
  "the AI agent marks them when the sentence ends.";

/**
 * Name and colour of the agent in the document (its awareness state), for its label.
 * @param {import("y-protocols/awareness").Awareness} awareness
 */
export function agentIdentity(awareness) {
  for (const state of awareness.getStates().values()) {
    if (state?.type === "agent" && typeof state.user?.name === "string") {
      return {
        name: state.user.name,
        color: typeof state.user.color === "string" ? state.user.color : "#3056d3",
      };
    }
  }
  return { name: "AI Agent", color: "#3056d3" };
}

/**
 * Close codes after which reconnecting is pointless: 1008 (policy violation) and
 * 4400-4499 (y-websocket's "permanent" range). Everything else is retried with backoff.
 * @param {CloseEvent} event
 */
export function isRetryableClose(event) {
  return !(event.code === 1008 || (event.code >= 4400 && event.code < 4500));
}

/** @param {string} message */
function showNotice(message) {
  const notice = /** @type {HTMLElement} */ (document.getElementById("notice"));
  notice.textContent = message;
  notice.hidden = false;
}

/**
 * @param {HTMLElement} el
 * @param {string} value "connected" | "connecting" | "disconnected"
 */
function setStatus(el, value) {
  el.textContent = value;
  el.dataset.status = value;
}
