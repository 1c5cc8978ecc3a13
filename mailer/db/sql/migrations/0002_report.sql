-- 0002: what campaign reports need to stay fast at 100 M events.
--
-- A report must not re-read a campaign's events on every call. Each event is
-- folded once, by the report itself, into small per-campaign tables
-- (report_*), and a report reads those plus the few events written since the
-- last fold. The tracker's write path does not change.
--
-- The fold's high-water mark cannot be occurred_at: the tracker stamps an
-- event with the time of the hit and may write it much later (a batch kept
-- through a database outage), so a late row would land behind a time mark
-- and never be counted. Instead each row records the transaction that wrote
-- it (a column default: the tracker's INSERT names its columns and is
-- unchanged), and a fold takes the rows of transactions older than every
-- transaction still running (pg_snapshot_xmin). Those have all committed or
-- aborted, so no row can appear behind the mark later, whatever order
-- concurrent tracker batches commit in.
--
-- Rows written before this migration read 0: the first fold takes them.
ALTER TABLE events ADD COLUMN xact xid8 NOT NULL DEFAULT '0';
ALTER TABLE events ALTER COLUMN xact SET DEFAULT pg_current_xact_id();

-- The fold's only path into events: one campaign's rows from a mark on.
-- It replaces events_campaign_idx, whose only reader was the per-campaign
-- report scan, so the tracker still maintains two indexes per event.
-- (On a live 100 M-row table, build it per partition CONCURRENTLY and attach.)
CREATE INDEX events_campaign_xact_idx ON events (campaign_id, xact);
DROP INDEX events_campaign_idx;

-- Where each campaign's fold stopped: the events of every transaction below
-- `xact` are counted in the tables below, none of the others.
CREATE TABLE report_marks (
    campaign_id  bigint PRIMARY KEY,
    xact         xid8 NOT NULL DEFAULT '0',
    events       bigint NOT NULL DEFAULT 0,
    refreshed_at timestamptz
);

-- Events per campaign, kind and link, by people and machines, and how many
-- deliveries had at least one (unique), human or any. link_id 0 stands for
-- the whole kind: opens, and clicks on any link (unique clickers are not the
-- sum of the per-link uniques).
CREATE TABLE report_totals (
    campaign_id    bigint NOT NULL,
    kind           text NOT NULL,
    link_id        bigint NOT NULL,
    human_events   bigint NOT NULL DEFAULT 0,
    machine_events bigint NOT NULL DEFAULT 0,
    unique_all     bigint NOT NULL DEFAULT 0,
    unique_human   bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, kind, link_id)
);

-- Opens and clicks per hour (UTC), for the charts.
CREATE TABLE report_hourly (
    campaign_id    bigint NOT NULL,
    kind           text NOT NULL,
    hour           timestamptz NOT NULL,
    human_events   bigint NOT NULL DEFAULT 0,
    machine_events bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (campaign_id, kind, hour)
);

-- What makes a later event not unique: one row per delivery and kind (link 0)
-- and per delivery and clicked link; `human` turns true at the first human
-- event. About one row per engaged recipient and link, not per event. The
-- key includes `human` so a fold's probe can be answered from the index.
CREATE TABLE report_firsts (
    delivery_id bigint NOT NULL,
    kind        text NOT NULL,
    link_id     bigint NOT NULL,
    human       boolean NOT NULL,
    PRIMARY KEY (delivery_id, kind, link_id) INCLUDE (human)
);

-- A campaign's opt-outs: the tracker's withdraw rows name the campaign in
-- their evidence. Partial, because grants are nearly all of the ledger.
CREATE INDEX consents_optout_campaign_idx ON consents ((evidence ->> 'campaign_id'))
    WHERE action = 'withdraw';

-- Complaints are rare (mailbox providers act above 0.3 %): the report reads
-- them all through this small index and attributes each via its delivery.
CREATE INDEX suppressions_complaint_idx ON suppressions (id) WHERE reason = 'complaint';
