import { defineConfig } from "vite";

// The Python docserver serves the built bundle under /static/ and index.html
// at / and /doc/{document_id}, so asset URLs must be absolute.
export default defineConfig(({ command }) => ({
  base: command === "build" ? "/static/" : "/",
  build: {
    outDir: "../static",
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 600,
  },
  server: {
    proxy: {
      "/api": "http://127.0.0.1:8787",
      "/parties": { target: "ws://127.0.0.1:8787", ws: true },
    },
  },
}));
