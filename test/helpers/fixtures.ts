import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { toSecurityEvent, type SecurityEvent } from '../../src/events';
import { parseAmiBlock, splitAmiStream } from '../../tools/lab/wire';

/** Real AMI captures from Asterisk 22 under attack (copied from shared/fixtures/ami, see its README). */
export const FIXTURES = join(__dirname, '..', 'fixtures', 'ami');

export const fixtureNames = () => readdirSync(FIXTURES).filter((f) => f.endsWith('.ami')).sort();

export const fixtureBytes = (name: string) => readFileSync(join(FIXTURES, name));

/** Every message of a capture, keys lower-cased (as the AMI layer delivers them). */
export function fixtureMessages(name: string): Record<string, string>[] {
  const { messages, rest } = splitAmiStream(fixtureBytes(name).toString('utf8'));
  if (rest !== '') throw new Error(`${name} does not end on a message boundary`);
  return messages.map(parseAmiBlock);
}

export function fixtureEvents(name: string): SecurityEvent[] {
  const out: SecurityEvent[] = [];
  for (const m of fixtureMessages(name)) {
    const r = toSecurityEvent(m);
    if (r.ok) out.push(r.event);
  }
  return out;
}

/** A legacy (C Ampere) database: CREATE TABLE filter(addr INT PRIMARY KEY NOT NULL, id TEXT), these rows. */
export function legacyDb(file: string, rows: [unknown, string | null][]): void {
  const db = new Database(file);
  db.exec('CREATE TABLE filter(addr INT PRIMARY KEY NOT NULL, id TEXT)');
  const ins = db.prepare('INSERT INTO filter(addr, id) VALUES (?, ?)');
  db.transaction(() => { for (const [addr, id] of rows) ins.run(addr, id); })();
  db.close();
}
