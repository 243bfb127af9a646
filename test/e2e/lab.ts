/**
 * The end-to-end test's little network: a PBX namespace (Asterisk and Ampere
 * share it, as network_mode: host shares the host's), a bridge in it, and one
 * namespace per client (phone, attackers) on a veth into that bridge.
 * Addresses: 10.232.0.0/24 and fd32::/64, inside these namespaces only.
 *
 * Everything made here is recorded and undone by `teardown()`: processes,
 * namespaces (with their veths, iptables rules and ipsets), mount points.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { appendFileSync, createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, writeFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';

export const PREFIX = 'ae2e-';
export const PBX_NS = `${PREFIX}pbx`;
export const PBX4 = '10.232.0.1';
export const PBX6 = 'fd32::1';
/** Mount points a run created at / (e.g. /data), listed so that a killed run's are removed by the next. */
const MADE_DIRS_FILE = '/run/ampere-e2e-made-dirs';
/** One e2e run at a time on a machine: the namespace names are fixed. Holds the holder's pid. */
const LOCK_FILE = '/run/ampere-e2e.lock';

/**
 * Takes the machine-wide e2e lock, waiting up to timeoutMs for another run to finish.
 * A lock whose process is gone is taken over. Returns the release function.
 */
export async function lockMachine(timeoutMs: number, onWait: (holder: number) => void = () => {}): Promise<() => void> {
  const deadline = Date.now() + timeoutMs;
  let told = false;
  for (;;) {
    try {
      writeFileSync(LOCK_FILE, String(process.pid), { flag: 'wx' });
      return () => {
        try { if (readFileSync(LOCK_FILE, 'utf8') === String(process.pid)) rmSync(LOCK_FILE); } catch { /* gone */ }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    let holder = 0;
    try { holder = Number(readFileSync(LOCK_FILE, 'utf8')) || 0; } catch { continue; }
    let alive = false;
    if (holder > 0) { try { process.kill(holder, 0); alive = true; } catch { /* gone */ } }
    if (!alive) { rmSync(LOCK_FILE, { force: true }); continue; }
    if (Date.now() >= deadline) throw new Error(`another e2e run (pid ${holder}) still holds ${LOCK_FILE}`);
    if (!told) { onWait(holder); told = true; }
    await sleep(1000);
  }
}

export interface Host { name: string; ns: string; v4: string; v6: string }

export function host(name: string, n: number): Host {
  return { name, ns: `${PREFIX}${name}`, v4: `10.232.0.${n}`, v6: `fd32::${n.toString(16)}` };
}

export interface RunResult { code: number | null; signal: NodeJS.Signals | null; stdout: string; stderr: string; timedOut: boolean }

/** Runs a command to completion, killed after timeoutMs. Never throws for a non-zero exit. */
export function run(cmd: string, args: string[], opts: { timeoutMs?: number; env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<RunResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    let timedOut = false;
    child.stdout.on('data', (d) => { stdout += d; });
    child.stderr.on('data', (d) => { stderr += d; });
    const timer = setTimeout(() => { timedOut = true; child.kill('SIGKILL'); }, opts.timeoutMs ?? 30_000);
    child.on('error', (err) => { stderr += String(err); });
    child.stdin.on('error', () => { /* the command did not read its input */ });
    child.on('close', (code, signal) => { clearTimeout(timer); resolve({ code, signal, stdout, stderr, timedOut }); });
    child.stdin.end(opts.input ?? '');
  });
}

/** Same, synchronously, for setup and teardown. Throws on failure unless `allowFail`. */
export function sh(cmd: string, args: string[], allowFail = false): string {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: 30_000 });
  if (!allowFail && r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${r.status}): ${r.stderr || r.error}`);
  return r.stdout ?? '';
}

export const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Polls `check` every `everyMs` until it returns a truthy value or `timeoutMs` passes (then returns the last value). */
export async function waitFor<T>(check: () => T | Promise<T>, timeoutMs: number, everyMs = 100): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v || Date.now() >= deadline) return v;
    await sleep(everyMs);
  }
}

/** A long-running process whose output goes to a log file and, line by line, to `lines`. */
export class Proc {
  readonly lines: string[] = [];
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exitInfo: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly child: ChildProcess;
  private readonly log: WriteStream;

  constructor(readonly name: string, cmd: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv) {
    this.log = createWriteStream(logFile, { flags: 'a' });
    this.log.write(`--- ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
    this.child = spawn(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
    let partial = '';
    const onData = (d: Buffer) => {
      this.log.write(d);
      partial += d.toString('utf8');
      const parts = partial.split('\n');
      partial = parts.pop()!;
      this.lines.push(...parts);
    };
    this.child.stdout!.on('data', onData);
    this.child.stderr!.on('data', onData);
    this.exited = new Promise((resolve) => {
      this.child.on('exit', (code, signal) => {
        this.exitInfo = { code, signal };
        this.log.write(`--- exit code ${code} signal ${signal}\n`);
        resolve(this.exitInfo);
      });
      this.child.on('error', (err) => { this.log.write(`--- spawn error ${err}\n`); this.exitInfo = { code: -1, signal: null }; resolve(this.exitInfo); });
    });
  }

  get pid(): number { return this.child.pid ?? -1; }
  kill(signal: NodeJS.Signals): void { this.child.kill(signal); }
  get running(): boolean { return this.exitInfo === null; }

  /** Sends `signal`, waits up to timeoutMs, then SIGKILL. Returns the exit. */
  async stop(signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 10_000) {
    if (this.running) this.child.kill(signal);
    const done = await Promise.race([this.exited, sleep(timeoutMs).then(() => null)]);
    if (done) return { ...done, killed: false };
    this.child.kill('SIGKILL');
    return { ...(await this.exited), killed: true };
  }
}

/** The namespaces, processes and mount points of one test run. */
export class Lab {
  readonly procs: Proc[] = [];
  private readonly namespaces: string[] = [];
  private readonly madeDirs: string[] = [];

  constructor(readonly runDir: string) {}

  /** Removes what an earlier run that was killed left: namespaces (fixed names), empty mount points. */
  static removeStale(): string[] {
    const stale = sh('ip', ['netns', 'list'], true).split('\n').map((l) => l.split(' ')[0]).filter((n) => n.startsWith(PREFIX));
    for (const ns of stale) killNamespace(ns);
    if (existsSync(MADE_DIRS_FILE)) {
      for (const dir of readFileSync(MADE_DIRS_FILE, 'utf8').split('\n').filter(Boolean)) {
        try { if (readdirSync(dir).length === 0) { rmdirSync(dir); stale.push(dir); } } catch { /* gone */ }
      }
      rmSync(MADE_DIRS_FILE, { force: true });
    }
    return stale;
  }

  createNetwork(hosts: Host[]): void {
    this.addNs(PBX_NS);
    sh('ip', ['-n', PBX_NS, 'link', 'add', 'br0', 'type', 'bridge']);
    sh('ip', ['-n', PBX_NS, 'addr', 'add', `${PBX4}/24`, 'dev', 'br0']);
    sh('ip', ['-n', PBX_NS, 'addr', 'add', `${PBX6}/64`, 'dev', 'br0', 'nodad']);
    sh('ip', ['-n', PBX_NS, 'link', 'set', 'br0', 'up']);
    for (const h of hosts) {
      this.addNs(h.ns);
      // the PBX side of the veth is named after the host (15 characters at most)
      const peer = h.ns.slice(0, 15);
      sh('ip', ['link', 'add', peer, 'netns', PBX_NS, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', h.ns]);
      sh('ip', ['-n', PBX_NS, 'link', 'set', peer, 'master', 'br0', 'up']);
      sh('ip', ['-n', h.ns, 'addr', 'add', `${h.v4}/24`, 'dev', 'eth0']);
      sh('ip', ['-n', h.ns, 'addr', 'add', `${h.v6}/64`, 'dev', 'eth0', 'nodad']);
      sh('ip', ['-n', h.ns, 'link', 'set', 'eth0', 'up']);
    }
  }

  private addNs(ns: string): void {
    sh('ip', ['netns', 'add', ns]);
    this.namespaces.push(ns);
    sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }

  /** mkdir a mount point that does not exist yet, and remember to remove it. */
  mountPoint(dir: string): void {
    if (existsSync(dir)) return;
    mkdirSync(dir, { recursive: false });
    this.madeDirs.push(dir);
    appendFileSync(MADE_DIRS_FILE, `${dir}\n`);
  }

  spawn(name: string, cmd: string, args: string[], env?: NodeJS.ProcessEnv): Proc {
    const p = new Proc(name, cmd, args, join(this.runDir, `${name}.log`), env);
    this.procs.push(p);
    return p;
  }

  async teardown(): Promise<string[]> {
    const problems: string[] = [];
    await Promise.all(this.procs.filter((p) => p.running).map((p) => p.stop('SIGTERM', 5000)));
    for (const ns of [...this.namespaces].reverse()) {
      try { killNamespace(ns); } catch (err) { problems.push(String(err)); }
    }
    for (const dir of this.madeDirs.reverse()) {
      try {
        if (statSync(dir).isDirectory() && readdirSync(dir).length === 0) rmdirSync(dir);
        else problems.push(`${dir} is not empty: left in place`);
      } catch (err) { problems.push(String(err)); }
    }
    this.madeDirs.length = 0;
    rmSync(MADE_DIRS_FILE, { force: true });
    const left = sh('ip', ['netns', 'list'], true).split('\n').filter((l) => l.startsWith(PREFIX));
    if (left.length) problems.push(`namespaces left: ${left.join(', ')}`);
    return problems;
  }

  /** The same, synchronously and without waiting for graceful exits: for a signal handler. */
  teardownSync(): void {
    for (const p of this.procs) if (p.running) p.kill('SIGKILL');
    // SIGKILL everything in every namespace first, then delete them: no waiting per namespace
    for (const ns of this.namespaces) {
      for (const pid of sh('ip', ['netns', 'pids', ns], true).split('\n').filter(Boolean).map(Number)) {
        try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ }
      }
    }
    spawnSync('sleep', ['0.3']); // mount namespaces go with their last process
    for (const ns of this.namespaces) sh('ip', ['netns', 'del', ns], true);
    for (const dir of this.madeDirs.reverse()) { try { rmdirSync(dir); } catch { /* not empty or gone */ } }
    this.madeDirs.length = 0;
    rmSync(MADE_DIRS_FILE, { force: true });
  }
}

/** Kills every process in a namespace (TERM, then KILL) and deletes it. */
export function killNamespace(ns: string): void {
  const pids = () => sh('ip', ['netns', 'pids', ns], true).split('\n').filter(Boolean).map(Number);
  for (const pid of pids()) { try { process.kill(pid, 'SIGTERM'); } catch { /* gone */ } }
  const deadline = Date.now() + 3000;
  while (pids().length && Date.now() < deadline) spawnSync('sleep', ['0.1']);
  for (const pid of pids()) { try { process.kill(pid, 'SIGKILL'); } catch { /* gone */ } }
  sh('ip', ['netns', 'del', ns], true);
}
