// The #presence list: one item per client that publishes an awareness user.

/**
 * @param {import("y-protocols/awareness").Awareness} awareness
 * @param {HTMLUListElement} list
 */
export function bindPresenceList(awareness, list) {
  const render = () => {
    const selfId = awareness.clientID;
    const entries = [...awareness.getStates().entries()]
      .filter(([, state]) => typeof state?.user?.name === "string")
      .map(([clientId, state]) => ({
        clientId,
        name: /** @type {string} */ (state.user.name),
        color: typeof state.user.color === "string" ? state.user.color : "#888888",
        agent: state.type === "agent",
        self: clientId === selfId,
      }))
      .sort((a, b) => rank(a) - rank(b) || a.name.localeCompare(b.name) || a.clientId - b.clientId);
    list.replaceChildren(
      ...entries.map((entry) => {
        const li = document.createElement("li");
        li.textContent = entry.name;
        li.dataset.clientId = String(entry.clientId);
        li.style.setProperty("--user-color", entry.color);
        if (entry.agent) li.classList.add("agent");
        if (entry.self) {
          li.classList.add("self");
          li.title = "you";
        }
        return li;
      }),
    );
  };
  awareness.on("change", render);
  render();
}

/** @param {{ self: boolean, agent: boolean }} entry */
function rank(entry) {
  if (entry.self) return 0;
  return entry.agent ? 1 : 2;
}
