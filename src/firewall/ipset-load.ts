import type { Logger } from '../log';
import { CommandError } from './exec';

/** A text of lines (no newline at its end) cut into n parts of about equal length, at line ends. */
export function splitLines(text: string, n: number): string[] {
  const parts: string[] = [];
  let from = 0;
  for (let k = 1; k < n; k++) {
    const at = Math.max(from, Math.round((text.length * k) / n));
    let nl = text.indexOf('\n', at);
    if (nl < 0) nl = text.lastIndexOf('\n', at); // the cut falls in the last line
    if (nl < from) break;
    parts.push(text.slice(from, nl));
    from = nl + 1;
  }
  parts.push(text.slice(from));
  while (parts.length < n) parts.push('');
  return parts;
}

/** Lines the kernel may refuse in one full load before it fails after all. */
const MAX_REFUSED = 64;

/** A line `ipset restore` refused (`Error in line N`) in one loader's input. */
export interface RefusedLine { loader: number; line: number; message: string; err: unknown }

/** The refused line a failed loader's error names, or null when it names none (another failure). */
export function refusedLine(loader: number, err: unknown): RefusedLine | null {
  const m = err instanceof CommandError ? /Error in line (\d+): ([^\n]*)/.exec(err.stderr) : null;
  return m ? { loader, line: Number(m[1]), message: m[2].trim(), err } : null;
}

/** ipset's refusal of an add to a set at its maxelem ("Hash is full, cannot add more elements"). */
export const isSetFull = (message: string): boolean => /\bis full\b/i.test(message);

/** What a full load knows of its sets' bounds, and where it says that one held too few. */
export interface SetBounds {
  /** The most elements the set of this name (one the load creates) holds, or undefined. */
  capacity(set: string): number | undefined;
  /** The set was full: `left` of its lines were left out, `max` loaded. */
  leftOut(set: string, left: number, max: number): void;
}

/** The lines with only the first max adds to set; how many were left out. */
function capSet(lines: string[], set: string, max: number): { kept: string[]; left: number } {
  const head = `add ${set} `;
  let n = 0;
  const kept = lines.filter((l) => !l.startsWith(head) || ++n <= max);
  return { kept, left: lines.length - kept.length };
}

/**
 * A full load that survives lines the kernel refuses: `ipset restore` stops at the first bad
 * line and the load is all-or-nothing, so one such line would keep every other ban out of the
 * kernel. attempt() runs one load (each loader i reading inputFor(i) after head()) and returns
 * the refused lines; those are dropped (and logged) and the rest loaded again, at most
 * MAX_REFUSED lines in all. A set refused as full keeps its first `capacity` lines, the others
 * left out (bounds.leftOut), once per set. sources[i] is loader i's input (they may be one
 * shared iterator); every chunk pulled is kept so that a retry has them all.
 */
export async function loadDroppingRefused(
  sources: Iterator<string | Buffer>[],
  loaders: number,
  head: () => string,
  attempt: (inputFor: (loader: number) => Iterable<string | Buffer>) => Promise<RefusedLine[]>,
  log: Pick<Logger, 'error'>,
  bounds?: SetBounds,
): Promise<void> {
  const capped = new Set<string>();
  for (let dropped = 0; ;) {
    // Chunks may be Buffers (a sliced render): join('') reads them as UTF-8 text.
    const taken: (string | Buffer)[][] = sources.map(() => []);
    const recorded = (i: number): Iterable<string | Buffer> => ({
      // A plain iterator (no return()): a loader that dies cannot close the shared stream.
      [Symbol.iterator]: () => ({ next: () => { const r = sources[i].next(); if (!r.done) taken[i].push(r.value); return r; } }),
    });
    const refused = await attempt(recorded);
    if (refused.length === 0) return;
    let all: string[] = [];
    for (const [i, chunks] of taken.entries()) {
      for (let r = sources[i].next(); !r.done; r = sources[i].next()) chunks.push(r.value);
      // concat, not push(...): a loader's share may be more lines than a call takes arguments.
      all = all.concat(chunks.join('').split('\n').filter((l) => l.length > 0));
    }
    const cutNow = new Set<string>();
    for (const { loader, line, message, err } of refused) {
      // Line N of what that loader wrote: the head (create lines), then the chunks it took.
      const text = (head() + taken[loader].join('')).split('\n')[line - 1];
      const set = text?.startsWith('add ') ? text.split(' ')[1] : undefined;
      const max = set === undefined ? undefined : bounds?.capacity(set);
      if (set !== undefined && max !== undefined && isSetFull(message)) {
        // Both loaders may meet the full set; one still full once cut to its size is another failure.
        if (cutNow.has(set)) continue;
        if (capped.has(set)) throw err;
        capped.add(set);
        cutNow.add(set);
        const cut = capSet(all, set, max);
        all = cut.kept;
        bounds!.leftOut(set, cut.left, max);
        continue;
      }
      const at = text === undefined || !text.startsWith('add ') ? -1 : all.indexOf(text);
      if (at < 0 || ++dropped > MAX_REFUSED) throw err;
      all.splice(at, 1);
      log.error({ line: text, refused: message }, 'full load: the kernel refused a line; loading the other bans without it');
    }
    const parts = splitLines(all.join('\n'), loaders).filter((t) => t.length > 0).map((t) => `${t}\n`);
    sources = Array.from({ length: loaders }, (_, i) => (parts[i] === undefined ? [] : [parts[i]])[Symbol.iterator]());
  }
}
