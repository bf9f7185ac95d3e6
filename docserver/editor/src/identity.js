// A random, stable-per-browser name and colour for collaboration carets.

const STORAGE_KEY = "docagents.user";

export const PALETTE = [
  "#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4",
  "#0aa5a5", "#d6338a", "#7a8a00", "#9a6324", "#2f4f8f",
];

/** @typedef {{ name: string, color: string }} User */

/** @returns {User} */
export function localUser() {
  const stored = readStored();
  if (stored) return stored;
  const user = {
    name: `Guest ${100 + Math.floor(Math.random() * 900)}`,
    color: PALETTE[Math.floor(Math.random() * PALETTE.length)],
  };
  try {
    localStorage.setItem(STORAGE_KEY, JSON.stringify(user));
  } catch {
    // storage disabled (private mode): a new name per page load is fine
  }
  return user;
}

/** @returns {User | null} */
function readStored() {
  try {
    const value = JSON.parse(localStorage.getItem(STORAGE_KEY) ?? "null");
    if (typeof value?.name === "string" && typeof value?.color === "string" && value.name) {
      return { name: value.name, color: value.color };
    }
  } catch {
    // unreadable entry: replaced below
  }
  return null;
}
