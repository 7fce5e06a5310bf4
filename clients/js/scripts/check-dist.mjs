// Fails when the committed dist/ is not what the sources build to: the
// server embeds dist/fanout.js, so it must never lag behind src/.
// Builds into a temporary directory and compares file lists and bytes.

import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const dist = join(root, "dist");
const tmp = mkdtempSync(join(tmpdir(), "fanout-client-dist-"));
try {
  execFileSync(process.execPath, [join(root, "scripts", "build.mjs"), tmp], { cwd: root, stdio: "inherit" });
  const list = (dir) => {
    try {
      return readdirSync(dir).sort();
    } catch {
      return [];
    }
  };
  const want = list(tmp);
  const have = list(dist);
  const problems = [];
  for (const f of want) {
    if (!have.includes(f)) problems.push(`missing: dist/${f}`);
    else if (!readFileSync(join(tmp, f)).equals(readFileSync(join(dist, f)))) problems.push(`differs: dist/${f}`);
  }
  for (const f of have) if (!want.includes(f)) problems.push(`not built from src/: dist/${f}`);
  if (problems.length > 0) {
    console.error(`check-dist: dist/ is out of date with src/:\n  ${problems.join("\n  ")}\nRun \`npm run build\` in clients/js and commit dist/.`);
    process.exitCode = 1;
  } else {
    console.log(`check-dist: dist/ matches a fresh build (${want.length} files)`);
  }
} finally {
  rmSync(tmp, { recursive: true, force: true });
}
