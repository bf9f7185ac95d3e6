// The side panel listing the places marked in the document.
import { colorSlot, coordText } from "./geo-mark.js";

/**
 * @typedef {{ geoId: string, placeName: string, lat: string, lng: string,
 *             colorIndex: number, from: number, to: number, count: number }} Place
 */

/**
 * Every geoMark in the document, deduplicated by geoId, in document order.
 * `from`/`to` span the first occurrence (adjacent text nodes carrying the same
 * mark, e.g. split by bold, are joined).
 * @param {import("@tiptap/pm/model").Node} doc
 * @returns {Place[]}
 */
export function collectPlaces(doc) {
  /** @type {Map<string, Place>} */
  const places = new Map();
  /** @type {{ key: string, to: number } | null} */
  let previous = null;
  doc.descendants((node, pos) => {
    if (!node.isText) return true;
    const mark = node.marks.find((m) => m.type.name === "geoMark");
    if (!mark) {
      previous = null;
      return false;
    }
    const attrs = mark.attrs;
    const key = String(attrs.geoId ?? `${attrs.placeName}@${attrs.lat},${attrs.lng}`);
    const from = pos;
    const to = pos + node.nodeSize;
    const existing = places.get(key);
    if (!existing) {
      places.set(key, {
        geoId: key,
        placeName: String(attrs.placeName ?? key),
        lat: String(attrs.lat ?? "?"),
        lng: String(attrs.lng ?? "?"),
        colorIndex: colorSlot(attrs.colorIndex),
        from,
        to,
        count: 1,
      });
    } else if (previous && previous.key === key && previous.to === from) {
      if (existing.to === from) existing.to = to; // continuation of the first span
    } else {
      existing.count += 1;
    }
    previous = { key, to };
    return false;
  });
  return [...places.values()];
}

/**
 * Keeps #places in sync with the editor and selects a mark on click.
 * @param {import("@tiptap/core").Editor} editor
 * @param {HTMLUListElement} list
 * @param {HTMLElement} empty
 */
export function bindPlacesPanel(editor, list, empty) {
  let lastSignature = "";
  /** @type {Place[]} */
  let current = [];

  const render = () => {
    current = collectPlaces(editor.state.doc);
    const signature = JSON.stringify(current.map((p) => [p.geoId, p.placeName, p.lat, p.lng, p.colorIndex, p.count]));
    if (signature === lastSignature) return;
    lastSignature = signature;
    list.replaceChildren(...current.map(placeItem));
    empty.hidden = current.length > 0;
  };

  list.addEventListener("click", (event) => {
    const item = /** @type {HTMLElement} */ (event.target).closest("li[data-geo-id]");
    if (!item) return;
    // positions are recomputed on each transaction, so read them fresh
    const place = collectPlaces(editor.state.doc).find((p) => p.geoId === item.dataset.geoId);
    if (!place) return;
    editor.chain().focus().setTextSelection({ from: place.from, to: place.to }).scrollIntoView().run();
    flash(editor, place.geoId);
  });

  editor.on("create", render);
  editor.on("transaction", ({ transaction }) => {
    if (transaction.docChanged) render();
  });
  render();
}

/** @param {Place} place */
function placeItem(place) {
  const li = document.createElement("li");
  li.dataset.geoId = place.geoId;
  li.className = `place geo-color-${place.colorIndex}`;
  li.tabIndex = 0;
  li.title = place.count > 1 ? `${place.count} mentions — click to select the first` : "Click to select";
  li.textContent = `${place.placeName} — ${coordText(place)}`;
  li.addEventListener("keydown", (event) => {
    if (event.key === "Enter" || event.key === " ") {
      event.preventDefault();
      li.click();
    }
  });
  return li;
}

/**
 * Briefly highlight the rendered mark(s) of one place.
 * @param {import("@tiptap/core").Editor} editor
 * @param {string} geoId
 */
function flash(editor, geoId) {
  for (const el of editor.view.dom.querySelectorAll("span.geo-mark[data-geo-id]")) {
    if (/** @type {HTMLElement} */ (el).dataset.geoId !== geoId) continue;
    el.animate([{ outline: "3px solid currentColor" }, { outline: "3px solid transparent" }], {
      duration: 900,
      easing: "ease-out",
    });
  }
}
