// pm2 process file for docagents: `pm2 start pm2/ecosystem.config.js`.
// Paths are relative to the repository root (cwd below); the virtualenv is the
// one scripts/setup creates. Both apps read the same .env in the repository root.
const path = require("path");

const root = path.resolve(__dirname, "..");
const bin = path.join(root, ".venv", "bin", "docagents");
// The manager detaches its workers within SHUTDOWN_TIMEOUT_S (8 s by default)
// after SIGINT; give it longer than that before pm2 sends SIGKILL.
const killTimeoutMs = 15000;

module.exports = {
  apps: [
    {
      name: "docagents-docserver",
      script: bin,
      args: "docserver",
      interpreter: "none",
      cwd: root,
      autorestart: true,
      exp_backoff_restart_delay: 200,
      kill_timeout: killTimeoutMs,
      merge_logs: true,
      time: true,
      env: { LOG_FORMAT: "json" },
    },
    {
      name: "docagents-manager",
      script: bin,
      args: "manager",
      interpreter: "none",
      cwd: root,
      autorestart: true,
      // 200 ms, doubling up to 15 s, reset after 30 s of uptime.
      exp_backoff_restart_delay: 200,
      max_restarts: 50,
      min_uptime: "30s",
      kill_timeout: killTimeoutMs,
      merge_logs: true,
      time: true,
      env: { LOG_FORMAT: "json" },
    },
  ],
};
