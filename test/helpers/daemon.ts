import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

const ROOT = join(__dirname, '..', '..');

export interface LogLine { level: number; msg: string; [k: string]: unknown }

/**
 * The real daemon as a child process (`ampere run` through tsx), configured only by
 * environment, its JSON log lines collected for assertions.
 */
export class DaemonProcess {
  readonly proc: ChildProcess;
  readonly lines: LogLine[] = [];
  stderr = '';
  exit: Promise<number | null>;
  private waiters: (() => void)[] = [];

  /** opts.wrap: a command that runs the daemon (e.g. setpriv with fewer capabilities). */
  /** opts.nodeArgs: options for node itself (e.g. another --import), before tsx. */
  constructor(env: Record<string, string>, opts: { netns?: string; wrap?: string[]; nodeArgs?: string[] } = {}) {
    const args = [...(opts.wrap ? [process.execPath] : []), ...(opts.nodeArgs ?? []), '--import', 'tsx', join(ROOT, 'src', 'cli.ts'), 'run'];
    const node = opts.wrap ? opts.wrap[0] : process.execPath;
    const nodeArgs = [...(opts.wrap?.slice(1) ?? []), ...args];
    const [cmd, argv] = opts.netns ? ['ip', ['netns', 'exec', opts.netns, node, ...nodeArgs]] : [node, nodeArgs];
    this.proc = spawn(cmd, argv, {
      cwd: ROOT,
      // /dev/null: no config file, not even an installed /etc/ampere/ampere.cfg (root-only on a set-up machine).
      env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', AMPERE_ENV_FILE: '/nonexistent/.env', AMPERE_CONFIG: '/dev/null', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let buf = '';
    this.proc.stdout!.on('data', (d) => {
      buf += d.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i);
        buf = buf.slice(i + 1);
        try { this.lines.push(JSON.parse(line)); } catch { this.lines.push({ level: 0, msg: `(not json) ${line}` }); }
        for (const w of this.waiters.splice(0)) w();
      }
    });
    this.proc.stderr!.on('data', (d) => { this.stderr += d.toString(); });
    // 'close', not 'exit': the exit can be seen before the last of stdout is read.
    this.exit = new Promise((resolve) => this.proc.on('close', (code) => { for (const w of this.waiters.splice(0)) w(); resolve(code); }));
  }

  /** Waits for the n-th log line matching pred (1-based), failing after timeoutMs with the log so far. */
  async waitFor(pred: (l: LogLine) => boolean, timeoutMs = 10_000, n = 1): Promise<LogLine> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const hits = this.lines.filter(pred);
      if (hits.length >= n) return hits[n - 1];
      if (this.proc.exitCode !== null) throw new Error(`daemon exited (${this.proc.exitCode}) before the expected log line.\nstderr: ${this.stderr}\nlog:\n${this.dump()}`);
      const left = end - Date.now();
      if (left <= 0) throw new Error(`timed out waiting for a log line.\nlog:\n${this.dump()}\nstderr: ${this.stderr}`);
      await new Promise<void>((r) => { const t = setTimeout(r, Math.min(left, 200)); this.waiters.push(() => { clearTimeout(t); r(); }); });
    }
  }

  count(pred: (l: LogLine) => boolean): number {
    return this.lines.filter(pred).length;
  }

  dump(): string {
    return this.lines.slice(-40).map((l) => JSON.stringify(l)).join('\n');
  }

  async stop(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    if (this.proc.exitCode === null && this.proc.signalCode === null) this.proc.kill(signal);
    return this.exit;
  }
}
