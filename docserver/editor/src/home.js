// "/": recent documents and a box to open one.
import { documentPath } from "./routes.js";
import { authHeaders, currentToken, rememberToken } from "./token.js";

export async function showHome() {
  document.title = "docagents";
  const view = /** @type {HTMLElement} */ (document.getElementById("home-view"));
  const form = /** @type {HTMLFormElement} */ (document.getElementById("open-form"));
  const input = /** @type {HTMLInputElement} */ (document.getElementById("open-doc"));
  const list = /** @type {HTMLUListElement} */ (document.getElementById("documents"));
  const empty = /** @type {HTMLElement} */ (document.getElementById("documents-empty"));
  view.hidden = false;

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const id = input.value.trim();
    if (id) window.location.assign(documentPath(id));
  });
  input.focus();
  bindTokenForm();

  try {
    const response = await fetch("/api/documents", {
      headers: { Accept: "application/json", ...authHeaders() },
    });
    if (response.status === 401) {
      /** @type {HTMLElement} */ (document.getElementById("token-card")).hidden = false;
      empty.textContent = "This docserver needs an access token (paste one above).";
      empty.hidden = false;
      return;
    }
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const body = await response.json();
    const documents = Array.isArray(body?.documents) ? body.documents : [];
    list.replaceChildren(...documents.map(documentItem));
    empty.hidden = documents.length > 0;
  } catch (error) {
    console.warn("docagents: cannot list documents", error);
    empty.textContent = "Could not load the document list.";
    empty.hidden = false;
  }
}

/** @param {{ document_id: string, last_event?: string, timestamp?: string, user_count?: number }} doc */
function documentItem(doc) {
  const li = document.createElement("li");
  const link = document.createElement("a");
  link.href = documentPath(doc.document_id);
  link.textContent = doc.document_id;
  li.append(link);

  const meta = document.createElement("span");
  meta.className = "meta";
  const state = document.createElement("span");
  state.className = `badge badge-${doc.last_event ?? "unknown"}`;
  state.textContent = doc.last_event ?? "unknown";
  meta.append(state);
  if (typeof doc.user_count === "number") {
    meta.append(` ${doc.user_count} ${doc.user_count === 1 ? "person" : "people"}`);
  }
  if (doc.timestamp) {
    const time = document.createElement("time");
    time.dateTime = doc.timestamp;
    const date = new Date(doc.timestamp);
    time.textContent = Number.isNaN(date.getTime()) ? doc.timestamp : date.toLocaleString();
    meta.append(" · ", time);
  }
  li.append(meta);
  return li;
}

function bindTokenForm() {
  const card = /** @type {HTMLElement} */ (document.getElementById("token-card"));
  const form = /** @type {HTMLFormElement} */ (document.getElementById("token-form"));
  const field = /** @type {HTMLInputElement} */ (document.getElementById("token"));
  field.value = currentToken() ?? "";
  card.hidden = !field.value;
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    rememberToken(field.value.trim());
    window.location.reload();
  });
}
