// Refreshes the screenshots the README and docs show (docs/screenshots/) from the end-to-end suite's
// latest run (test-artifacts/screenshots/), so they never drift from the pages: `npm run screenshots`
// after `npm test`. Fails if a shown screenshot was not taken by the suite.

import { copyFileSync, existsSync, readdirSync, readFileSync, statSync } from "node:fs";
import { join } from "node:path";
import { root } from "../support.mjs";

const taken = join(root, "test-artifacts", "screenshots");
const shown = join(root, "docs", "screenshots");
const readme = readFileSync(join(root, "README.md"), "utf8");
const wanted = new Set([
  ...readdirSync(shown).filter((name) => name.endsWith(".png")),
  ...[...readme.matchAll(/docs\/screenshots\/([\w.-]+\.png)/g)].map((m) => m[1]),
]);
const missing = [...wanted].filter((name) => !existsSync(join(taken, name)));
if (missing.length > 0) {
  console.error(`not taken by the end-to-end suite (run \`npm test\` first, or rename): ${missing.join(", ")}`);
  process.exit(1);
}
for (const name of [...wanted].sort()) {
  copyFileSync(join(taken, name), join(shown, name));
  console.log(`docs/screenshots/${name} ← test-artifacts/screenshots/${name} (${statSync(join(taken, name)).size} bytes)`);
}
