import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

const SRC = path.resolve(import.meta.dirname, '..', 'src');

function files(dir: string): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = path.join(dir, f);
    return statSync(p).isDirectory() ? files(p) : p.endsWith('.ts') ? [p] : [];
  });
}

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return [...text.matchAll(/(?:import|export)[^'"]*?from\s+['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/g)].map((m) => m[1] ?? m[2]!);
}

const rel = (f: string) => path.relative(SRC, f);

describe('the layering of design.md', () => {
  it('src/layers imports nothing of ours outside src/layers', () => {
    for (const f of files(path.join(SRC, 'layers'))) {
      for (const i of imports(f).filter((i) => i.startsWith('.'))) {
        expect(path.resolve(path.dirname(f), i).startsWith(path.join(SRC, 'layers')), `${rel(f)} imports ${i}`).toBe(true);
      }
    }
  });

  it('src/consumers imports only src/layers of ours', () => {
    for (const f of files(path.join(SRC, 'consumers'))) {
      for (const i of imports(f).filter((i) => i.startsWith('.'))) {
        const target = path.resolve(path.dirname(f), i);
        expect(target.startsWith(path.join(SRC, 'consumers')) || target.startsWith(path.join(SRC, 'layers')), `${rel(f)} imports ${i}`).toBe(true);
      }
    }
  });

  it('only src/hono touches ws, hono/ws or @hono/node-ws', () => {
    for (const f of files(SRC).filter((f) => !f.startsWith(path.join(SRC, 'hono')))) {
      for (const i of imports(f)) expect(['ws', 'hono/ws', '@hono/node-ws'].includes(i), `${rel(f)} imports ${i}`).toBe(false);
    }
  });

  it('only the Redis transport file imports ioredis', () => {
    const importers = files(SRC).filter((f) => imports(f).includes('ioredis')).map(rel);
    expect(importers.length).toBe(1);
    expect(importers[0]).toMatch(/^layers\/redis/);
  });

  it('src/signaling does not reach into src/hono', () => {
    for (const f of files(path.join(SRC, 'signaling'))) {
      for (const i of imports(f)) expect(i.includes('/hono'), `${rel(f)} imports ${i}`).toBe(false);
    }
  });
});
