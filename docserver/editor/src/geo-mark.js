// The geoMark mark (DESIGN.md "Document format"). The agent writes it as
// y-prosemirror does: a formatting attribute "geoMark" on XmlText whose value
// is this mark's attrs object.
import { Mark, mergeAttributes } from "@tiptap/core";

export const GEO_COLOR_COUNT = 8;

/** @param {unknown} value */
export function colorSlot(value) {
  const n = Math.trunc(Number(value));
  if (!Number.isFinite(n)) return 0;
  return ((n % GEO_COLOR_COUNT) + GEO_COLOR_COUNT) % GEO_COLOR_COUNT;
}

/**
 * "Paris (48.85, 2.35)"
 * @param {{ placeName?: unknown, lat?: unknown, lng?: unknown }} attrs
 */
export function geoLabel(attrs) {
  const name = attrs.placeName ? String(attrs.placeName) : "Unknown place";
  return `${name} (${coordText(attrs)})`;
}

/** @param {{ lat?: unknown, lng?: unknown }} attrs */
export function coordText(attrs) {
  return `${attrs.lat ?? "?"}, ${attrs.lng ?? "?"}`;
}

export const GeoMark = Mark.create({
  name: "geoMark",
  inclusive: false,
  // excludes stays the default (the mark excludes itself), so y-prosemirror
  // stores it under the plain key "geoMark", not "geoMark--<hash>".

  addAttributes() {
    /** @param {string} name @param {string} dataName */
    const str = (name, dataName) => ({
      default: null,
      parseHTML: (/** @type {HTMLElement} */ el) => el.getAttribute(dataName),
      renderHTML: (/** @type {Record<string, any>} */ attrs) =>
        attrs[name] == null ? {} : { [dataName]: String(attrs[name]) },
    });
    return {
      geoId: str("geoId", "data-geo-id"),
      placeName: str("placeName", "data-place-name"),
      lat: str("lat", "data-lat"),
      lng: str("lng", "data-lng"),
      coordSource: str("coordSource", "data-coord-source"),
      colorIndex: {
        default: 0,
        parseHTML: (/** @type {HTMLElement} */ el) => {
          const explicit = el.getAttribute("data-color-index");
          if (explicit != null && Number.isFinite(Number.parseInt(explicit, 10))) {
            return Number.parseInt(explicit, 10);
          }
          const match = /(?:^|\s)geo-color-(\d+)(?:\s|$)/.exec(el.className);
          return match ? Number(match[1]) : 0;
        },
        renderHTML: (/** @type {Record<string, any>} */ attrs) => ({
          class: `geo-color-${colorSlot(attrs.colorIndex)}`,
          "data-color-index": String(attrs.colorIndex ?? 0),
        }),
      },
    };
  },

  parseHTML() {
    return [{ tag: "span.geo-mark" }, { tag: "span[data-geo-id]" }];
  },

  renderHTML({ mark, HTMLAttributes }) {
    // The label goes to assistive technology; the eye gets #geo-tooltip (geo-tooltip.js).
    return ["span", mergeAttributes({ class: "geo-mark", "aria-label": geoLabel(mark.attrs) }, HTMLAttributes), 0];
  },
});
