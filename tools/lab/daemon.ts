/**
 * The real daemon (`ampere run`) as a child process, configured only by environment, optionally
 * inside a network namespace; its JSON log lines kept for assertions and handed to listeners.
 * Tests run the sources through tsx; the benchmark passes its compiled cli.js.
 */
import { createServer } from 'node:net';
import { join } from 'node:path';
import { LineProc } from './lines';
import { spawnTracked } from './netns';

const ROOT = join(__dirname, '..', '..');

export interface LogLine { level: number; msg: string; [k: string]: any }

export interface DaemonOptions {
  /** Network namespace name to run in. */
  netns?: string;
  /** A command that runs node (e.g. setpriv with fewer capabilities). */
  wrap?: string[];
  /** Options for node itself (before the script). */
  nodeArgs?: string[];
  /** A compiled cli.js to run instead of src/cli.ts through tsx. */
  cli?: string;
  /** Keep only the last this many log lines (a long benchmark run); all when absent. */
  keep?: number;
}

export class DaemonProcess {
  readonly lp: LineProc;
  readonly lines: LogLine[] = [];
  /** Resolves with the exit code once the process is gone and its output read. */
  readonly exit: Promise<number | null>;
  readonly startedAt = process.hrtime.bigint();
  private handlers: ((l: LogLine) => void)[] = [];

  constructor(env: Record<string, string>, opts: DaemonOptions = {}) {
    const script = opts.cli ? [opts.cli] : ['--import', 'tsx', join(ROOT, 'src', 'cli.ts')];
    const node = [process.execPath, ...(opts.nodeArgs ?? []), ...script, 'run'];
    const argv = [...(opts.netns ? ['ip', 'netns', 'exec', opts.netns] : []), ...(opts.wrap ?? []), ...node];
    const proc = spawnTracked(argv[0], argv.slice(1), {
      cwd: ROOT,
      // /dev/null: no config file, not even an installed /etc/ampere/ampere.cfg (root-only on a set-up machine).
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', AMPERE_ENV_FILE: '/nonexistent/.env', AMPERE_CONFIG: '/dev/null', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.lp = new LineProc(proc, 'daemon');
    this.lp.onLine = (line) => {
      let l: LogLine;
      try { l = JSON.parse(line); } catch { l = { level: 0, msg: `(not json) ${line}` }; }
      // Not enumerable: a bigint, which JSON cannot carry, kept out of dumps and comparisons.
      Object.defineProperty(l, 'receivedAt', { value: process.hrtime.bigint(), enumerable: false });
      this.lines.push(l);
      if (opts.keep !== undefined && this.lines.length > opts.keep) this.lines.shift();
      for (const h of [...this.handlers]) h(l);
      return true;
    };
    this.exit = this.lp.exited;
  }

  get proc() { return this.lp.proc; }
  get pid(): number { return this.lp.proc.pid!; }
  get stderr(): string { return this.lp.stderr; }

  /** Calls fn with every log line from now on; returns the function that stops it. */
  on(fn: (l: LogLine) => void): () => void {
    this.handlers.push(fn);
    return () => { this.handlers = this.handlers.filter((h) => h !== fn); };
  }

  /** The n-th log line (1-based) matching pred, among those seen so far and to come (the stored object itself). */
  waitFor(pred: (l: LogLine) => boolean, timeoutMs = 10_000, n = 1): Promise<LogLine> {
    const hits = this.lines.filter(pred);
    return hits.length >= n ? Promise.resolve(hits[n - 1]) : this.nextLine(pred, timeoutMs, n - hits.length);
  }

  /** The n-th log line matching pred from now on, with the time it arrived (register before causing it). */
  async next(pred: (l: LogLine) => boolean, timeoutMs = 30_000, n = 1): Promise<LogLine & { at: bigint }> {
    const l = await this.nextLine(pred, timeoutMs, n);
    return { ...l, at: l.receivedAt as bigint };
  }

  private nextLine(pred: (l: LogLine) => boolean, timeoutMs: number, n: number): Promise<LogLine> {
    return new Promise((resolve, reject) => {
      let left = n;
      const fail = (why: string) => { clearTimeout(timer); off(); reject(new Error(`daemon: ${why}; last lines:\n${this.dump()}\nstderr: ${this.stderr.slice(-3000)}`)); };
      const timer = setTimeout(() => fail(`expected log line not seen in ${timeoutMs} ms`), timeoutMs);
      const off = this.on((l) => {
        if (pred(l) && --left === 0) { clearTimeout(timer); off(); resolve(l); }
      });
      // After the last line is delivered: a line that came is resolved first, and this does nothing.
      void this.exit.then((code) => fail(`exited (${code ?? this.proc.signalCode}) before the expected log line`));
    });
  }

  count(pred: (l: LogLine) => boolean): number {
    return this.lines.filter(pred).length;
  }

  dump(lines = 40): string {
    return this.lines.slice(-lines).map((l) => JSON.stringify(l).slice(0, 2000)).join('\n');
  }

  /**
   * Sends signal and resolves with the exit code; SIGKILL after the 30 s grace that compose
   * (stop_grace_period) and the systemd unit (TimeoutStopSec) give the daemon.
   */
  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const p = this.proc;
    if (p.exitCode === null && p.signalCode === null) p.kill(signal);
    const t = setTimeout(() => p.kill('SIGKILL'), 30_000);
    const code = await this.exit;
    clearTimeout(t);
    return code;
  }
}

/** A local TCP port where nothing listens: a daemon keeps retrying AMI there, enough for tests that need no events. */
export async function closedPort(): Promise<number> {
  const s = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
  const port = (s.address() as { port: number }).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** The environment of a daemon that needs no events and no kernel: its database, AMI on a closed port, the dry-run backend. */
export async function quietEnv(db: string): Promise<Record<string, string>> {
  return { AMPERE_DB: db, AMPERE_BACKEND: 'dry-run', AMPERE_PORT: String(await closedPort()), AMPERE_AMI_TIMEOUT: '1s' };
}
