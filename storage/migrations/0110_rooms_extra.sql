-- Thread events of a room by position: GET /threads orders thread roots by
-- their newest reply, and thread aggregations count replies per root.
CREATE INDEX events_room_threads ON events (room_nid, relates_to, depth, stream_pos) WHERE rel_type = 'm.thread';

-- The published room directory lists only a few of the rooms.
CREATE INDEX rooms_published ON rooms (room_nid) WHERE published;
