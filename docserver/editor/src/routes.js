// URL <-> document id. The docserver serves index.html at / and /doc/{id}.

const DOC_PREFIX = "/doc/";

/** @param {string} documentId */
export function documentPath(documentId) {
  return DOC_PREFIX + encodeURIComponent(documentId);
}

/**
 * The document id of a /doc/{id} path, or null for any other path.
 * @param {string} pathname
 * @returns {string | null}
 */
export function documentIdFromPath(pathname) {
  if (!pathname.startsWith(DOC_PREFIX)) return null;
  const raw = pathname.slice(DOC_PREFIX.length);
  if (raw.length === 0) return null;
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw; // malformed escape: use it verbatim, the server decides
  }
}
