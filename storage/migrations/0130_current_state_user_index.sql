-- A user's memberships come from a full index rather than one partial on
-- type = 'm.room.member': SQLite re-prepares, on every execution, any
-- statement that compares a bound parameter with the column a partial
-- index is conditioned on (type = $2 against that index's WHERE), and
-- the current-state reads of every type did so - the member lists the
-- notifier reads on each wake-up among them.
DROP INDEX current_state_membership;
CREATE INDEX current_state_user ON current_state (state_key, type, membership);
