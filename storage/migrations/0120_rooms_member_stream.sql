-- Membership events of a room by position: incremental syncs ask who
-- joined or left a room in a window, and most windows hold none, so the
-- answer must not walk the window's messages.
CREATE INDEX events_room_member_stream ON events (room_nid, stream_pos) WHERE type = 'm.room.member';
