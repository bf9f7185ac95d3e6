// Plays the human with the real JS libraries: writes paragraphs into the shared
// document exactly as y-prosemirror does, waits for the agent's geoMark marks, and
// prints what a ProseMirror editor would see (text + marks) as one JSON line.
//
// usage: node interop.mjs SERVER_URL ROOM FRAGMENT EXPECTED_MARKS TIMEOUT_MS
import WebSocket from "ws";
import * as Y from "yjs";
import { WebsocketProvider } from "y-websocket";
import { Schema } from "prosemirror-model";
import { schema as basic } from "prosemirror-schema-basic";
import { prosemirrorToYXmlFragment, yXmlFragmentToProseMirrorRootNode } from "y-prosemirror";

const [serverUrl, room, fragmentName, expected, timeoutMs] = process.argv.slice(2);

const geoMark = {
  attrs: {
    geoId: { default: null },
    placeName: { default: null },
    lat: { default: null },
    lng: { default: null },
    colorIndex: { default: 0 },
    coordSource: { default: null },
  },
  inclusive: false,
  toDOM: (mark) => ["span", { "data-geo-id": mark.attrs.geoId }, 0],
};
const schema = new Schema({
  nodes: basic.spec.nodes,
  marks: basic.spec.marks.addToEnd("geoMark", geoMark),
});

const ydoc = new Y.Doc();
const provider = new WebsocketProvider(serverUrl, room, ydoc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
});
provider.awareness.setLocalStateField("user", { name: "Node human", color: "#0a0" });

const fail = (why) => {
  console.error(why);
  process.exit(2);
};
const timer = setTimeout(() => fail(`timeout; saw ${JSON.stringify(read())}`), Number(timeoutMs));

await new Promise((resolve) => {
  const onSync = (synced) => {
    if (synced) {
      provider.off("sync", onSync);
      resolve();
    }
  };
  provider.on("sync", onSync);
});

const fragment = ydoc.getXmlFragment(fragmentName);
const p = (...content) => schema.node("paragraph", null, content);
const t = (text) => schema.text(text);
const br = () => schema.node("hard_break");
const doc = schema.node("doc", null, [
  p(t("København 🇩🇰 via Zürich to Paris.")),
  p(t("We left Rome."), br(), t("Then we reached Oslo. Unfinished Berlin")),
  p(t("Bold "), schema.text("Vienna", [schema.mark("strong")]), t(" is lovely!")),
]);
prosemirrorToYXmlFragment(doc, fragment);

function read() {
  const root = yXmlFragmentToProseMirrorRootNode(fragment, schema);
  const marks = [];
  root.descendants((node) => {
    if (!node.isText) return;
    const mark = node.marks.find((m) => m.type.name === "geoMark");
    if (mark) {
      marks.push({
        text: node.text,
        attrs: mark.attrs,
        types: Object.fromEntries(Object.entries(mark.attrs).map(([k, v]) => [k, typeof v])),
        others: node.marks.filter((m) => m !== mark).map((m) => m.type.name),
      });
    }
  });
  const paragraphs = [];
  root.forEach((block) => paragraphs.push(block.textBetween(0, block.content.size, "", "\n")));
  return { paragraphs, marks };
}

await new Promise((resolve) => {
  const check = () => {
    if (read().marks.length >= Number(expected)) {
      fragment.unobserveDeep(check);
      resolve();
    }
  };
  fragment.observeDeep(check);
  check();
});

clearTimeout(timer);
console.log(JSON.stringify(read()));
provider.awareness.setLocalState(null);
provider.destroy();
process.exit(0);
