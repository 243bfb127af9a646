import { sqliteTable, text, integer, index } from 'drizzle-orm/sqlite-core';

/** One row per remote host that ever offended. Times are epoch milliseconds. */
export const hosts = sqliteTable('hosts', {
  address: text('address').primaryKey(), // canonical IP text
  family: integer('family').notNull(), // 4 or 6
  firstSeen: integer('first_seen').notNull(),
  lastSeen: integer('last_seen').notNull(),
  failures: integer('failures').notNull().default(0), // offending events ever recorded
  banCount: integer('ban_count').notNull().default(0),
  banned: integer('banned', { mode: 'boolean' }).notNull().default(false),
  banUntil: integer('ban_until'), // end of the current ban; null while banned = permanent
  lastKind: text('last_kind'),
  lastService: text('last_service'),
  lastAccount: text('last_account'),
}, (t) => [
  index('hosts_banned').on(t.banned), index('hosts_last_seen').on(t.lastSeen),
  // The never-banned hosts, oldest first: counted and trimmed to max_host_rows (prune.ts).
  index('hosts_unbanned_seen').on(t.banCount, t.lastSeen),
]);

/** Every ban ever made: the active ones rebuild the kernel at start; the rest is history. */
export const bans = sqliteTable('bans', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  address: text('address').notNull().references(() => hosts.address, { onDelete: 'cascade' }),
  family: integer('family').notNull(),
  startedAt: integer('started_at').notNull(),
  until: integer('until'), // null = permanent
  reasonKind: text('reason_kind').notNull(),
  reasonService: text('reason_service').notNull().default(''),
  reasonAccount: text('reason_account').notNull().default(''),
  failures: integer('failures').notNull().default(0),
  source: text('source').notNull().default('auto'), // auto, manual, range, legacy, fail2ban, kernel, fleet
  origin: text('origin'), // fleet bans: the node that made it (null: this node)
  liftedAt: integer('lifted_at'), // set when it ended early or expired
  liftReason: text('lift_reason'), // expired, unban, allowed, superseded
}, (t) => [index('bans_active').on(t.liftedAt, t.until, t.address), index('bans_address').on(t.address)]);
// Listings page by id (newest first) and the history retention deletes by lifted_at (bans_active): no more index needed.

/** Recent offending events per host, trimmed to the configured `history`. */
export const events = sqliteTable('events', {
  id: integer('id').primaryKey({ autoIncrement: true }),
  address: text('address').notNull().references(() => hosts.address, { onDelete: 'cascade' }),
  at: integer('at').notNull(),
  kind: text('kind').notNull(),
  service: text('service').notNull(),
  transport: text('transport'),
  account: text('account').notNull(),
}, (t) => [index('events_address').on(t.address, t.id)]);

/** The runtime allow list (`ampere allow add`), merged with the configured `allow`. */
export const allowed = sqliteTable('allowed', {
  cidr: text('cidr').primaryKey(),
  addedAt: integer('added_at').notNull(),
  note: text('note').notNull().default(''),
});
