// A plain y-websocket client (npm yjs + y-websocket + ws), wired like the README's
// snippet: Collaboration without a collaboration caret, so its awareness state
// stays {} (y-websocket's default) for its whole life.
//
// usage: node plain_client.mjs SERVER_URL ROOM [FRAGMENT]
//   stdout, one JSON object a line:
//     {"event":"synced"}
//     {"event":"agent","present":true|false,"t":MS}   whenever the agent's presence changes
//     {"event":"marks","marks":[[text, placeName], ...]}  whenever the marked spans change
//   stdin, one command a line:
//     type SENTENCE    append a paragraph and type SENTENCE into it
//     forge-remove     send a removal of the agent's awareness state (clock + 1)
//     quit             leave (close the provider) and exit 0
import readline from "node:readline";
import WebSocket from "ws";
import { WebsocketProvider } from "y-websocket";
import * as encoding from "lib0/encoding";
import * as Y from "yjs";

const [serverUrl, room, fragmentName = "prosemirror"] = process.argv.slice(2);
const started = Date.now();
const emit = (payload) => process.stdout.write(`${JSON.stringify(payload)}\n`);

const ydoc = new Y.Doc();
const provider = new WebsocketProvider(serverUrl, room, ydoc, {
  WebSocketPolyfill: WebSocket,
  disableBc: true,
});
const fragment = ydoc.getXmlFragment(fragmentName);

const agentIds = () =>
  [...provider.awareness.getStates().entries()]
    .filter(([, state]) => state && state.type === "agent")
    .map(([id]) => id);
let agentPresent = false;
const checkAgent = () => {
  const present = agentIds().length > 0;
  if (present !== agentPresent) {
    agentPresent = present;
    emit({ event: "agent", present, t: Date.now() - started });
  }
};
provider.awareness.on("change", checkAgent);

const marks = () => {
  const found = [];
  const walk = (node) => {
    for (const child of node.toArray()) {
      if (child instanceof Y.XmlText) {
        for (const op of child.toDelta()) {
          if (op.attributes && op.attributes.geoMark) {
            found.push([op.insert, op.attributes.geoMark.placeName]);
          }
        }
      } else if (child instanceof Y.XmlElement) {
        walk(child);
      }
    }
  };
  walk(fragment);
  return found;
};
let lastMarks = "[]";
fragment.observeDeep(() => {
  const now = JSON.stringify(marks());
  if (now !== lastMarks) {
    lastMarks = now;
    emit({ event: "marks", marks: JSON.parse(now) });
  }
});

provider.on("sync", (synced) => {
  if (synced) {
    emit({ event: "synced" });
    checkAgent();
  }
});

const typeSentence = (sentence) => {
  const paragraph = new Y.XmlElement("paragraph");
  const text = new Y.XmlText();
  paragraph.insert(0, [text]);
  fragment.insert(fragment.length, [paragraph]);
  for (const ch of sentence) {
    text.insert(text.length, ch); // one transaction per keystroke, like a person
  }
};

const forgeRemoval = () => {
  // What an attacker (or a confused client) sends: the agent's id, its clock + 1, null.
  for (const id of agentIds()) {
    const meta = provider.awareness.meta.get(id);
    const encoder = encoding.createEncoder();
    encoding.writeVarUint(encoder, 1);
    encoding.writeVarUint(encoder, id);
    encoding.writeVarUint(encoder, (meta ? meta.clock : 0) + 1);
    encoding.writeVarString(encoder, "null");
    const update = encoding.toUint8Array(encoder);
    const message = encoding.createEncoder();
    encoding.writeVarUint(message, 1); // messageAwareness
    encoding.writeVarUint8Array(message, update);
    provider.ws.send(encoding.toUint8Array(message));
  }
  emit({ event: "forged" });
};

const lines = readline.createInterface({ input: process.stdin });
lines.on("line", (line) => {
  const [command, ...rest] = line.split(" ");
  if (command === "type") {
    typeSentence(rest.join(" "));
  } else if (command === "forge-remove") {
    forgeRemoval();
  } else if (command === "quit") {
    provider.destroy();
    setTimeout(() => process.exit(0), 50);
  }
});
lines.on("close", () => {
  provider.destroy();
  setTimeout(() => process.exit(0), 50);
});
