import { spawn, type ChildProcess } from 'node:child_process';
import { which, inNetns } from './exec';

/**
 * The helper: for each line read, the filter table of both families fetched with
 * getsockopt(IPT_SO_GET_INFO / IPT_SO_GET_ENTRIES), packet counters zeroed, compared with
 * the previous fetch; it prints a generation number that grows when either differs. A table
 * over 1 MiB (the rules backend's many hosts) is compared by its info header alone.
 * getsockopt goes through syscall() because perl's own passes a 256-byte length the kernel refuses.
 */
const SCRIPT = String.raw`
use strict; use Socket; use Config;
$| = 1;
my %nr = (x86_64 => 55, aarch64 => 209);
my ($arch) = $Config{archname} =~ /^([^-]+)/;
my $nr = $nr{$arch} or die "no getsockopt number for $arch\n";
my @fam = ([AF_INET, 0, 90, 96], [AF_INET6, 41, 142, 152]);
my (@sock, @last); my $gen = 0;
for my $i (0..$#fam) { socket($sock[$i], $fam[$i][0], SOCK_RAW, 255) or die "socket: $!\n"; }
sub gso { my ($s, $lvl, $opt, $buf) = @_; my $len = pack('L', length $buf); return syscall($nr, fileno($s), $lvl, $opt, $buf, $len) == 0 ? $buf : undef; }
sub look { my ($i) = @_; my ($s, $lvl, $nx, $cn) = ($sock[$i], @{$fam[$i]}[1..3]);
  my $info = gso($s, $lvl, 64, pack('Z32', 'filter') . "\0" x 52); return 'none' unless defined $info;
  my $size = unpack('L', substr($info, 80, 4));
  return substr($info, 32) if $size > 1048576;
  my $e = gso($s, $lvl, 65, pack('Z32 L x4', 'filter', $size) . "\0" x $size); return 'err' unless defined $e;
  for (my $p = 40; $p < 40 + $size;) { my $n = unpack('S', substr($e, $p + $nx, 2)); last if $n < 1; substr($e, $p + $cn, 16) = "\0" x 16; $p += $n; }
  return $e; }
while (<STDIN>) { my $ch = 0; for my $i (0..$#fam) { my $v = look($i); $ch = 1 if !defined $last[$i] || $last[$i] ne $v; $last[$i] = $v; } $gen++ if $ch; print "$gen\n"; }
`;

/** A helper that failed is started again after this. */
const RESTART_MS = 5_000;
const ANSWER_MS = 2_000;

/**
 * A signature of legacy iptables' filter tables that costs no process start: one long-lived
 * perl helper (perl-base is part of every Debian system) reads them through getsockopt, as
 * iptables itself does, and answers a generation that changes whenever a table's rules do.
 * Unknown (null) when perl is missing, the helper died or did not answer: the caller then lists.
 * Only our own fixed script is run; its answer is only compared, never parsed further.
 */
export class LegacySignature {
  private proc: ChildProcess | null = null;
  private restartAt = 0;
  private waiting: ((gen: string | null) => void)[] = [];
  private tail = '';
  private closed = false;
  /** Helpers started: a new helper counts from 1 again, so its answers are told apart. */
  private started = 0;

  constructor(private readonly netns: string | undefined) {}

  /** The tables' generation now, or null when it cannot be known. */
  query(): Promise<string | null> {
    const p = this.ensure();
    if (!p) return Promise.resolve(null);
    return new Promise((resolve) => {
      const timer = setTimeout(() => this.fail(p), ANSWER_MS);
      this.waiting.push((gen) => { clearTimeout(timer); resolve(gen); });
      p.stdin!.write('\n');
    });
  }

  close(): void {
    this.closed = true;
    const p = this.proc;
    this.proc = null;
    p?.stdin?.end();
    p?.kill();
  }

  private ensure(): ChildProcess | null {
    if (this.proc || this.closed || Date.now() < this.restartAt) return this.proc;
    if (!which('perl')) { this.restartAt = Infinity; return null; }
    const cmd = ['perl', '-e', SCRIPT];
    const [file, args] = inNetns(this.netns, cmd[0], cmd.slice(1));
    const p = spawn(file, args, { stdio: ['pipe', 'pipe', 'ignore'] });
    this.proc = p;
    this.started++;
    this.tail = '';
    // The helper must not keep the daemon alive; it ends at EOF on its stdin.
    p.unref();
    for (const s of [p.stdin, p.stdout] as unknown as { unref?: () => void }[]) s?.unref?.();
    p.stdin!.on('error', () => {});
    p.stdout!.setEncoding('utf8');
    p.stdout!.on('data', (d: string) => {
      const lines = (this.tail + d).split('\n');
      this.tail = lines.pop() ?? '';
      for (const line of lines) this.waiting.shift()?.(/^\d+$/.test(line) ? `${this.started}:${line}` : null);
    });
    p.on('error', () => this.fail(p));
    p.on('exit', () => this.fail(p));
    return p;
  }

  /** Everything waiting gets "unknown"; a new helper after a pause. */
  private fail(p: ChildProcess): void {
    if (this.proc !== p) return;
    this.proc = null;
    this.restartAt = Date.now() + RESTART_MS;
    p.stdin?.end();
    p.kill();
    for (const w of this.waiting.splice(0)) w(null);
  }
}
