import { randomBytes } from 'node:crypto';
import { Client } from 'pg';
import { migrationStatements, PG_MIGRATIONS, roleStatements, type RoleSpec } from './sql';
import { clientConfig, type TlsFiles } from './connect';

/** `name` or `name:password`; a missing password is generated (and shown once). */
export function parseRole(text: string, kind: RoleSpec['kind']): RoleSpec {
  const i = text.indexOf(':');
  const name = i < 0 ? text : text.slice(0, i);
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/.test(name)) throw new Error(`${kind} name ${JSON.stringify(name.slice(0, 80))}: 1-63 letters, digits, . _ - (the node's fleet_origin)`);
  const password = i < 0 ? randomBytes(18).toString('base64url') : text.slice(i + 1);
  if (password.length < 8 || /[\0\r\n]/.test(password)) throw new Error(`${kind} ${name}: a password of at least 8 characters, no line breaks`);
  return { name, password, kind, generated: i < 0 };
}

/** Everything fleet init runs, as one SQL script (`--print`). */
export function initScript(roles: RoleSpec[]): string {
  return [...migrationStatements(), ...roles.flatMap(roleStatements)].map((s) => `${s};\n`).join('\n');
}

/**
 * Create (or bring up to date) the schema, trigger, group roles and policies through drizzle's
 * migrator (applied migrations are recorded, so a second run changes nothing), then the roles.
 * Returns how many migrations ran.
 */
export async function fleetInit(url: string, tls: TlsFiles, roles: RoleSpec[]): Promise<{ migrations: number; roles: string[] }> {
  const client = new Client(clientConfig(url, tls, 'ampere fleet init'));
  await client.connect();
  try {
    const { drizzle } = await import('drizzle-orm/node-postgres');
    const { migrate } = await import('drizzle-orm/node-postgres/migrator');
    const before = await appliedCount(client);
    // Roles are cluster-wide: two inits at once must not both try to create them.
    await client.query(`SELECT pg_advisory_lock(7211)`);
    await migrate(drizzle(client), { migrationsFolder: PG_MIGRATIONS });
    for (const r of roles) for (const s of roleStatements(r)) await client.query(s);
    await client.query(`SELECT pg_advisory_unlock(7211)`);
    return { migrations: (await appliedCount(client)) - before, roles: roles.map((r) => r.name) };
  } finally {
    await client.end().catch(() => {});
  }
}

async function appliedCount(client: Client): Promise<number> {
  const r = await client.query(`SELECT to_regclass('drizzle.__drizzle_migrations') IS NOT NULL AS present`);
  if (!r.rows[0].present) return 0;
  return Number((await client.query(`SELECT count(*) AS n FROM drizzle.__drizzle_migrations`)).rows[0].n);
}
