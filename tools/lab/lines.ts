/**
 * A child process read line by line: each line goes to `onLine` (which may consume it) or to
 * the first waiter whose predicate matches, else it is queued for a later next().
 */
import type { ChildProcess } from 'node:child_process';

interface Waiter { pred: (l: string) => boolean; resolve: (l: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }

export class LineProc {
  stderr = '';
  private buf = '';
  private queue: string[] = [];
  private waiters: Waiter[] = [];
  onLine: ((line: string) => boolean | void) | null = null; // true = consumed
  /** Resolves with the exit code once the process has exited and its output is read ('close'). */
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
    proc.stderr?.on('data', (d) => { this.stderr = (this.stderr + d.toString()).slice(-64_000); });
    this.exited = new Promise((r) => proc.on('close', (code) => {
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
