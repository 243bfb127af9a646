import type { Logger } from '../log';
import type { Family } from '../net/ip';
import { checkedIp, run, which } from './exec';

/**
 * Deletes the conntrack entries of freshly banned sources. Without this, a UDP "flow" that
 * was established before the ban (a SIP scanner re-sending to 5060) can stay accepted by
 * an ESTABLISHED rule ahead of our chain. Runs in the background with a small concurrency,
 * so the ban itself is never delayed; conntrack has no batch delete, so it is one process
 * per address.
 */
export class ConntrackFlusher {
  private readonly pending = new Map<string, Family>();
  private running = 0;
  private disabled = false;
  private found: boolean | null = null; // looked up once
  private waiters: (() => void)[] = [];
  /** Addresses processed (deleted or found without entries); for tests and status. */
  done = 0;

  constructor(
    private readonly log: Logger,
    private readonly netns?: string,
    private readonly concurrency = 4,
    private readonly binary = 'conntrack',
  ) {}

  flush(bans: { address: string; family: Family }[]): void {
    if (this.disabled) return;
    if (this.found === null) this.found = which(this.binary) !== null;
    if (!this.found) {
      this.disabled = true;
      this.log.warn({ binary: this.binary }, 'conntrack not found: established flows of banned hosts are not cut (install conntrack)');
      return;
    }
    for (const b of bans) this.pending.set(checkedIp(b.address, b.family), b.family);
    while (this.running < this.concurrency && this.pending.size) void this.next();
  }

  /** Resolves when nothing is pending or running. */
  idle(): Promise<void> {
    if (!this.running && !this.pending.size) return Promise.resolve();
    return new Promise((r) => this.waiters.push(r));
  }

  private async next(): Promise<void> {
    const first = this.pending.entries().next();
    if (first.done) return;
    const [address, family] = first.value;
    this.pending.delete(address);
    this.running++;
    try {
      await deleteFlows(address, family, this.binary, this.netns);
      this.done++;
    } catch (err) {
      this.log.warn({ err, address }, 'conntrack delete failed');
    } finally {
      this.running--;
      if (this.pending.size) void this.next();
      else if (!this.running) for (const w of this.waiters.splice(0)) w();
    }
  }
}

/** `conntrack -D -s <ip>`; exit 1 with "0 flow entries" just means there was nothing to cut. */
export async function deleteFlows(address: string, family: Family, binary = 'conntrack', netns?: string): Promise<number> {
  const args = ['-D', '-f', family === 4 ? 'ipv4' : 'ipv6', '-s', checkedIp(address, family)];
  const r = await run(binary, args, { netns, okCodes: [1], timeoutMs: 30_000 });
  const m = /(\d+) flow entries have been deleted/.exec(r.stderr);
  if (r.code === 1 && !(m && m[1] === '0')) throw new Error(`${binary} ${args.join(' ')} failed: ${r.stderr.trim()}`);
  return m ? Number(m[1]) : 0;
}
