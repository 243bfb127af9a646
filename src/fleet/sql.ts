import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';

/** drizzle-pg/ sits two levels above both src/fleet and dist/fleet. */
export const PG_MIGRATIONS = resolve(__dirname, '..', '..', 'drizzle-pg');

/** The channel the insert trigger notifies (drizzle-pg/0001_fleet_security.sql). */
export const CHANNEL = 'ampere_fleet';

/** A role name as SQL: only names of the fleet_origin form get here, quoted all the same. */
export const ident = (name: string) => `"${name.replace(/"/g, '""')}"`;
export const literal = (text: string) => `'${text.replace(/'/g, "''")}'`;

/** A role to create: a node (member of ampere_node) or an operator (ampere_operator). */
export interface RoleSpec { name: string; password: string; kind: 'node' | 'operator'; generated?: boolean }

/** The migrations' statements, in order, as drizzle's migrator runs them. */
export function migrationStatements(folder = PG_MIGRATIONS): string[] {
  const journal = JSON.parse(readFileSync(join(folder, 'meta', '_journal.json'), 'utf8')) as { entries: { tag: string }[] };
  return journal.entries.flatMap((e) => readFileSync(join(folder, `${e.tag}.sql`), 'utf8').split('--> statement-breakpoint').map((s) => s.trim()).filter(Boolean));
}

/** A login role in its group, created or brought up to date (password, membership): safe to run again. */
export function roleStatements(r: RoleSpec): string[] {
  const group = r.kind === 'node' ? 'ampere_node' : 'ampere_operator';
  return [
    `DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(r.name)}) THEN CREATE ROLE ${ident(r.name)} LOGIN; END IF; END $$`,
    `ALTER ROLE ${ident(r.name)} LOGIN PASSWORD ${literal(r.password)}`,
    `GRANT ${group} TO ${ident(r.name)}`,
  ];
}
