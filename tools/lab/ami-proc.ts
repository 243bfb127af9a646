/**
 * FakeAmi in a child process, so it can live inside a network namespace beside a daemon
 * (127.0.0.1 there is not the test's 127.0.0.1). Commands go in as JSON lines on stdin,
 * facts come back as JSON lines on stdout.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { FakeAmi, type FakeAmiOptions } from './ami';

type Msg = { port?: number; logins?: number; sent?: number };

export class FakeAmiProcess {
  private proc!: ChildProcess;
  private last: Msg = {};
  private waiters: (() => void)[] = [];
  port = 0;

  static async start(netns: string | undefined, port = 0, opts: FakeAmiOptions = {}): Promise<FakeAmiProcess> {
    const p = new FakeAmiProcess();
    const args = ['--import', 'tsx', __filename, String(port), JSON.stringify(opts)];
    p.proc = netns ? spawn('ip', ['netns', 'exec', netns, process.execPath, ...args], { stdio: ['pipe', 'pipe', 'inherit'] }) : spawn(process.execPath, args, { stdio: ['pipe', 'pipe', 'inherit'] });
    createInterface({ input: p.proc.stdout! }).on('line', (line) => {
      Object.assign(p.last, JSON.parse(line));
      for (const w of p.waiters.splice(0)) w();
    });
    await p.until((m) => m.port !== undefined);
    p.port = p.last.port!;
    return p;
  }

  private until(pred: (m: Msg) => boolean, timeoutMs = 15_000): Promise<void> {
    const end = Date.now() + timeoutMs;
    return new Promise((resolve, reject) => {
      const check = () => {
        if (pred(this.last)) return resolve();
        if (Date.now() > end) return reject(new Error(`fake AMI: timed out (state ${JSON.stringify(this.last)})`));
        this.waiters.push(check);
        setTimeout(() => { const i = this.waiters.indexOf(check); if (i >= 0) { this.waiters.splice(i, 1); check(); } }, 100);
      };
      check();
    });
  }

  waitForLogins(n: number, timeoutMs?: number): Promise<void> {
    return this.until((m) => (m.logins ?? 0) >= n, timeoutMs);
  }

  /** Send raw AMI bytes to every logged-in client; resolves when written. */
  async send(bytes: string): Promise<void> {
    const want = (this.last.sent ?? 0) + 1;
    this.proc.stdin!.write(JSON.stringify({ send: bytes }) + '\n');
    await this.until((m) => (m.sent ?? 0) >= want);
  }

  cut(): void {
    this.proc.stdin!.write(JSON.stringify({ cut: true }) + '\n');
  }

  async stop(): Promise<void> {
    if (this.proc.exitCode !== null) return;
    const gone = new Promise((r) => this.proc.once('exit', r));
    this.proc.kill('SIGKILL');
    await gone;
  }
}

// Child side.
if (require.main === module) {
  const ami = new FakeAmi(JSON.parse(process.argv[3] ?? '{}') as FakeAmiOptions);
  let sent = 0;
  const out = (m: Msg) => process.stdout.write(JSON.stringify(m) + '\n');
  ami.listen(Number(process.argv[2] ?? 0)).then((port) => out({ port }));
  let logins = 0;
  setInterval(() => { if (ami.logins !== logins) { logins = ami.logins; out({ logins }); } }, 10);
  createInterface({ input: process.stdin }).on('line', (line) => {
    const cmd = JSON.parse(line) as { send?: string; cut?: boolean };
    if (cmd.send !== undefined) { ami.send(cmd.send); out({ sent: ++sent }); }
    if (cmd.cut) ami.cut();
  });
  process.stdin.on('end', () => process.exit(0));
}
