// A real y-websocket client (npm yjs + y-websocket + ws) for the docserver tests.
//
// usage: node roundtrip.mjs SERVER_URL ROOM MODE TIMEOUT_MS
//   SERVER_URL  e.g. ws://127.0.0.1:8787/parties/document   ROOM  the encoded document id
//   MODE edit:  append "from js;" to the Y.Text "notes", wait until it also holds
//               "from python;", print {"text": ...} and exit 0
//   MODE read:  print {"text": ...} once synced and exit 0
import WebSocket from "ws";
import { WebsocketProvider } from "y-websocket";
import * as Y from "yjs";

const [serverUrl, room, mode, timeoutMs] = process.argv.slice(2);

const ydoc = new Y.Doc();
const provider = new WebsocketProvider(serverUrl, room, ydoc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
});
provider.awareness.setLocalStateField("user", { name: "Node human", color: "#0a0" });
const notes = ydoc.getText("notes");

const finish = (code, payload) => {
  process.stdout.write(`${JSON.stringify(payload)}\n`);
  provider.destroy();
  process.exit(code);
};
setTimeout(() => finish(2, { error: "timeout", text: notes.toString() }), Number(timeoutMs));

await new Promise((resolve) => {
  if (provider.synced) resolve();
  provider.on("sync", (synced) => synced && resolve());
});

if (mode === "read") {
  finish(0, { text: notes.toString() });
} else if (mode === "edit") {
  notes.insert(notes.length, "from js;");
  const check = () => {
    if (notes.toString().includes("from python;")) finish(0, { text: notes.toString() });
  };
  notes.observe(check);
  check();
} else {
  finish(2, { error: `unknown mode ${mode}` });
}
