// A styled tooltip for a hovered geoMark: place, coordinates, and where the
// coordinates come from. One element for the page, positioned under the mark.
import { coordText } from "./geo-mark.js";

const SOURCES = /** @type {Record<string, string>} */ ({
  gazetteer: "coordinates from the gazetteer",
  llm: "coordinates from the language model",
});

/** @param {string | undefined} source */
export function sourceText(source) {
  if (!source) return "source unknown";
  return SOURCES[source] ?? `coordinates from ${source}`;
}

/**
 * Shows #geo-tooltip while the pointer (or keyboard focus) is on a span.geo-mark inside `root`.
 * @param {HTMLElement} root
 */
export function bindGeoTooltip(root) {
  const tip = document.createElement("div");
  tip.id = "geo-tooltip";
  tip.className = "geo-tooltip";
  tip.setAttribute("role", "tooltip");
  tip.hidden = true;
  const name = document.createElement("strong");
  const coords = document.createElement("span");
  coords.className = "geo-tooltip-coords";
  const source = document.createElement("span");
  source.className = "geo-tooltip-source";
  tip.append(name, coords, source);
  document.body.append(tip);

  /** @type {HTMLElement | null} */
  let current = null;

  /** @param {HTMLElement} mark */
  const show = (mark) => {
    current = mark;
    const data = mark.dataset;
    name.textContent = data.placeName || mark.textContent || "Unknown place";
    coords.textContent = coordText({ lat: data.lat, lng: data.lng });
    source.textContent = sourceText(data.coordSource);
    tip.dataset.colorIndex = data.colorIndex ?? "0";
    tip.hidden = false;
    const box = mark.getBoundingClientRect();
    const width = tip.offsetWidth;
    const left = Math.min(Math.max(8, box.left + box.width / 2 - width / 2), window.innerWidth - width - 8);
    tip.style.left = `${left + window.scrollX}px`;
    tip.style.top = `${box.bottom + window.scrollY + 6}px`;
  };
  const hide = () => {
    current = null;
    tip.hidden = true;
  };

  root.addEventListener("mouseover", (event) => {
    const mark = /** @type {HTMLElement | null} */ (
      /** @type {HTMLElement} */ (event.target).closest?.("span.geo-mark")
    );
    if (mark && mark !== current) show(mark);
    else if (!mark && current) hide();
  });
  root.addEventListener("mouseleave", hide);
  window.addEventListener("scroll", hide, { passive: true });
  return tip;
}
