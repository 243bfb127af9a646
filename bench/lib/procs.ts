/**
 * The processes a benchmark talks to: the daemon (the real `ampere run`), the Asterisk
 * stand-in (bench/agent/pbx.ts) and netprobe's reaction prober, each inside a namespace.
 */
import type { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DAEMON_CLI, NETPROBE, PBX_AGENT } from './build';
import { spawnTracked, type Ns } from './sys';
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

/** Splits a child's stdout into lines; lines nobody waited for are queued for a later next(). */
export class LineProc {
  stderr = '';
  private buf = '';
  private queue: string[] = [];
  private waiters: { pred: (l: string) => boolean; resolve: (l: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  onLine: ((line: string) => boolean | void) | null = null; // true = consumed
  readonly exited: Promise<number | null>;

  constructor(readonly proc: ChildProcess, readonly label: string) {
    proc.stdout!.setEncoding('utf8');
    proc.stdout!.on('data', (d: string) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        this.deliver(line);
      }
    });
    proc.stderr!.on('data', (d) => { this.stderr = (this.stderr + d.toString()).slice(-8000); });
    this.exited = new Promise((r) => proc.on('exit', (code) => {
      for (const w of this.waiters.splice(0)) { clearTimeout(w.timer); w.reject(new Error(`${label} exited (${code}) while waiting; stderr: ${this.stderr.slice(-2000)}`)); }
      r(code);
    }));
  }

  private deliver(line: string): void {
    if (this.onLine?.(line)) return;
    const k = this.waiters.findIndex((w) => w.pred(line));
    if (k >= 0) {
      const [w] = this.waiters.splice(k, 1);
      clearTimeout(w.timer);
      w.resolve(line);
    } else {
      this.queue.push(line);
      if (this.queue.length > 2000) this.queue.shift();
    }
  }

  next(pred: (l: string) => boolean = () => true, timeoutMs = 10_000): Promise<string> {
    const k = this.queue.findIndex(pred);
    if (k >= 0) return Promise.resolve(this.queue.splice(k, 1)[0]);
    if (this.proc.exitCode !== null) return Promise.reject(new Error(`${this.label} has exited; stderr: ${this.stderr.slice(-2000)}`));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w.timer !== timer);
        reject(new Error(`${this.label}: no expected line within ${timeoutMs} ms; stderr: ${this.stderr.slice(-2000)}`));
      }, timeoutMs);
      this.waiters.push({ pred, resolve, reject, timer });
    });
  }

  send(line: string): void {
    this.proc.stdin!.write(line + '\n');
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill('SIGKILL');
    await this.exited;
  }
}

/** The Asterisk stand-in: AMI server (and SIP answerer) in the namespace. */
export class PbxAgent {
  private seq = 0;
  private constructor(readonly lp: LineProc) {}

  static async start(ns: Ns, amiPort = 5038, sipPort = 0): Promise<PbxAgent> {
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

export interface LogLine { level: number; msg: string; [k: string]: any }

/**
 * The real daemon, `node cli.js run`, configured by environment only, inside a namespace;
 * with the Node flags its launchers give it (npm start, the image: heap limit, compile flags),
 * unless launchHeap is false.
 */
export class Daemon {
  readonly lp: LineProc;
  readonly recent: LogLine[] = [];
  private handlers: ((l: LogLine) => void)[] = [];
  startedAt = process.hrtime.bigint();

  constructor(ns: Ns, env: Record<string, string>, nodeArgs: string[] = [], launchHeap = true) {
    const heap = launchHeap ? LAUNCH_NODE_FLAGS : [];
    const p = ns.spawn(process.execPath, [...heap, ...nodeArgs, DAEMON_CLI, 'run'], {
      env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', AMPERE_ENV_FILE: '/nonexistent/.env', AMPERE_CONFIG: '', ...env },
    });
    this.lp = new LineProc(p, 'daemon');
    this.lp.onLine = (line) => {
      let l: LogLine;
      try { l = JSON.parse(line); } catch { l = { level: 0, msg: `(not json) ${line}` }; }
      l.receivedAt = process.hrtime.bigint();
      this.recent.push(l);
      if (this.recent.length > 200) this.recent.shift();
      for (const h of this.handlers) h(l);
      return true;
    };
  }

  get pid(): number {
    return this.lp.proc.pid!;
  }

  on(fn: (l: LogLine) => void): () => void {
    this.handlers.push(fn);
    return () => { this.handlers = this.handlers.filter((h) => h !== fn); };
  }

  /** A future log line matching pred (register before causing it). */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 30_000): Promise<LogLine & { at: bigint }> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { off(); reject(new Error(`daemon: expected log line not seen in ${timeoutMs} ms; last lines:\n${this.dump()}\nstderr: ${this.lp.stderr.slice(-2000)}`)); }, timeoutMs);
      const off = this.on((l) => { if (pred(l)) { clearTimeout(timer); off(); offExit(); resolve({ ...l, at: process.hrtime.bigint() }); } });
      const onExit = (code: number | null) => { clearTimeout(timer); off(); reject(new Error(`daemon exited (${code}) early; last lines:\n${this.dump()}\nstderr: ${this.lp.stderr.slice(-3000)}`)); };
      this.lp.proc.once('exit', onExit);
      const offExit = () => this.lp.proc.off('exit', onExit);
    });
  }

  dump(): string {
    // receivedAt is a bigint, which JSON cannot carry.
    return this.recent.slice(-15).map((l) => JSON.stringify({ ...l, receivedAt: undefined }).slice(0, 400)).join('\n');
  }

  /**
   * CPU seconds so far: the daemon's own threads, and its child processes: those that finished
   * (the kernel adds them to the daemon's) and those still running, the long-lived ipset shell
   * and conntrack helper with what they reaped themselves.
   */
  cpu(): { self: number; children: number } {
    const own = procTimes(this.pid);
    if (!own) return { self: 0, children: 0 };
    let children = own.reaped;
    for (const pid of descendants(this.pid)) {
      const t = procTimes(pid);
      if (t) children += t.self + t.reaped;
    }
    return { self: own.self, children };
  }

  /** Resident memory in bytes: now, and the peak. */
  memory(): { rss: number; peak: number } {
    const s = readFileSync(`/proc/${this.pid}/status`, 'utf8');
    const kb = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+)`, 'm').exec(s)?.[1] ?? 0) * 1024;
    return { rss: kb('VmRSS'), peak: kb('VmHWM') };
  }

  async stop(): Promise<number | null> {
    const p = this.lp.proc;
    if (p.exitCode === null && p.signalCode === null) p.kill('SIGTERM');
    const t = setTimeout(() => p.kill('SIGKILL'), 10_000);
    const code = await this.lp.exited;
    clearTimeout(t);
    return code;
  }
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

  static start(pbx: Ns, atk: Ns, dst4: string, dst6: string, port: number, intervalUs: number): Prober {
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
