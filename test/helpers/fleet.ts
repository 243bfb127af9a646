/** Fleet nodes for tests: a real daemon per network namespace, one throwaway PostgreSQL for all. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from 'pg';
import { fleetInit } from '../../src/fleet/init';
import { ampere, json } from './cli';
import { DaemonProcess, type DaemonOptions } from '../../tools/lab/daemon';
import { Netns } from '../../tools/lab/netns';
import type { PgCluster } from './pg';

export const password = (name: string) => `${name}-fleet-pw`;

/** Schema and one login role per node name. */
export async function initFleet(pg: PgCluster, nodes: string[]): Promise<void> {
  await pg.createDb();
  await fleetInit(pg.url(), { ca: '', cert: '', key: '' }, nodes.map((name) => ({ name, password: password(name), kind: 'node' as const })));
}

export class FleetNode {
  daemon: DaemonProcess | null = null;
  readonly dir: string;
  private constructor(readonly name: string, readonly ns: Netns, private readonly pg: PgCluster, private readonly env: Record<string, string>) {
    this.dir = mkdtempSync(join(tmpdir(), `ampere-fleet-${name}-`));
  }

  static async create(name: string, pg: PgCluster, env: Record<string, string> = {}): Promise<FleetNode> {
    return new FleetNode(name, await Netns.create(), pg, env);
  }

  get db(): string { return join(this.dir, 'ampere.db'); }

  /** Start (or restart) the daemon on the same database; resolves once the fleet is connected. */
  async start(extra: Record<string, string> = {}, waitConnected = true, run: Pick<DaemonOptions, 'cli' | 'nodeArgs'> = {}): Promise<DaemonProcess> {
    const d = new DaemonProcess({
      AMPERE_DB: this.db, AMPERE_BACKEND: 'ipset', AMPERE_PORT: '1', AMPERE_AMI_TIMEOUT: '1s', AMPERE_LOG_LEVEL: 'debug',
      AMPERE_FLEET_URL: this.pg.url(this.name, password(this.name)), AMPERE_FLEET_ORIGIN: this.name, AMPERE_FLEET_RESYNC: '2s',
      ...this.env, ...extra,
    }, { netns: this.ns.name, ...run });
    this.daemon = d;
    await d.waitFor((l) => l.msg === 'ampere started', 20_000);
    if (waitConnected) await d.waitFor((l) => l.msg === 'fleet connected', 20_000);
    return d;
  }

  cli(args: string[]) {
    return ampere(args, { AMPERE_DB: this.db, AMPERE_FLEET_URL: this.pg.url(this.name, password(this.name)), AMPERE_FLEET_ORIGIN: this.name });
  }

  async ban(addresses: string[], forWhat = '1h'): Promise<void> {
    const r = await this.cli(['ban', ...addresses, '--for', forWhat]);
    if (r.code !== 0) throw new Error(`ban on ${this.name}: ${r.stderr}`);
  }

  async unban(addresses: string[]): Promise<void> {
    const r = await this.cli(['unban', ...addresses]);
    if (r.code !== 0) throw new Error(`unban on ${this.name}: ${r.stderr}`);
  }

  async status(): Promise<any> {
    return json(await this.cli(['status', '--json']));
  }

  /** The addresses in this node's kernel set, read from the kernel. */
  async kernel(family: 4 | 6 = 4): Promise<Set<string>> {
    const r = await this.ns.exec('ipset', ['list', `ampere-v${family}`, '-output', 'save']);
    return new Set(r.stdout.split('\n').filter((l) => l.startsWith('add ')).map((l) => l.split(' ')[2]));
  }

  async destroy(): Promise<void> {
    await this.daemon?.stop('SIGKILL');
    await this.ns.destroy();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** A direct connection as a node's role (an attacker who stole that node's credentials, or a long transaction). */
export async function asRole(pg: PgCluster, name: string): Promise<Client> {
  const c = new Client({ connectionString: pg.url(name, password(name)) });
  await c.connect();
  return c;
}

/** Polls check() until it holds; fails naming what did not happen. */
export { eventually } from './eventually';

/** n addresses 198.18.<third>.1.. (a benchmarking range: bannable, routed nowhere). */
export const range = (third: number, n: number, from = 1) => Array.from({ length: n }, (_, i) => `198.18.${third + Math.floor((from + i) / 250)}.${((from + i) % 250) + 1}`);
