/**
 * The end-to-end test's little network, on the lab toolkit (tools/lab): a PBX namespace
 * (Asterisk and Ampere share it, as network_mode: host shares the host's), a bridge in it, and
 * one namespace per client (phone, attackers) on a veth into that bridge.
 * Addresses: 10.232.0.0/24 and fd32::/64, inside these namespaces only.
 *
 * The toolkit registers every namespace before making it and removes it, with what runs
 * inside, at exit and on SIGINT/SIGTERM/SIGHUP. Added here: long-running processes that log to
 * files, and mount points at / (the container paths), which a killed run leaves for the next.
 */
import { createWriteStream, existsSync, mkdirSync, readFileSync, readdirSync, rmSync, rmdirSync, statSync, appendFileSync, writeFileSync, type WriteStream } from 'node:fs';
import { join } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { Netns, sh, spawnTracked } from '../../tools/lab/netns';

export { must, sh } from '../../tools/lab/netns';
export const PBX4 = '10.232.0.1';
export const PBX6 = 'fd32::1';
/** Mount points a run created at / (e.g. /data), listed so that a killed run's are removed by the next. */
const MADE_DIRS_FILE = '/run/ampere-e2e-made-dirs';
/** One e2e run at a time on a machine: the mount points at / are shared. Holds the holder's pid. */
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

/** A client of the PBX. `ns` is its namespace's name, known once the network is made. */
export interface Host { name: string; ns: string; v4: string; v6: string }

export function host(name: string, n: number): Host {
  return { name, ns: '', v4: `10.232.0.${n}`, v6: `fd32::${n.toString(16)}` };
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

type Exit = { code: number | null; signal: NodeJS.Signals | null };

/** A long-running process whose output goes to a log file and, line by line, to `lines`. */
export class Proc {
  readonly lines: string[] = [];
  readonly exited: Promise<Exit>;
  exitInfo: Exit | null = null;
  private readonly child: ChildProcess;
  private readonly log: WriteStream;

  constructor(readonly name: string, cmd: string, args: string[], logFile: string, env?: NodeJS.ProcessEnv) {
    this.log = createWriteStream(logFile, { flags: 'a' });
    this.log.write(`--- ${new Date().toISOString()} ${cmd} ${args.join(' ')}\n`);
    this.child = spawnTracked(cmd, args, { env: env ?? process.env, stdio: ['ignore', 'pipe', 'pipe'] });
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
  private readonly namespaces: Netns[] = [];
  private readonly madeDirs: string[] = [];
  private pbxNs: Netns | null = null;

  constructor(readonly runDir: string) {}

  /** The PBX's namespace (Asterisk and Ampere), made by createNetwork. */
  get pbx(): string {
    if (!this.pbxNs) throw new Error('the network is not made yet');
    return this.pbxNs.name;
  }

  /** Removes the empty mount points an earlier run that was killed left at /. */
  static removeStaleDirs(): string[] {
    const removed: string[] = [];
    if (!existsSync(MADE_DIRS_FILE)) return removed;
    for (const dir of readFileSync(MADE_DIRS_FILE, 'utf8').split('\n').filter(Boolean)) {
      try { if (readdirSync(dir).length === 0) { rmdirSync(dir); removed.push(dir); } } catch { /* gone */ }
    }
    rmSync(MADE_DIRS_FILE, { force: true });
    return removed;
  }

  async createNetwork(hosts: Host[]): Promise<void> {
    const pbx = this.pbxNs = await this.addNs();
    await pbx.must('ip', ['link', 'add', 'br0', 'type', 'bridge']);
    await pbx.must('ip', ['addr', 'add', `${PBX4}/24`, 'dev', 'br0']);
    await pbx.must('ip', ['addr', 'add', `${PBX6}/64`, 'dev', 'br0', 'nodad']);
    await pbx.must('ip', ['link', 'set', 'br0', 'up']);
    for (const h of hosts) {
      const ns = await this.addNs();
      h.ns = ns.name;
      // the PBX side of the veth is named after the host (15 characters at most)
      const peer = `e2e-${h.name}`.slice(0, 15);
      await pbx.must('ip', ['link', 'add', peer, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns.name]);
      await pbx.must('ip', ['link', 'set', peer, 'master', 'br0', 'up']);
      await ns.must('ip', ['addr', 'add', `${h.v4}/24`, 'dev', 'eth0']);
      await ns.must('ip', ['addr', 'add', `${h.v6}/64`, 'dev', 'eth0', 'nodad']);
      await ns.must('ip', ['link', 'set', 'eth0', 'up']);
    }
  }

  private async addNs(): Promise<Netns> {
    const ns = await Netns.create();
    this.namespaces.push(ns);
    return ns;
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
      try { await ns.destroy(); } catch (err) { problems.push(String(err)); }
    }
    problems.push(...this.removeMadeDirs());
    const names = new Set(this.namespaces.map((n) => n.name));
    const left = (await sh('ip', ['netns', 'list'])).stdout.split('\n').map((l) => l.split(' ')[0]).filter((n) => names.has(n));
    if (left.length) problems.push(`namespaces left: ${left.join(', ')}`);
    return problems;
  }

  /**
   * For a signal handler: every process SIGKILLed and the mount points removed, synchronously.
   * The toolkit deletes the namespaces (and what is left inside) at the exit that follows.
   */
  teardownSync(): void {
    for (const p of this.procs) if (p.running) p.kill('SIGKILL');
    this.removeMadeDirs();
  }

  private removeMadeDirs(): string[] {
    const problems: string[] = [];
    for (const dir of this.madeDirs.reverse()) {
      try {
        if (statSync(dir).isDirectory() && readdirSync(dir).length === 0) rmdirSync(dir);
        else problems.push(`${dir} is not empty: left in place`);
      } catch (err) { problems.push(String(err)); }
    }
    this.madeDirs.length = 0;
    rmSync(MADE_DIRS_FILE, { force: true });
    return problems;
  }
}
