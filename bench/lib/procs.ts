/**
 * The processes a benchmark talks to: the daemon (the real `ampere run`, tools/lab's wrapper),
 * the Asterisk stand-in (bench/agent/pbx.ts) and netprobe's reaction prober, each inside a namespace.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DAEMON_CLI, NETPROBE, PBX_AGENT } from './build';
import { spawnTracked, type Netns } from './sys';
import { DaemonProcess } from '../../tools/lab/daemon';
import { LineProc } from '../../tools/lab/lines';

export { LineProc } from '../../tools/lab/lines';
export { DaemonProcess, type LogLine } from '../../tools/lab/daemon';
import { LAUNCH_NODE_FLAGS } from '../../src/cli/launch';

const TICK = 100; // USER_HZ

/** /proc/<pid>/stat's fields after the command name (f[0] is the state); null once gone. */
function statFields(pid: number | string): string[] | null {
  let stat: string;
  try { stat = readFileSync(`/proc/${pid}/stat`, 'utf8'); } catch { return null; }
  return stat.slice(stat.lastIndexOf(')') + 2).split(' ');
}

/** A process's CPU seconds, its own (all threads) and its reaped children's; null once gone. */
function procTimes(pid: number): { self: number; reaped: number } | null {
  const f = statFields(pid);
  if (!f) return null;
  return { self: (Number(f[11]) + Number(f[12])) / TICK, reaped: (Number(f[13]) + Number(f[14])) / TICK };
}

/** Every live process below pid (/proc's parent links). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number[]>();
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const f = statFields(name);
    if (!f) continue;
    const ppid = Number(f[1]);
    const list = parent.get(ppid) ?? [];
    list.push(Number(name));
    parent.set(ppid, list);
  }
  const out: number[] = [];
  for (let todo = [pid]; todo.length;) {
    for (const c of parent.get(todo.pop()!) ?? []) { out.push(c); todo.push(c); }
  }
  return out;
}

/** The Asterisk stand-in: AMI server (and SIP answerer) in the namespace. */
export class PbxAgent {
  private seq = 0;
  private constructor(readonly lp: LineProc) {}

  static async start(ns: Netns, amiPort = 5038, sipPort = 0): Promise<PbxAgent> {
    const p = ns.spawn(process.execPath, [PBX_AGENT, String(amiPort), String(sipPort)]);
    const a = new PbxAgent(new LineProc(p, 'pbx agent'));
    await a.lp.next((l) => l.includes('"ready"'));
    return a;
  }

  async call(op: string, args: Record<string, unknown> = {}, timeoutMs = 120_000): Promise<Record<string, any>> {
    const id = ++this.seq;
    const tag = `{"id":${id},`;
    const answer = this.lp.next((l) => l.startsWith(tag), timeoutMs);
    this.lp.send(JSON.stringify({ id, op, ...args }));
    const r = JSON.parse(await answer);
    if (!r.ok) throw new Error(`pbx agent ${op}: ${r.error}`);
    return r;
  }

  waitLogin(n = 1, timeoutMs = 20_000): Promise<string> {
    return this.lp.next((l) => l.includes('"login"') && JSON.parse(l).logins >= n, timeoutMs);
  }

  stop(): Promise<void> {
    return this.lp.stop();
  }
}

/** The real daemon as the benchmark runs it: the compiled cli.js, with its launchers' Node flags unless launchHeap is false. */
export function startDaemon(ns: Netns, env: Record<string, string>, nodeArgs: string[] = [], launchHeap = true): DaemonProcess {
  return new DaemonProcess(env, { netns: ns.name, cli: DAEMON_CLI, nodeArgs: [...(launchHeap ? LAUNCH_NODE_FLAGS : []), ...nodeArgs], keep: 200 });
}

/**
 * CPU seconds so far: the daemon's own threads, and its child processes: those that finished
 * (the kernel adds them to the daemon's) and those still running, the long-lived ipset shell
 * and conntrack helper with what they reaped themselves.
 */
export function cpuOf(pid: number): { self: number; children: number } {
  const own = procTimes(pid);
  if (!own) return { self: 0, children: 0 };
  let children = own.reaped;
  for (const p of descendants(pid)) {
    const t = procTimes(p);
    if (t) children += t.self + t.reaped;
  }
  return { self: own.self, children };
}

/** Resident memory in bytes: now, and the peak. */
export function memoryOf(pid: number): { rss: number; peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0) * 1024;
  return { rss: kb('VmRSS'), peak: kb('VmHWM') };
}

export function daemonEnv(dir: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    AMPERE_HOST: '127.0.0.1', AMPERE_PORT: '5038', AMPERE_USER: 'ampere', AMPERE_PASS: 'ampere',
    AMPERE_DB: join(dir, 'ampere.db'), AMPERE_LOG_LEVEL: 'info', AMPERE_LOYALTY: '3', AMPERE_AMI_TIMEOUT: '10s',
    ...extra,
  };
}

export interface ProbeResult { src: string; lastOk: bigint; firstLost: bigint; sent: number; ok: number }

/** netprobe's reaction prober: sends from spoofed sources in atk, receives in pbx. */
export class Prober {
  private constructor(readonly lp: LineProc) {}

  static start(pbx: Netns, atk: Netns, dst4: string, dst6: string, port: number, intervalUs: number): Prober {
    const p = spawnTracked(NETPROBE, ['probe', pbx.name, atk.name, dst4, dst6, String(port), String(intervalUs)]);
    return new Prober(new LineProc(p, 'netprobe probe'));
  }

  /** Start probing src; resolves once its datagrams get through (the path is open). */
  async begin(src: string): Promise<void> {
    const opened = this.lp.next((l) => l === `O ${src}` || l === `X ${src}`, 5000);
    this.lp.send(`P ${src}`);
    if ((await opened) !== `O ${src}`) throw new Error(`prober: no datagram from ${src} got through before the ban`);
  }

  /** After begin(): resolves when src's datagrams stopped arriving (null: they never did within 5 s). */
  async end(src: string): Promise<ProbeResult | null> {
    const line = await this.lp.next((l) => l.startsWith(`R ${src} `) || l.startsWith(`T ${src} `), 10_000);
    const w = line.split(' ');
    if (w[0] === 'T') return null;
    return { src, lastOk: BigInt(w[2]), firstLost: BigInt(w[3]), sent: Number(w[4]), ok: Number(w[5]) };
  }

  stop(): Promise<void> {
    return this.lp.stop();
  }
}
