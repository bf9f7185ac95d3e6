// The agent's label, shown where it last marked a place.
//
// The agent has no caret of its own (it writes marks, not text), so the label
// follows its work instead: when marks appear that were not there before, the
// label moves to the end of the last new one, and stays there (mapped through
// later edits) until the next mark.
import { Extension } from "@tiptap/core";
import { Plugin, PluginKey } from "@tiptap/pm/state";
import { Decoration, DecorationSet } from "@tiptap/pm/view";

export const agentLabelKey = new PluginKey("agentLabel");

/**
 * "from:to:geoId" of every geoMark text run.
 * @param {import("@tiptap/pm/model").Node} doc
 * @returns {Map<string, number>} key -> end position
 */
function markRuns(doc) {
  /** @type {Map<string, number>} */
  const runs = new Map();
  doc.descendants((node, pos) => {
    if (!node.isText) return true;
    const mark = node.marks.find((m) => m.type.name === "geoMark");
    if (mark) runs.set(`${pos}:${node.nodeSize}:${mark.attrs.geoId ?? mark.attrs.placeName}`, pos + node.nodeSize);
    return false;
  });
  return runs;
}

/**
 * @param {() => { name: string, color: string }} agent who the label names
 */
export function agentLabelExtension(agent) {
  return Extension.create({
    name: "agentLabel",
    addProseMirrorPlugins() {
      return [
        new Plugin({
          key: agentLabelKey,
          state: {
            init: () => /** @type {number | null} */ (null),
            apply(tr, pos, oldState, newState) {
              if (!tr.docChanged) return pos;
              const mapped = pos == null ? null : tr.mapping.map(pos, -1);
              const before = new Set(
                [...markRuns(oldState.doc).keys()].map((key) => {
                  const [from, size, id] = key.split(":");
                  return `${tr.mapping.map(Number(from), 1)}:${size}:${id}`;
                }),
              );
              let latest = null;
              for (const [key, end] of markRuns(newState.doc)) {
                if (!before.has(key) && (latest == null || end > latest)) latest = end;
              }
              return latest ?? mapped;
            },
          },
          props: {
            decorations(state) {
              const pos = agentLabelKey.getState(state);
              if (pos == null || pos > state.doc.content.size) return DecorationSet.empty;
              const who = agent();
              const widget = Decoration.widget(
                pos,
                () => {
                  const label = document.createElement("span");
                  label.className = "agent-label";
                  label.style.setProperty("--agent-color", who.color);
                  label.setAttribute("aria-hidden", "true");
                  const name = document.createElement("span");
                  name.className = "agent-label-name";
                  name.textContent = who.name;
                  label.append(name);
                  return label;
                },
                { side: 1, key: `agent-label-${who.name}-${who.color}`, ignoreSelection: true },
              );
              return DecorationSet.create(state.doc, [widget]);
            },
          },
        }),
      ];
    },
  });
}
