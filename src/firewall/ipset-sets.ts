import type { Family } from '../net/ip';
import { IPSET_NAME_MAX } from './ipset-text';
import { SET_SIZE_DEFAULT } from './set-size';

/** Ranges an operator may ban per family: a few, by hand; the set grows to this at most. */
export const RANGE_MAXELEM = 65536;

/**
 * One of the ipset backend's sets: per family a `hash:ip` for hosts and a `hash:net` for
 * ranges, each with a scratch twin of the same name length for the full load's swap.
 */
export interface SetSlot {
  family: Family;
  /** True for the `hash:net` set of ranges. */
  range: boolean;
  live: string;
  scratch: string;
}

/** The slots of these families, ranges first (their rule comes first in the chain). */
export function setSlots(chain: string, families: readonly Family[]): SetSlot[] {
  const slots = families.flatMap((f) => [
    { family: f, range: true, live: `${chain}-n${f}`, scratch: `${chain}-m${f}` },
    { family: f, range: false, live: `${chain}-v${f}`, scratch: `${chain}-t${f}` },
  ]);
  for (const s of slots) {
    for (const name of [s.live, s.scratch]) {
      if (name.length > IPSET_NAME_MAX) throw new Error(`ipset name ${name} is ${name.length} characters; ipset allows ${IPSET_NAME_MAX}: use a shorter chain name`);
    }
  }
  return slots;
}

export const setType = (range: boolean) => (range ? 'hash:net' : 'hash:ip');

/** The most elements a slot's set holds: the ranges' fixed bound, or the hosts' (set_size). */
export const capacityOf = (slot: Pick<SetSlot, 'range'>, setSize: number): number => (slot.range ? RANGE_MAXELEM : setSize);

export function createLine(name: string, slot: Pick<SetSlot, 'family' | 'range'>, hashsize: number, setSize = SET_SIZE_DEFAULT): string {
  const family = slot.family === 4 ? 'inet' : 'inet6';
  return `create ${name} ${setType(slot.range)} family ${family} hashsize ${hashsize} maxelem ${capacityOf(slot, setSize)} timeout 0`;
}

/** The slot a ban's address goes to: a range (with a `/`) to the net set of its family. */
export function slotFor(slots: SetSlot[], address: string, family: Family): SetSlot | undefined {
  const range = address.includes('/');
  return slots.find((s) => s.family === family && s.range === range);
}
