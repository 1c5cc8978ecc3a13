-- Placeholder: version 0009 belongs to another branch (feat/inbound). It exists only so
-- that this branch's 0010 applies without a gap; delete this file when merging, the real
-- 0009 takes its place (a database migrated from this branch alone is a test database: its
-- checksum for 0009 will differ and the migrator will say so).
SELECT 1;
