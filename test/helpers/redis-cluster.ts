/**
 * A throwaway Redis Cluster on loopback for tests: `masters` masters with `replicas` replicas
 * each (default three and one), no persistence, a short node timeout so a failover takes
 * seconds. Built the documented way: `redis-server --cluster-enabled yes` per node, then
 * `redis-cli --cluster create ... --cluster-replicas N --cluster-yes`, then wait for
 * `cluster_state:ok` everywhere and every replica in sync.
 */
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { freePort } from './redis-server.js';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

function onPath(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** True when redis-server and redis-cli are on PATH (describe.skipIf(!hasRedisCluster)). */
export const hasRedisCluster = onPath('redis-server') && onPath('redis-cli');

/** One node of the cluster. */
export interface ClusterNode {
  port: number;
  /** redis://127.0.0.1:<port> */
  url: string;
  /** The node's cluster id. */
  id: string;
  process: ChildProcess;
  /** False once the node has been killed or stopped. */
  alive: boolean;
}

/** A node as CLUSTER NODES describes it. */
export interface NodeView {
  id: string;
  port: number;
  flags: string[];
  masterId: string | undefined;
  slots: Array<[number, number]>;
}

/** A running cluster. */
export interface RedisCluster {
  nodes: ClusterNode[];
  /** Seed URLs (every node), as REDIS_CLUSTER_URLS takes them. */
  urls: string[];
  /** Runs a redis-cli command against a node (a live one by default) and returns its output. */
  cli(args: string[], port?: number): Promise<string>;
  /** CLUSTER KEYSLOT of a key. */
  keySlot(key: string): Promise<number>;
  /** The cluster's view of itself, from a live node. */
  view(): Promise<NodeView[]>;
  /** The live master serving `slot` now. */
  masterOf(slot: number): Promise<ClusterNode>;
  /** A live replica of a master, if it has one. */
  replicaOf(master: ClusterNode): Promise<ClusterNode | undefined>;
  /**
   * A manual failover, as an operator (or a provider's maintenance) runs it: CLUSTER FAILOVER on
   * a replica, which takes over its master's slots while the master stays up as its replica.
   * Resolves once every live node agrees and the cluster is healthy.
   */
  failover(replica: ClusterNode, timeoutMs?: number): Promise<void>;
  /** Kills a node (SIGKILL by default: no goodbye to the cluster, as a crash). */
  kill(node: ClusterNode, signal?: NodeJS.Signals): Promise<void>;
  /** Waits until the live nodes agree the cluster is ok and every slot has a live master. */
  waitUntilHealthy(timeoutMs?: number): Promise<void>;
  /** Stops every node and removes the temporary directory. */
  stop(): Promise<void>;
}

/** Options for `startRedisCluster`. */
export interface ClusterOptions {
  /** Masters (default 3, the minimum for a cluster that can fail over). */
  masters?: number;
  /** Replicas per master (default 1). */
  replicas?: number;
  /** cluster-node-timeout in ms: how soon a silent master counts as failed (default 2000). */
  nodeTimeoutMs?: number;
}


const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function cliAt(port: number, args: string[]): Promise<string> {
  const { stdout } = await run('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 5000 });
  return stdout;
}

/** Parses CLUSTER NODES output. */
export function parseClusterNodes(text: string): NodeView[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((line) => {
      const [id, addr, flags, master, , , , , ...slots] = line.trim().split(' ');
      const port = Number(/:(\d+)@/.exec(addr ?? '')?.[1]);
      return {
        id: id!,
        port,
        flags: (flags ?? '').split(','),
        masterId: master === '-' ? undefined : master,
        slots: slots
          .filter((s) => !s.startsWith('['))
          .map((s) => {
            const [a, b] = s.split('-');
            return [Number(a), Number(b ?? a)] as [number, number];
          }),
      };
    });
}

async function waitUntil(what: string, check: () => Promise<boolean>, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      if (await check()) return;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`Redis Cluster: timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (${String(last)})` : ''}`);
    await sleep(100);
  }
}

/** Longer than Redis's own manual failover timeout (5 s), after which it gives a try up. */
const MANUAL_FAILOVER_TRY_MS = 7000;

const tail = (log = '', lines = 15): string => log.trimEnd().split('\n').slice(-lines).join('\n');

/** Whether the node on `port` is a replica whose link to its master is up and not resyncing. */
async function replicaInSync(port: number): Promise<boolean> {
  const info = await cliAt(port, ['INFO', 'replication']);
  return info.includes('role:slave') && info.includes('master_link_status:up') && info.includes('master_sync_in_progress:0');
}

/** Starts a cluster and waits until it is healthy with every replica in sync. */
export async function startRedisCluster(opts: ClusterOptions = {}): Promise<RedisCluster> {
  const masters = opts.masters ?? 3;
  const replicas = opts.replicas ?? 1;
  const nodeTimeout = opts.nodeTimeoutMs ?? 2000;
  const dir = mkdtempSync(path.join(os.tmpdir(), 'callsig-redis-cluster-'));
  const nodes: ClusterNode[] = [];
  const logs = new Map<number, string>();

  const stop = async () => {
    await Promise.all(
      nodes.map(async (n) => {
        if (!n.alive) return;
        n.alive = false;
        const gone = new Promise((r) => n.process.once('exit', r));
        n.process.kill('SIGKILL');
        await gone;
      }),
    );
    rmSync(dir, { recursive: true, force: true });
  };

  try {
    /**
     * Starts one node and waits for its PING. Its two ports were free a moment ago, but another
     * test's process may take one first (a client's outgoing connection can too): a node that
     * exits at once is started again on fresh ports.
     */
    const startNode = async (): Promise<void> => {
      for (let attempt = 1; ; attempt++) {
        const port = await freePort();
        const busPort = await freePort();
        const proc = spawn(
          'redis-server',
          [
            '--port', String(port), '--bind', '127.0.0.1', '--cluster-enabled', 'yes', '--cluster-port', String(busPort),
            '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', String(nodeTimeout),
            '--dir', dir, '--save', '', '--appendonly', 'no', '--protected-mode', 'no',
          ],
          { stdio: ['ignore', 'pipe', 'pipe'] },
        );
        logs.set(port, '');
        proc.stdout!.on('data', (d: Buffer) => logs.set(port, `${logs.get(port)}${d.toString()}`));
        proc.stderr!.on('data', (d: Buffer) => logs.set(port, `${logs.get(port)}${d.toString()}`));
        const node: ClusterNode = { port, url: `redis://127.0.0.1:${port}`, id: '', process: proc, alive: true };
        proc.once('exit', () => (node.alive = false));
        nodes.push(node);
        try {
          const deadline = Date.now() + 10_000;
          for (;;) {
            if (!node.alive) throw new Error(`redis-server on ${port} exited at start`);
            if ((await cliAt(port, ['PING']).catch(() => '')).trim() === 'PONG') break;
            if (Date.now() > deadline) throw new Error(`Redis Cluster: timed out after 10000 ms waiting for redis-server on ${port} to answer PING`);
            await sleep(100);
          }
          node.id = (await cliAt(port, ['CLUSTER', 'MYID'])).trim();
          return;
        } catch (err) {
          const log = tail(logs.get(port));
          if (node.alive || attempt === 3) throw new Error(`${(err as Error).message}; its log ends:\n${log}`);
          nodes.splice(nodes.indexOf(node), 1);
          console.log(`[cluster] redis-server on ${port} exited at start (try ${attempt}); starting it on fresh ports. Its log ends:\n${log}`);
        }
      }
    };
    for (let i = 0; i < masters * (1 + replicas); i++) await startNode();
    await run('redis-cli', ['--cluster', 'create', ...nodes.map((n) => `127.0.0.1:${n.port}`), '--cluster-replicas', String(replicas), '--cluster-yes'], { timeout: 30_000 });
  } catch (err) {
    await stop();
    throw err;
  }

  const live = () => nodes.filter((n) => n.alive);
  const cluster: RedisCluster = {
    nodes,
    urls: nodes.map((n) => n.url),
    cli: (args, port) => cliAt(port ?? live()[0]!.port, args),
    async keySlot(key) {
      return Number((await cliAt(live()[0]!.port, ['CLUSTER', 'KEYSLOT', key])).trim());
    },
    async view() {
      return parseClusterNodes(await cliAt(live()[0]!.port, ['CLUSTER', 'NODES']));
    },
    async masterOf(slot) {
      const owner = (await cluster.view()).find((v) => v.flags.includes('master') && !v.flags.some((f) => f.startsWith('fail')) && v.slots.some(([a, b]) => slot >= a && slot <= b));
      const node = nodes.find((n) => n.id === owner?.id);
      if (!node?.alive) throw new Error(`slot ${slot} has no live master (owner: ${owner?.port ?? 'none'})`);
      return node;
    },
    async replicaOf(master) {
      const replica = (await cluster.view()).find((v) => v.masterId === master.id && !v.flags.some((f) => f.startsWith('fail')));
      return nodes.find((n) => n.id === replica?.id && n.alive);
    },
    async failover(replica, timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      const left = () => Math.max(0, deadline - Date.now());
      // A manual failover waits for the replica to reach its master's offset, and Redis aborts it
      // after 5 s (CLUSTER_MF_TIMEOUT) if it has not. A replica still resyncing after an earlier
      // failover (the old master, now a replica) can miss that, so wait until it is in sync, and
      // ask again while the deadline allows if a try was aborted.
      await waitUntil(`replica ${replica.port} to be in sync with its master`, () => replicaInSync(replica.port), left());
      const promoted = async () => {
        for (const n of live()) {
          const me = parseClusterNodes(await cliAt(n.port, ['CLUSTER', 'NODES'])).find((v) => v.id === replica.id);
          if (!me?.flags.includes('master') || me.slots.length === 0) return false;
        }
        return true;
      };
      for (let attempt = 1; ; attempt++) {
        const reply = (await cliAt(replica.port, ['CLUSTER', 'FAILOVER'])).trim();
        if (reply !== 'OK') throw new Error(`CLUSTER FAILOVER on ${replica.port}: ${reply}`);
        try {
          await waitUntil(`node ${replica.port} to be a master in every live node's view`, promoted, Math.min(left(), MANUAL_FAILOVER_TRY_MS));
          break;
        } catch (err) {
          if (left() === 0) throw new Error(`${(err as Error).message} after ${attempt} CLUSTER FAILOVER tries; its log ends:\n${tail(logs.get(replica.port))}`);
          console.log(`[cluster] CLUSTER FAILOVER try ${attempt} on ${replica.port} did not complete; asking again. Its log ends:\n${tail(logs.get(replica.port), 5)}`);
        }
      }
      await cluster.waitUntilHealthy(left());
    },
    async kill(node, signal = 'SIGKILL') {
      if (!node.alive) return;
      const gone = new Promise((r) => node.process.once('exit', r));
      node.process.kill(signal);
      await gone;
      node.alive = false;
    },
    async waitUntilHealthy(timeoutMs = 20_000) {
      await waitUntil(
        'cluster_state:ok with a live master for every slot',
        async () => {
          for (const n of live()) {
            if (!(await cliAt(n.port, ['CLUSTER', 'INFO'])).includes('cluster_state:ok')) return false;
          }
          const view = await cluster.view();
          const liveIds = new Set(live().map((n) => n.id));
          let covered = 0;
          for (const v of view) {
            if (v.flags.includes('master') && liveIds.has(v.id) && !v.flags.some((f) => f.startsWith('fail'))) {
              for (const [a, b] of v.slots) covered += b - a + 1;
            }
          }
          return covered === 16384;
        },
        timeoutMs,
      );
    },
    stop,
  };

  try {
    await cluster.waitUntilHealthy(20_000);
    await waitUntil(
      'every node to know every other and every replica to be in sync',
      async () => {
        for (const n of nodes) {
          const view = parseClusterNodes(await cliAt(n.port, ['CLUSTER', 'NODES']));
          if (view.length !== nodes.length) return false;
          const me = view.find((v) => v.flags.includes('myself'));
          if (me?.flags.includes('slave') && !(await replicaInSync(n.port))) return false;
        }
        return true;
      },
      20_000,
    );
  } catch (err) {
    await stop();
    throw err;
  }
  return cluster;
}
