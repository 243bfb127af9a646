-- A node or an operator names only what a decision is; the database alone sets id, txid and created_at (docs/fleet.md, Trust).
-- With a table-wide INSERT a compromised node could date its flood back over many seconds (created_at: the receive rate
-- limit counts per second of creation), or give it a txid from the future that every peer's cursor reads again each round.
-- Only an operator may name "operator" (the right to lift any origin's ban). Safe to run again.
REVOKE INSERT ON "fleet_decisions" FROM ampere_node, ampere_operator;
--> statement-breakpoint
GRANT INSERT ("origin", "seq", "action", "address", "until", "reason_kind", "reason_service", "reason_account", "failures", "source") ON "fleet_decisions" TO ampere_node;
--> statement-breakpoint
GRANT INSERT ("origin", "seq", "action", "address", "until", "reason_kind", "reason_service", "reason_account", "failures", "source", "operator") ON "fleet_decisions" TO ampere_operator;
