"""What fires at the user's local wall-clock time: goal reminders and digests.

`occurrences` (pure time arithmetic) → `reminders` and `digests` (each schedule's next instant,
kept in PostgreSQL) → `dispatcher` (a tick claims what is due, records each occurrence in the
ledger once, writes the notification) → `tasks` (the tick). Goals announce their changes as
events (`handlers`); account calls in when the zone or the digest times change."""
