/**
 * The one place tests that start real `node dist/main.js` processes make sure dist/ is built
 * from the current src/ (as `npm run build` does).
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** The repository root. */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
/** The built entry point. */
export const MAIN = path.join(ROOT, 'dist', 'main.js');

function newestMtime(dir: string): number {
  let newest = 0;
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    newest = Math.max(newest, entry.isDirectory() ? newestMtime(p) : statSync(p).mtimeMs);
  }
  return newest;
}

/** True when dist/main.js is missing or older than anything in src/. */
export function distIsStale(): boolean {
  return !existsSync(MAIN) || newestMtime(path.join(ROOT, 'src')) > statSync(MAIN).mtimeMs;
}

/** Runs `tsc -p tsconfig.build.json` when dist/ is stale; `label` names the suite in the warning. Throws if the build fails. */
export function ensureBuilt(label = 'tests'): void {
  if (!distIsStale()) return;
  process.stderr.write(`[${label}] dist/ is missing or older than src/: running tsc -p tsconfig.build.json\n`);
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.build.json'], { cwd: ROOT, stdio: 'inherit' });
}
