// prepack.mjs: what `npm pack` / `npm publish` run first (package.json "prepack"), so the tarball holds one
// generated copy of two things the repository keeps once: the LICENSE (copied from the repository root) and the
// .d.ts declarations (one beside each module, written by tsc from its JSDoc: tsconfig.types.json; TypeScript finds
// ditweb.d.ts next to ditweb.js through package.json "exports"). Both are ignored by git; `node prepack.mjs clean`
// (package.json "postpack") removes them again.
import { execFileSync } from "node:child_process";
import { copyFileSync, existsSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const clean = () => {
  for (const f of readdirSync(here)) if (f.endsWith(".d.ts")) rmSync(join(here, f));
  rmSync(join(here, "LICENSE"), { force: true });
};

if (process.argv[2] === "clean") {
  clean();
} else {
  const tsc = process.env.TSC || join(here, "..", "data", "npm-ts", "node_modules", ".bin", "tsc");
  if (!existsSync(tsc)) {
    console.error(`prepack: ${tsc} not found: run scripts/setup.sh (it installs typescript into data/npm-ts), or set TSC`);
    process.exit(1);
  }
  clean();
  copyFileSync(join(here, "..", "LICENSE"), join(here, "LICENSE"));
  execFileSync(tsc, ["-p", join(here, "tsconfig.types.json")], { stdio: "inherit" });
  const listed = new Set(JSON.parse(readFileSync(join(here, "package.json"), "utf-8")).files);
  for (const f of readdirSync(here)) if (f.endsWith(".d.ts") && !listed.has(f.replace(/\.d\.ts$/, ".js"))) rmSync(join(here, f));
}
