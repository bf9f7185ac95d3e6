import "./style.css";
import { documentIdFromPath } from "./routes.js";

const documentId = documentIdFromPath(window.location.pathname);
if (documentId === null) {
  // The home page needs no editor code: load it lazily so "/" stays light.
  import("./home.js").then(({ showHome }) => showHome());
} else {
  import("./doc.js").then(({ showDocument }) => showDocument(documentId));
}
