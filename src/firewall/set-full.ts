import type { Logger } from '../log';
import { CommandError } from './exec';
import { isSetFull, type SetBounds } from './ipset-load';
import { capacityOf, type SetSlot } from './ipset-sets';

/** Bans left out of the kernel because their set was full (each full load counts those it leaves out again): the metric. */
export const setFullStats = { leftOut: 0 };

/**
 * The ipset backend's sets at their maxelem (set_size for hosts, RANGE_MAXELEM for ranges).
 * A ban that does not fit stays in the database only: counted, and said once per set at error
 * (then at debug) until a full load fits every ban again, so a full set never fails a batch or
 * a load, and never makes the daemon repair or restart in a loop.
 */
export class SetFull {
  /** Live sets already said to be full. */
  private readonly told = new Set<string>();
  private leftInLoad = 0;
  /** Batches applied again one line at a time, in the order they failed. */
  private retries: Promise<unknown> = Promise.resolve();

  constructor(private readonly log: Logger, private readonly slots: readonly SetSlot[], private readonly setSize: () => number) {}

  /** The bounds of a full load's scratch sets (loadDroppingRefused); loaded() after it. */
  get bounds(): SetBounds {
    return {
      capacity: (set) => { const s = this.slots.find((x) => x.scratch === set); return s && capacityOf(s, this.setSize()); },
      leftOut: (set, left) => { this.leftInLoad += left; this.note(this.slots.find((x) => x.scratch === set)!, left, 'full load'); },
    };
  }

  /** A full load is in: one that left nothing out ends every full set (the next one is said again). */
  loaded(): void {
    if (this.leftInLoad === 0) this.told.clear();
    this.leftInLoad = 0;
  }

  /**
   * A batch the kernel refused because a set is full: the shell stops at such a line, so every
   * line of it goes again, each set's through one interactive `ipset -exist -`, which tries
   * every line. Those refused as full are counted (and said); any other refusal throws.
   */
  retry(lines: string[], run: (input: string) => Promise<{ stderr: string }>): Promise<void> {
    const next = this.retries.catch(() => {}).then(async () => {
      const problems: string[] = [];
      for (const slot of this.slots) {
        const own = lines.filter((l) => l.startsWith(`add ${slot.live} `) || l.startsWith(`del ${slot.live} `));
        if (own.length === 0) continue;
        const refused = (await run(own.join('\n') + '\n')).stderr.split('\n').filter((l) => l.trim().length > 0);
        const full = refused.filter(isSetFull).length;
        if (full > 0) this.note(slot, full, 'ban');
        problems.push(...refused.filter((l) => !isSetFull(l)));
      }
      if (problems.length) throw new CommandError('ipset -exist -', 1, problems.join('\n'));
    });
    this.retries = next;
    return next;
  }

  private note(slot: SetSlot, left: number, during: 'full load' | 'ban'): void {
    setFullStats.leftOut += left;
    const max = capacityOf(slot, this.setSize());
    const what = slot.range ? `${max} ranges (fixed)` : `set_size ${max}`;
    const msg = `ipset set ${slot.live} is full at ${what}: ${left} ${slot.range ? 'range' : 'ban'}${left === 1 ? '' : 's'} left out of the kernel, kept in the database${slot.range ? '' : '; raise set_size'}`;
    const fields = { set: slot.live, maxelem: max, leftOut: left, during };
    if (this.told.has(slot.live)) return this.log.debug(fields, msg);
    this.told.add(slot.live);
    this.log.error(fields, msg);
  }
}
