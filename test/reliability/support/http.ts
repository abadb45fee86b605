/**
 * HTTP probes of a running server: /healthz, /metrics counters, and raw requests.
 */
import { request } from 'node:http';

/** An HTTP answer. */
export interface Answer {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  text: string;
  json: unknown;
}

/** One HTTP request to 127.0.0.1 with a short timeout; rejects on network errors. */
export function http(
  url: string,
  opts: { method?: string; headers?: Record<string, string>; body?: string; timeoutMs?: number } = {},
): Promise<Answer> {
  return new Promise<Answer>((resolve, reject) => {
    const req = request(url, { method: opts.method ?? 'GET', headers: opts.headers, agent: false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString();
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
      res.on('error', reject);
    });
    req.setTimeout(opts.timeoutMs ?? 3000, () => req.destroy(new Error(`${opts.method ?? 'GET'} ${url}: no answer within ${opts.timeoutMs ?? 3000} ms`)));
    req.on('error', reject);
    req.end(opts.body);
  });
}

/** GET /healthz: the status code and body. */
export async function health(base: string): Promise<{ status: number; body: Record<string, unknown> }> {
  const a = await http(`${base}/healthz`);
  return { status: a.status, body: (a.json ?? {}) as Record<string, unknown> };
}

/** Every sample of a Prometheus text exposition: name{labels} → value. */
export function parseMetrics(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][\w:]*(?:\{[^}]*\})?)\s+(\S+)/.exec(line);
    if (m) out.set(m[1]!, Number(m[2]));
  }
  return out;
}

/** GET /metrics, parsed. */
export async function metrics(base: string): Promise<Map<string, number>> {
  const a = await http(`${base}/metrics`);
  if (a.status !== 200) throw new Error(`GET /metrics answered ${a.status}`);
  return parseMetrics(a.text);
}

/** signaling_errors_total{code="<code>"} (0 when the series does not exist yet). */
export async function errorCount(base: string, code: string): Promise<number> {
  return (await metrics(base)).get(`signaling_errors_total{code="${code}"}`) ?? 0;
}

/** Every signaling_errors_total series, by code. */
export async function errorCounts(base: string): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const [k, v] of await metrics(base)) {
    const m = /^signaling_errors_total\{code="([^"]+)"\}$/.exec(k);
    if (m) out[m[1]!] = v;
  }
  return out;
}

/** The difference of two errorCounts snapshots (codes that moved only). */
export function countDiff(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const d = v - (before[k] ?? 0);
    if (d !== 0) out[k] = d;
  }
  return out;
}
