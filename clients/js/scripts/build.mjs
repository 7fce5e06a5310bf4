// Builds the package: `node scripts/build.mjs <outdir>` bundles src/ into
// one self-contained ESM file <outdir>/fanout.js and writes the type
// declarations (<outdir>/fanout.d.ts and the files it imports).
// `node scripts/build.mjs --test <outdir>` instead compiles every module of
// src/ on its own, for the unit tests of internals.
//
// The output depends only on the sources and the pinned tools: no
// timestamps, no absolute paths (check-dist relies on it).

import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const root = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const args = process.argv.slice(2);
const testMode = args[0] === "--test";
const out = resolve(root, testMode ? args[1] : args[0] ?? "dist");
if (!out || out === root) throw new Error("usage: build.mjs [--test] <outdir>");

const pkg = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
const common = {
  absWorkingDir: root,
  format: "esm",
  platform: "neutral",
  target: "es2020",
  charset: "utf8",
  legalComments: "none",
  logLevel: "warning",
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

if (testMode) {
  const entries = readdirSync(join(root, "src"))
    .filter((f) => f.endsWith(".ts"))
    .map((f) => `src/${f}`);
  await esbuild.build({ ...common, entryPoints: entries, outdir: out, bundle: false });
} else {
  await esbuild.build({
    ...common,
    entryPoints: ["src/fanout.ts"],
    outfile: join(out, "fanout.js"),
    bundle: true,
    banner: {
      js: `// ${pkg.name} ${pkg.version} (${pkg.license}). Built from clients/js/src; do not edit.`,
    },
  });
  const tsc = join(root, "node_modules", "typescript", "bin", "tsc");
  execFileSync(
    process.execPath,
    [tsc, "-p", join(root, "tsconfig.json"), "--emitDeclarationOnly", "--outDir", out],
    { cwd: root, stdio: "inherit" },
  );
  pruneDeclarations(out, "fanout.d.ts");
}

/** Keeps only the declaration files the entry point reaches (internal
 * modules have no public types). */
function pruneDeclarations(dir, entry) {
  const keep = new Set();
  const visit = (file) => {
    if (keep.has(file)) return;
    keep.add(file);
    const text = readFileSync(join(dir, file), "utf8");
    for (const m of text.matchAll(/from "\.\/([^"]+)\.js"/g)) visit(`${m[1]}.d.ts`);
  };
  visit(entry);
  for (const f of readdirSync(dir)) {
    if (f.endsWith(".d.ts") && !keep.has(f)) rmSync(join(dir, f));
  }
}
