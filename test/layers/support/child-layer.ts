/**
 * Runs the layer in a child process, for what only another process shows: a worker killed
 * mid-stream, a process that must exit by itself after close(). src/layers is transpiled to a
 * temporary directory with the TypeScript compiler (no build of the whole app needed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, symlinkSync, writeFileSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
let built: string | undefined;

/** Transpiles src/layers once per test process; returns the directory holding layers/index.js. */
export function buildLayers(): string {
  if (built) return built;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'callsig-layers-'));
  mkdirSync(path.join(dir, 'layers'));
  const src = path.join(ROOT, 'src', 'layers');
  for (const file of readdirSync(src).filter((f) => f.endsWith('.ts'))) {
    const out = ts.transpileModule(readFileSync(path.join(src, file), 'utf8'), {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022, verbatimModuleSyntax: true },
    });
    writeFileSync(path.join(dir, 'layers', file.replace(/\.ts$/, '.js')), out.outputText);
  }
  writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  built = dir;
  return dir;
}

/** A child process running `script` (an ES module body that may import './layers/index.js'). */
export interface Child {
  proc: ChildProcess;
  /** Lines the child printed so far. */
  lines: string[];
  /** Waits for a printed line matching `pattern`. */
  waitFor(pattern: RegExp, ms?: number): Promise<string>;
  /** Resolves with the exit code (or the signal) once the child exits. */
  exited: Promise<number | NodeJS.Signals>;
}

export function runChild(script: string, args: string[] = []): Child {
  const dir = buildLayers();
  const file = path.join(dir, `child-${Math.random().toString(36).slice(2)}.mjs`);
  writeFileSync(file, script);
  const proc = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const listeners = new Set<() => void>();
  let buffer = '';
  proc.stdout!.on('data', (chunk: Buffer) => {
    buffer += chunk.toString();
    const parts = buffer.split('\n');
    buffer = parts.pop()!;
    lines.push(...parts);
    for (const l of listeners) l();
  });
  let stderr = '';
  proc.stderr!.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const exited = new Promise<number | NodeJS.Signals>((resolve) => {
    proc.once('exit', (code, signal) => resolve(code ?? signal!));
  });
  return {
    proc,
    lines,
    exited,
    waitFor(pattern, ms = 10_000) {
      return new Promise((resolve, reject) => {
        const check = (): boolean => {
          const line = lines.find((l) => pattern.test(l));
          if (line === undefined) return false;
          listeners.delete(onLine);
          clearTimeout(timer);
          resolve(line);
          return true;
        };
        const onLine = (): void => void check();
        const timer = setTimeout(() => {
          listeners.delete(onLine);
          reject(new Error(`child never printed ${pattern}; printed ${JSON.stringify(lines)}; stderr ${stderr}`));
        }, ms);
        listeners.add(onLine);
        check();
      });
    },
  };
}
