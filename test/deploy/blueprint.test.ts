/**
 * The two Render Blueprints, checked against Render's own JSON Schema and against what a
 * one-click deploy on the free tier needs. The schema is read from shared/ beside the repo (CI
 * clones it there); test/deploy/render-yaml.schema.json is the fallback copy if that is absent.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { REPO_ROOT } from './support/checkout.js';

const SCHEMA_PLACES = [
  path.resolve(REPO_ROOT, '..', 'shared', 'render-yaml.schema.json'),
  path.resolve(import.meta.dirname, 'render-yaml.schema.json'),
];

function loadSchema(): object {
  const found = SCHEMA_PLACES.find((p) => existsSync(p));
  if (!found) throw new Error(`Render's Blueprint schema was not found; looked in ${SCHEMA_PLACES.join(' and ')}`);
  return JSON.parse(readFileSync(found, 'utf8')) as object;
}

const validate = new Ajv2020({ strict: false, allErrors: true }).compile(loadSchema());

function errorsOf(doc: unknown): string[] {
  return validate(doc) ? [] : (validate.errors ?? []).map((e) => `${e.instancePath || '/'} ${e.message ?? ''} ${JSON.stringify(e.params)}`);
}

interface EnvVar {
  key?: string;
  value?: string | number;
  sync?: boolean;
  generateValue?: boolean;
  fromService?: { type: string; name: string; property?: string; envVarKey?: string };
}
interface Service {
  type: string;
  name: string;
  runtime?: string;
  plan?: string;
  region?: string;
  buildCommand?: string;
  startCommand?: string;
  preDeployCommand?: string;
  healthCheckPath?: string;
  numInstances?: number;
  scaling?: unknown;
  envVars?: EnvVar[];
  ipAllowList?: unknown[];
  maxmemoryPolicy?: string;
}
interface Blueprint {
  services: Service[];
}

function read(file: string): { text: string; doc: Blueprint } {
  const text = readFileSync(path.join(REPO_ROOT, file), 'utf8');
  return { text, doc: parse(text) as Blueprint };
}

function web(doc: Blueprint): Service {
  const services = doc.services.filter((s) => s.type === 'web');
  expect(services, 'exactly one web service').toHaveLength(1);
  return services[0]!;
}

const pkg = JSON.parse(readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string>; engines: { node: string } };

describe.each(['render.yaml', 'render.keyvalue.yaml'])('%s', (file) => {
  it("is valid against Render's Blueprint schema", () => {
    expect(errorsOf(read(file).doc)).toEqual([]);
  });

  it('means the same to a YAML 1.1 parser as to a YAML 1.2 one (no unquoted off/yes/no)', () => {
    const { text } = read(file);
    expect(parse(text, { version: '1.1' })).toEqual(parse(text, { version: '1.2' }));
  });

  it('runs one free Node web service, health-checked on /healthz', () => {
    const s = web(read(file).doc);
    expect(s.runtime).toBe('node');
    expect(s.plan).toBe('free');
    expect(s.healthCheckPath).toBe('/healthz');
    // Free web services run one instance, and Render rejects preDeployCommand on free.
    expect(s.numInstances ?? 1).toBe(1);
    expect(s.scaling).toBeUndefined();
    expect(s.preDeployCommand).toBeUndefined();
  });

  it('builds with devDependencies installed although Render sets NODE_ENV=production', () => {
    const cmd = web(read(file).doc).buildCommand ?? '';
    const steps = cmd.split('&&').map((s) => s.trim());
    const install = steps.find((s) => /^npm (ci|install)\b/.test(s));
    expect(install, `an npm install step in "${cmd}"`).toBeDefined();
    expect(/--include[= ]dev\b|--production=false\b/.test(install!) || /NODE_ENV=(development|dev)\b/.test(install!), `"${install}" keeps devDependencies`).toBe(true);
    expect(steps.at(-1)).toBe('npm run build');
    expect(pkg.scripts.build).toBeDefined();
  });

  it('starts the entry point the build writes', () => {
    const start = web(read(file).doc).startCommand;
    expect([`node ${pkg.scripts.start?.replace(/^node /, '')}`, 'npm start']).toContain(start);
    expect(pkg.scripts.start).toBe('node dist/main.js');
  });

  it('sets no variable the server would refuse at start-up (no literal WEB_CONCURRENCY above 1, no secrets in the file)', () => {
    for (const v of web(read(file).doc).envVars ?? []) {
      if (v.key === 'WEB_CONCURRENCY') expect(Number(v.value)).toBe(1);
      if (/SECRET|TOKEN|PASSWORD/.test(v.key ?? '')) expect(v.value, `${v.key} must not be written into the Blueprint`).toBeUndefined();
    }
  });
});

describe('render.yaml (the one-click deploy)', () => {
  it('offers REDIS_URL without requiring it: prompted (sync: false) or absent, never a value', () => {
    const v = (web(read('render.yaml').doc).envVars ?? []).find((e) => e.key === 'REDIS_URL');
    if (v !== undefined) {
      expect(v).toEqual({ key: 'REDIS_URL', sync: false });
    }
    const s = web(read('render.yaml').doc);
    expect(s.envVars?.some((e) => e.key === 'REDIS_CLUSTER_URLS' && e.value !== undefined) ?? false).toBe(false);
  });

  it('needs no other Render resource (no Key Value, no database)', () => {
    expect(read('render.yaml').doc.services.map((s) => s.type)).toEqual(['web']);
  });
});

describe('render.keyvalue.yaml (with Render Key Value)', () => {
  const { doc } = read('render.keyvalue.yaml');

  it("wires REDIS_URL to the Key Value instance's connectionString", () => {
    const v = (web(doc).envVars ?? []).find((e) => e.key === 'REDIS_URL');
    expect(v?.fromService?.type).toBe('keyvalue');
    expect(v?.fromService?.property).toBe('connectionString');
    const kv = doc.services.find((s) => s.name === v?.fromService?.name);
    expect(kv?.type, `a service named ${v?.fromService?.name}`).toBe('keyvalue');
  });

  it('keeps the Key Value instance private, in the web service region, and never evicting kept signals', () => {
    const kv = doc.services.find((s) => s.type === 'keyvalue')!;
    expect(kv.ipAllowList).toEqual([]);
    expect(kv.region).toBe(web(doc).region);
    expect(kv.maxmemoryPolicy).toBe('noeviction');
    expect(kv.plan).toBe('free');
  });

  it('builds, starts and health-checks the web service exactly as render.yaml does', () => {
    const pick = (s: Service) => ({ runtime: s.runtime, plan: s.plan, region: s.region, buildCommand: s.buildCommand, startCommand: s.startCommand, healthCheckPath: s.healthCheckPath });
    expect(pick(web(doc))).toEqual(pick(web(read('render.yaml').doc)));
  });
});

describe('the schema check itself', () => {
  it('fails a broken Blueprint: the old `env: node`, an unknown plan, and a Key Value without ipAllowList', () => {
    const broken = structuredClone(read('render.keyvalue.yaml').doc) as unknown as { services: Array<Record<string, unknown>> };
    const w = broken.services.find((s) => s.type === 'web')!;
    delete w.runtime;
    w.env = 'node';
    w.plan = 'hobby';
    delete broken.services.find((s) => s.type === 'keyvalue')!.ipAllowList;
    const errors = errorsOf(broken).join('\n');
    expect(errors).toContain('must NOT have additional properties');
    expect(errors).toContain('"additionalProperty":"env"');
    expect(errors).toContain("must have required property 'ipAllowList'");
    expect(errors).toMatch(/\/plan must be equal to one of the allowed values/);
  });

  it('fails a Blueprint whose web service has no runtime', () => {
    const broken = structuredClone(read('render.yaml').doc);
    delete web(broken).runtime;
    expect(errorsOf(broken).join('\n')).toContain("must have required property 'runtime'");
  });
});

describe('the Node version Render picks', () => {
  it('is pinned by .node-version to a major version package.json engines allows', () => {
    const pinned = readFileSync(path.join(REPO_ROOT, '.node-version'), 'utf8').trim();
    const major = Number(/^v?(\d+)/.exec(pinned)?.[1]);
    expect(major).toBeGreaterThanOrEqual(20);
    // engines: ">=20.11 <23": the pinned major must fall in that range.
    const lower = Number(/>=\s*(\d+)/.exec(pkg.engines.node)?.[1]);
    const upper = Number(/<\s*(\d+)/.exec(pkg.engines.node)?.[1]);
    expect(major).toBeGreaterThanOrEqual(lower);
    expect(major).toBeLessThan(upper);
  });
});

describe('the README\'s deploy sections', () => {
  const text = readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');

  it('names only environment variables the server reads', () => {
    const config = readFileSync(path.join(REPO_ROOT, 'src', 'config.ts'), 'utf8');
    // Variables of the test run, not the server: each must be read by the test setup instead.
    const testSetup = readFileSync(path.join(REPO_ROOT, 'test', 'helpers', 'setup.ts'), 'utf8');
    const platform = new Set(['NODE_ENV', 'NODE_VERSION', 'NODE_EXTRA_CA_CERTS', 'RENDER_CPU_COUNT', 'REPO_URL']);
    const named = new Set([...text.matchAll(/`([A-Z][A-Z0-9]*_[A-Z0-9_]+|PORT)(?:=[^`]*)?`/g)].map((m) => m[1]!));
    expect(named.size).toBeGreaterThan(3);
    for (const name of named) {
      if (platform.has(name)) continue;
      if (testSetup.includes(`process.env.${name}`)) continue;
      expect(config.includes(`'${name}'`), `README.md names ${name}, which src/config.ts does not read`).toBe(true);
    }
  });

  it('has the Deploy to Render button pointing at render.com/deploy with the repository URL placeholder', () => {
    expect(text).toContain('https://render.com/images/deploy-to-render-button.svg');
    expect(text).toMatch(/\]\(https:\/\/render\.com\/deploy\?repo=REPO_URL\)/);
  });
});
