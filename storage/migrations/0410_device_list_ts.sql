-- When each device-list change was recorded, so that old ones can be
-- pruned: a sync from before the pruned horizon is told that every user
-- it shares a room with changed (e2ee_device_lists_horizon in
-- server_settings).
ALTER TABLE e2ee_device_list_changes ADD COLUMN ts BIGINT NOT NULL DEFAULT 0;
CREATE INDEX e2ee_device_list_changes_ts ON e2ee_device_list_changes (ts);
