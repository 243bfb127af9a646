// SQL shared by the Store's queries and its listing pages.

/** A ban in force at the one `?` parameter (now): not lifted, and permanent or ending after now. */
export const ACTIVE = '(bans.lifted_at IS NULL AND (bans.until IS NULL OR bans.until > ?))';

/** A bans row as an object with the schema's (camelCase) field names: ActiveBan plus liftedAt, liftReason. */
export const BAN_FIELDS = `bans.id AS id, bans.address AS address, bans.family AS family, bans.started_at AS startedAt, bans.until AS until,
  bans.reason_kind AS reasonKind, bans.reason_service AS reasonService, bans.reason_account AS reasonAccount, bans.failures AS failures,
  bans.source AS source, bans.origin AS origin, bans.lifted_at AS liftedAt, bans.lift_reason AS liftReason`;
