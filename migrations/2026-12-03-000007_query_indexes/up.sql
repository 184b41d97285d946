-- What users ask of a datacenter: its agents' heartbeats over a recent period (the last 24 h),
-- listed or aggregated per monitor (checks, success ratio, average and p95 response time).
-- Heartbeats carry agent_id, not the datacenter: the query joins agents, and reads each of the
-- datacenter's agents' range through this index. The columns those queries read are included,
-- so that the index alone answers them (index-only scan): without them, the rows of one
-- datacenter lie on heap pages shared with every other one, and fetching them costs as much as
-- reading the whole day.
--
-- Created on the partitioned table: every partition, existing and future, gets its own. On an
-- existing large table this builds one index per partition, holding a lock that blocks writes
-- meanwhile.
CREATE INDEX IF NOT EXISTS api_heartbeats_agent_executed_at_idx
    ON api_heartbeats (agent_id, executed_at)
    INCLUDE (monitor_id, success, status, response_time_ms);
