import { sql } from 'drizzle-orm';
import { bigint, boolean, check, customType, index, inet, integer, pgTable, text, timestamp } from 'drizzle-orm/pg-core';

/** PostgreSQL's 64-bit transaction id (xid8): the catch-up cursor compares it, as text here. */
const xid8 = customType<{ data: string }>({ dataType: () => 'xid8' });

/**
 * The fleet's shared history: every ban and unban any node made, append only (no role may
 * update or delete a row). Rows are read in (txid, id) order from a cursor below the oldest
 * running transaction, so a row whose transaction commits late is never skipped.
 */
export const fleetDecisions = pgTable('fleet_decisions', {
  id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
  origin: text('origin').notNull(),
  /** The publisher's outbox number, for tracing (a publish repeated after a lost answer makes a duplicate, which applies harmlessly). */
  seq: bigint('seq', { mode: 'number' }).notNull(),
  action: text('action').notNull(),
  address: inet('address').notNull(),
  /** End of the ban; null = permanent (a receiver caps it at its fleet_ban_max). */
  until: timestamp('until', { withTimezone: true, mode: 'date' }),
  reasonKind: text('reason_kind').notNull().default(''),
  reasonService: text('reason_service').notNull().default(''),
  reasonAccount: text('reason_account').notNull().default(''),
  failures: integer('failures').notNull().default(0),
  source: text('source').notNull().default(''),
  /** Set only by a member of ampere_operator: its unban lifts a ban of any origin. */
  operator: boolean('operator').notNull().default(false),
  createdAt: timestamp('created_at', { withTimezone: true, mode: 'date' }).notNull().defaultNow(),
  txid: xid8('txid').notNull().default(sql`pg_current_xact_id()`),
}, (t) => [
  index('fleet_decisions_txid').on(t.txid, t.id),
  // Peers read these texts: bounded here, and checked again by every receiver.
  check('fleet_decisions_action', sql`${t.action} IN ('ban', 'unban')`),
  check('fleet_decisions_texts', sql`length(${t.origin}) BETWEEN 1 AND 63 AND length(${t.reasonKind}) <= 200 AND length(${t.reasonService}) <= 64 AND length(${t.reasonAccount}) <= 200 AND length(${t.source}) <= 16`),
]);
