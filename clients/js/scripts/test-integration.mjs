// Runs the integration tests with Node's test runner. Node 20 has a
// global WebSocket only with --experimental-websocket; later versions
// have it by default.

import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";

const flags = typeof WebSocket === "undefined" ? ["--experimental-websocket"] : [];
const files = readdirSync("test/integration")
  .filter((f) => f.endsWith(".test.mjs"))
  .sort()
  .map((f) => `test/integration/${f}`);
const r = spawnSync(process.execPath, [...flags, "--test", "--test-concurrency=1", ...files], {
  stdio: "inherit",
});
process.exit(r.status ?? 1);
