import { spawn, type ChildProcess } from 'node:child_process';
import { CommandError, which, inNetns } from './exec';

const PROMPT = 'ipset> ';
/** How long an error without its prompt waits for the rest of its text. */
const STDERR_WAIT_MS = 1000;

/**
 * One long-lived `ipset -exist -` (ipset's interactive mode) that applies each line as it
 * arrives, unlike `ipset restore`, which waits for end of input. A ban then costs a write
 * and a netlink round trip instead of a process start. ipset prints its prompt
 * after every command and errors on stderr before that prompt, so a batch is done when its
 * last prompt arrives; any stderr fails the batch and the shell is replaced.
 * Only lines built from checked addresses and our own set names are ever written.
 * Needs coreutils' stdbuf; IpsetShell.available() says whether it is there.
 */
export class IpsetShell {
  private proc: ChildProcess | null = null;
  private prompts = 0; // prompts seen (the first one comes before any command)
  private sent = 0; // lines written
  private waiting: { until: number; resolve: (out: string) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }[] = [];
  private stderr = '';
  private stderrTimer: NodeJS.Timeout | undefined;
  /** What ipset printed since the last prompt, and the text before each prompt a waiter still needs. */
  private output = '';
  private answers = new Map<number, string>();

  constructor(private readonly netns?: string, private readonly timeoutMs = 5_000) {}

  static available(): boolean {
    return which('stdbuf') !== null;
  }

  run(lines: string[]): Promise<void> {
    return this.send(lines).then(() => {});
  }

  /**
   * One command whose output is wanted (`list -t`): resolves with what ipset printed for it.
   * It goes in order with the batches written before it, so its answer sees them applied.
   */
  query(line: string): Promise<string> {
    return this.send([line]);
  }

  private send(lines: string[]): Promise<string> {
    if (lines.length === 0) return Promise.resolve('');
    const p = this.ensure();
    this.sent += lines.length;
    const until = this.sent + 1;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => this.fail(`ipset shell: no answer within ${this.timeoutMs} ms`), this.timeoutMs);
      this.waiting.push({ until, resolve, reject, timer });
      p.stdin!.write(lines.join('\n') + '\n');
    });
  }

  /** Start the shell ahead of the first ban, so that one pays no process start either. */
  start(): void {
    this.ensure();
  }

  close(): void {
    const p = this.proc;
    this.proc = null;
    if (p) { p.stdin?.end(); p.kill(); }
  }

  private ensure(): ChildProcess {
    if (this.proc) return this.proc;
    // stdbuf -o0: ipset's prompt has no newline and sits in stdio's buffer when stdout is a pipe.
    const cmd = ['stdbuf', '-o0', 'ipset', '-exist', '-'];
    const [file, args] = inNetns(this.netns, cmd[0], cmd.slice(1));
    const p = spawn(file, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    this.proc = p;
    // The shell must not keep the process alive; a batch in flight is held by its timer.
    p.unref();
    for (const s of [p.stdin, p.stdout, p.stderr] as unknown as { unref?: () => void }[]) s?.unref?.();
    this.prompts = 0;
    this.sent = 0;
    this.stderr = '';
    this.output = '';
    this.answers.clear();
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => {
      // Searched with what came before: a prompt may arrive in two reads.
      const text = this.output + d;
      let from = 0;
      let i;
      while ((i = text.indexOf(PROMPT, from)) >= 0) {
        this.prompts++;
        // Kept only for the prompt a waiter ends on: a ban's batch prints nothing anyway.
        if (this.waiting.some((w) => w.until === this.prompts)) this.answers.set(this.prompts, text.slice(from, i));
        from = i + PROMPT.length;
      }
      this.output = text.slice(from);
      // Settle after stderr of the same poll round is read: ipset writes an error before the prompt.
      setImmediate(() => this.settle(p));
    });
    p.stderr!.setEncoding('utf8');
    // ipset writes an error in pieces ("ipset v7.17: ", then the message and its newline): the
    // batch fails once a whole line is in, or STDERR_WAIT_MS after a piece that never ends.
    p.stderr!.on('data', (d: string) => {
      if (this.proc !== p) return; // a replaced shell's last words
      this.stderr += d;
      if (this.stderr.includes('\n')) this.fail(this.stderr.trim());
      else this.stderrTimer ??= setTimeout(() => { if (this.proc === p) this.fail(this.stderr.trim()); }, STDERR_WAIT_MS);
    });
    p.stdin!.on('error', () => {});
    p.on('error', (err) => { if (this.proc === p) this.fail(`ipset shell: ${err.message}`); });
    p.on('exit', (code) => { if (this.proc === p) this.fail(`ipset shell exited (${code})${this.stderr ? `: ${this.stderr.trim()}` : ''}`); });
    return p;
  }

  private settle(p: ChildProcess): void {
    if (this.proc !== p) return;
    if (this.stderr) return; // an error is being written: everything in flight fails with it
    while (this.waiting.length && this.waiting[0].until <= this.prompts) {
      const w = this.waiting.shift()!;
      clearTimeout(w.timer);
      const out = this.answers.get(w.until) ?? '';
      this.answers.delete(w.until);
      w.resolve(out);
    }
  }

  /** Everything in flight fails; the next run() starts a fresh shell. */
  private fail(message: string): void {
    clearTimeout(this.stderrTimer);
    this.stderrTimer = undefined;
    const waiting = this.waiting.splice(0);
    this.close();
    const err = new CommandError('ipset -exist -', 1, message);
    for (const w of waiting) { clearTimeout(w.timer); w.reject(err); }
  }
}
