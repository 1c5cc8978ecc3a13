-- Since when the database server's memory has been whole (issue #15).
--
-- Start marks commit without waiting for the WAL flush (send.sql:
-- start_writer_session), so a crash of the server may lose the last of them:
-- their rows come back `claimed` though their MAIL FROM may have left. The
-- sweep must then treat every row claimed before the crash as started. The
-- server's start time does not say when that was: a backend's crash resets
-- shared memory and replays the WAL without restarting the postmaster, and a
-- promoted standby started long before. An unlogged table does: crash
-- recovery and promotion empty it, a clean shutdown keeps it. Its one row is
-- written again (with now()) by the first start writer or sweep after such an
-- event; rows claimed before it are swept `uncertain`, never queued again.
CREATE UNLOGGED TABLE server_life (
    one   boolean PRIMARY KEY DEFAULT true CHECK (one),
    since timestamptz NOT NULL DEFAULT now()
);
INSERT INTO server_life DEFAULT VALUES;
