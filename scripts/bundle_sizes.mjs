#!/usr/bin/env node
// What each npm package adds to an app's bundle: minified by esbuild (ESM, bundled, React and,
// for the React bindings alone, the client left out), then gzipped (level 9). Needs `npm ci` in
// js/. Exits 1 when a package is over its target (8 KB client, 3 KB React bindings).
//
//   node scripts/bundle_sizes.mjs
import { createRequire } from "node:module";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const js = fileURLToPath(new URL("../js/", import.meta.url));
const esbuild = createRequire(`${js}package.json`)("esbuild");

const KB = 1024;
const bundles = [
  { name: "@presence-hub/client", code: 'export * from "@presence-hub/client";', target: 8 * KB },
  { name: "@presence-hub/client + elements (the hub's /static/hub.js)",
    code: 'export * from "@presence-hub/client"; export * from "@presence-hub/client/elements";' },
  { name: "@presence-hub/react (without the client)", code: 'export * from "@presence-hub/react";',
    external: ["react", "@presence-hub/client"], target: 3 * KB },
  { name: "@presence-hub/react + client", code: 'export * from "@presence-hub/react";',
    external: ["react"] },
];

let over = false;
console.log("bundle".padEnd(60), "min".padStart(8), "min+gz".padStart(8), "target".padStart(8));
for (const bundle of bundles) {
  const result = await esbuild.build({
    stdin: { contents: bundle.code, resolveDir: js, loader: "js" },
    bundle: true, minify: true, format: "esm", write: false, target: "es2022",
    external: bundle.external ?? [], logLevel: "error",
  });
  const code = result.outputFiles[0].contents;
  const gz = gzipSync(code, { level: 9 }).length;
  const kb = (n) => `${(n / KB).toFixed(2)} KB`;
  const target = bundle.target ? kb(bundle.target) : "";
  if (bundle.target && gz > bundle.target) over = true;
  console.log(bundle.name.padEnd(60), kb(code.length).padStart(8), kb(gz).padStart(8), target.padStart(8));
}
process.exit(over ? 1 : 0);
