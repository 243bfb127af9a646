import { Client } from 'pg';
import type { Check } from '../cli/check';
import type { Config } from '../config';
import { redactUrl } from '../config/fleet-keys';
import { clientConfig, tlsOf } from './connect';

/**
 * `ampere check` in fleet mode: the database answers, the schema is there, this node's role is
 * its fleet_origin, and a trial insert of its own decision passes row-level security (rolled back).
 */
export async function checkFleet(cfg: Config): Promise<Check[]> {
  const where = redactUrl(cfg.fleet_url);
  let client: Client;
  try {
    client = new Client({ ...clientConfig(cfg.fleet_url, tlsOf(cfg), 'ampere check'), connectionTimeoutMillis: 5000 });
  } catch (err) {
    return [{ name: 'fleet', result: 'fail', detail: `${where}: ${(err as Error).message}` }];
  }
  client.on('error', () => {});
  try {
    await client.connect();
    const who = (await client.query(`SELECT current_user AS role, to_regclass('public.fleet_decisions') IS NOT NULL AS ready, pg_has_role(current_user, 'ampere_node', 'member') AS node, current_setting('server_version') AS version,
      coalesce((SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()), false) AS tls`)).rows[0] as { role: string; ready: boolean; node: boolean; version: string; tls: boolean };
    // Columns only the database may set (drizzle-pg/0002): a role that may name them can forge a decision's age or place.
    const forgeable = who.ready ? (await client.query(`SELECT c FROM unnest(ARRAY['id', 'txid', 'created_at', 'operator']) AS c
      WHERE has_column_privilege('public.fleet_decisions', c, 'INSERT')`)).rows.map((r: { c: string }) => r.c) : [];
    const out: Check[] = [{ name: 'fleet', result: 'ok', detail: `connected to ${where} (PostgreSQL ${who.version}) as ${who.role}, ${who.tls ? 'over TLS' : 'without TLS'}` }];
    if (!who.ready) return [...out, { name: 'fleet schema', result: 'fail', detail: 'table fleet_decisions missing: run "ampere fleet init --url <owner-url>"' }];
    if (who.role !== cfg.fleet_origin) out.push({ name: 'fleet origin', result: 'fail', detail: `fleet_origin ${cfg.fleet_origin} is not this connection's role ${who.role}: the database would refuse every decision of this node` });
    if (!who.node) out.push({ name: 'fleet role', result: 'fail', detail: `role ${who.role} is not a member of ampere_node ("ampere fleet init --node ${who.role}")` });
    if (who.node && forgeable.length > 0) {
      out.push({ name: 'fleet rights', result: 'fail', detail: `role ${who.role} may set ${forgeable.join(', ')} of its decisions (a fleet made by an older Ampere): run "ampere fleet init --url <owner-url>" again` });
    }
    await client.query('BEGIN');
    try {
      await client.query(`INSERT INTO fleet_decisions (origin, seq, action, address) VALUES ($1, 0, 'unban', '192.0.2.1')`, [cfg.fleet_origin]);
      out.push({ name: 'fleet rights', result: 'ok', detail: `may publish as ${cfg.fleet_origin} (trial insert rolled back)` });
    } catch (err) {
      out.push({ name: 'fleet rights', result: 'fail', detail: `cannot publish as ${cfg.fleet_origin}: ${(err as Error).message}` });
    } finally { await client.query('ROLLBACK').catch(() => {}); }
    return out;
  } catch (err) {
    return [{ name: 'fleet', result: 'fail', detail: `${where}: ${(err as Error).message}` }];
  } finally {
    await client.end().catch(() => {});
  }
}
