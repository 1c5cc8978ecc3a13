-- Placeholder: version 0009 belongs to another branch (0009: feat/inbound, 0010: taken
-- too). It exists only so that this branch's 0011 applies without a gap; delete this file
-- when merging, the real 0009 takes its place (a database migrated from this branch alone
-- is a test database: its checksum for 0009 will differ and the migrator will say so).
SELECT 1;
