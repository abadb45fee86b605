/**
 * Checkouts of the repository as Render would get it: `git clone`, then the working tree's
 * changes laid over it, so a test sees exactly what the next commit would hold.
 *
 * Why a clone and not the working tree: the clone has no dist/, no node_modules and none of
 * the files .gitignore keeps out of a commit, as on Render, so a build that only works because
 * of something left lying around fails here too. Why the overlay: tests run before the commit,
 * and `git clone` alone holds only committed files; copying `git ls-files --cached --others
 * --exclude-standard` (tracked and untracked, minus the ignored) over the clone gives what the
 * commit would hold. (`git worktree add` would also check out only committed files, and it
 * writes into the shared .git while teammates use it.)
 */
import { execFileSync } from 'node:child_process';
import { copyFileSync, cpSync, existsSync, mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse } from 'yaml';
import { runCommand } from './server-process.js';

/** The repository root (this file is test/deploy/support/checkout.ts). */
export const REPO_ROOT = path.resolve(import.meta.dirname, '..', '..', '..');

function git(args: string[], cwd = REPO_ROOT): string {
  return execFileSync('git', args, { cwd, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 });
}

/** The files a commit of the working tree would hold (tracked or untracked, not ignored, present on disk). */
export function committableFiles(): string[] {
  return git(['ls-files', '--cached', '--others', '--exclude-standard', '-z'])
    .split('\0')
    .filter((f) => f !== '' && existsSync(path.join(REPO_ROOT, f)) && statSync(path.join(REPO_ROOT, f)).isFile());
}

/** Clones the repository into `dest` (which must not exist) and lays the working tree's changes over it. */
export function stageCheckout(dest: string): void {
  git(['clone', '--quiet', '--no-hardlinks', REPO_ROOT, dest]);
  for (const f of committableFiles()) {
    const to = path.join(dest, f);
    mkdirSync(path.dirname(to), { recursive: true });
    copyFileSync(path.join(REPO_ROOT, f), to);
  }
  for (const f of git(['ls-files', '--deleted', '-z']).split('\0').filter(Boolean)) rmSync(path.join(dest, f), { force: true });
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

const BUILD_PREFIX = 'callsig-deploy-build-';

/** Removes shared builds left by test runs that have ended (their runner pid is gone). */
function pruneOldBuilds(): void {
  for (const name of readdirSync(os.tmpdir())) {
    const m = new RegExp(`^${BUILD_PREFIX}(\\d+)-`).exec(name);
    if (m && !alive(Number(m[1]))) rmSync(path.join(os.tmpdir(), name), { recursive: true, force: true });
  }
}

/** What Render sets, of what matters to the build and the start. */
export const RENDER_ENV: Readonly<Record<string, string>> = Object.freeze({ NODE_ENV: 'production', RENDER: 'true' });

/** render.yaml's web service: the commands Render runs. */
export function renderWebService(): { buildCommand: string; startCommand: string; healthCheckPath: string } {
  const doc = parse(readFileSync(path.join(REPO_ROOT, 'render.yaml'), 'utf8')) as { services: Array<{ type: string; buildCommand: string; startCommand: string; healthCheckPath: string }> };
  const web = doc.services.find((s) => s.type === 'web');
  if (!web) throw new Error('render.yaml has no web service');
  return web;
}

/** The outcome of running render.yaml's buildCommand in a fresh checkout. */
export interface DeployBuild {
  /** The checkout: run the startCommand here. */
  dir: string;
  /** The build command's exit code and output (after the fallback below, if it was needed). */
  code: number | null;
  output: string;
  /** Whether the fresh checkout had node_modules or dist/ before the build (it must not). */
  hadNodeModules: boolean;
  hadDist: boolean;
  /** Set when `npm ci` refused package-lock.json and node_modules was copied instead: npm's reason. */
  installFallback?: string;
}

/**
 * npm 11 refuses a lockfile that lacks other platforms' optional packages ("Missing: ... from
 * lock file"). Recognised so the rest of the build can still be rehearsed; the rehearsal test
 * reports it as a failure of its own.
 */
const LOCKFILE_REFUSAL = /npm ci` can only install packages when your package\.json and package-lock\.json[\s\S]*?(Missing: \S+ from lock file)/;

let memo: Promise<DeployBuild> | undefined;

/**
 * render.yaml's buildCommand, run exactly (in bash, with NODE_ENV=production) in a fresh
 * checkout of the working tree: once per vitest run, shared by every test file (the forks
 * share their parent's pid; a lock directory serialises them), like `npm test` builds once.
 * Only if `npm ci` refuses the lockfile is its step replaced by copying node_modules from the
 * working tree; the remaining steps still run exactly as written.
 */
export function deployBuild(): Promise<DeployBuild> {
  memo ??= buildOnce();
  return memo;
}

/** deployBuild(), failing unless the build succeeded: the directory to run `node dist/main.js` in. */
export async function builtCheckout(): Promise<string> {
  const b = await deployBuild();
  if (b.code !== 0) throw new Error(`render.yaml's build command failed in ${b.dir}:\n${b.output}`);
  return b.dir;
}

async function buildOnce(): Promise<DeployBuild> {
  pruneOldBuilds();
  const root = path.join(os.tmpdir(), `${BUILD_PREFIX}${process.ppid}-run`);
  const result = path.join(root, 'build.json');
  const lock = `${root}.lock`;
  const deadline = Date.now() + 300_000;
  for (;;) {
    if (existsSync(result)) return JSON.parse(readFileSync(result, 'utf8')) as DeployBuild;
    try {
      mkdirSync(lock);
    } catch {
      if (Date.now() > deadline) throw new Error(`timed out waiting for another test file to build ${root}`);
      await new Promise((r) => setTimeout(r, 250));
      continue;
    }
    try {
      if (existsSync(result)) continue;
      rmSync(root, { recursive: true, force: true });
      const build = await runRenderBuild(path.join(root, 'repo'));
      writeFileSync(result, JSON.stringify(build));
      return build;
    } finally {
      rmSync(lock, { recursive: true, force: true });
    }
  }
}

async function runRenderBuild(dir: string): Promise<DeployBuild> {
  const { buildCommand } = renderWebService();
  stageCheckout(dir);
  const hadNodeModules = existsSync(path.join(dir, 'node_modules'));
  const hadDist = existsSync(path.join(dir, 'dist'));
  let run = await runCommand(buildCommand, dir, { ...RENDER_ENV }, 300_000);
  const refusal = run.code !== 0 ? LOCKFILE_REFUSAL.exec(run.output) : null;
  if (!refusal) return { dir, ...run, hadNodeModules, hadDist };
  console.warn(`[deploy build] npm ci refused package-lock.json (${refusal[1]}); copying node_modules instead and running the rest of the build command.`);
  rmSync(path.join(dir, 'node_modules'), { recursive: true, force: true });
  cpSync(path.join(REPO_ROOT, 'node_modules'), path.join(dir, 'node_modules'), { recursive: true, verbatimSymlinks: true });
  const rest = buildCommand.split('&&').map((s) => s.trim()).filter((s) => !/^npm ci\b/.test(s)).join(' && ');
  run = await runCommand(rest, dir, { ...RENDER_ENV }, 300_000);
  return { dir, ...run, hadNodeModules, hadDist, installFallback: refusal[1] };
}
