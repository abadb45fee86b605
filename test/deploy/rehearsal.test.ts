/**
 * A rehearsal of the one-click deploy: in a fresh clone of the repository (with the working
 * tree's uncommitted changes laid over it, see support/checkout.ts), run render.yaml's
 * buildCommand and startCommand exactly as Render does (in bash, NODE_ENV=production, PORT set,
 * no REDIS_URL), then use the server as a user would. The same build serves the TLS and
 * Cluster tests, so it runs once per test run.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deployBuild, renderWebService, RENDER_ENV, type DeployBuild } from './support/checkout.js';
import { freePort, healthz, startServerProcess, type ServerProcess } from './support/server-process.js';
import { createCall, fullCall, joinCall, twoPeers } from './support/call.js';

const service = renderWebService();

describe('deploy rehearsal: render.yaml in a fresh clone', () => {
  let build: DeployBuild;
  let server: ServerProcess | undefined;
  let startError: unknown;
  let port = 0;
  /** The started server, or a failure that says why there is none. */
  const running = (): ServerProcess => {
    if (server) return server;
    throw new Error(build.code !== 0 ? `no server: the build command failed:\n${build.output}` : `no server: the start command failed: ${String(startError)}`);
  };

  beforeAll(async () => {
    build = await deployBuild();
    if (build.code !== 0) return;
    port = await freePort();
    server = await startServerProcess({ cwd: build.dir, command: service.startCommand, env: { ...RENDER_ENV, PORT: String(port) } }).catch((err: unknown) => {
      startError = err;
      return undefined;
    });
  }, 300_000);

  afterAll(async () => {
    await server?.stop('SIGKILL');
  });

  it('starts from a clone with no node_modules and no dist/, as Render does', () => {
    expect(build.hadNodeModules).toBe(false);
    expect(build.hadDist).toBe(false);
  });

  it('npm ci accepts package-lock.json (the install step of the build command)', () => {
    expect(
      build.installFallback,
      'npm ci (npm 11) refuses a package-lock.json that lacks an optional platform package of a dependency; regenerate the lockfile with `npm install --package-lock-only` against a registry that has every platform package',
    ).toBeUndefined();
  });

  it('the build command succeeds with NODE_ENV=production and writes dist/main.js', () => {
    expect(build.code, build.output).toBe(0);
    expect(existsSync(path.join(build.dir, 'dist', 'main.js'))).toBe(true);
  });

  it('the start command listens on $PORT on all interfaces and logs the InMemory layer', () => {
    expect(running().port).toBe(port);
    const lines = running().lines();
    expect(lines.find((l) => l.msg === 'listening')?.host).toBe('0.0.0.0');
    expect(lines.some((l) => l.msg === 'Using InMemory channel layer')).toBe(true);
  });

  it("passes Render's health check: GET /healthz is 200 with the memory layer", async () => {
    const h = await healthz(running().url);
    expect(h.status).toBe(200);
    expect(h.body).toMatchObject({ status: 'ok', layer: 'memory' });
    expect(service.healthCheckPath).toBe('/healthz');
  });

  it('serves the web app, the call page and the simple-peer script the pages load', async () => {
    const page = await fetch(`${running().url}/`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    const { callId } = await createCall(running().url);
    expect((await fetch(`${running().url}/c/${callId}`)).status).toBe(200);
    const vendor = await fetch(`${running().url}/vendor/simplepeer.min.js`);
    expect(vendor.status).toBe(200);
    expect((await vendor.text()).length).toBeGreaterThan(10_000);
  });

  it('places a call: both peers are welcomed and the offer is relayed with `from`', async () => {
    const { a, b } = await twoPeers(running().url, running().url);
    await fullCall(a, b, 3);
  });

  it("on Render's SIGTERM, tells peers to resume elsewhere (server-restart, 1012) and exits 0 well inside 30 s", async () => {
    const { callId } = await createCall(running().url);
    const peer = await joinCall(running().url, callId);
    const started = Date.now();
    const exit = running().stop('SIGTERM', 30_000);
    const error = await peer.c.next('error', 10_000);
    expect(error.code).toBe('server-restart');
    expect((await peer.c.closed).code).toBe(1012);
    expect(await exit).toEqual({ code: 0, signal: null });
    expect(Date.now() - started).toBeLessThan(25_000);
  });
});
