package mediaapi

import (
	"context"
	"strconv"
	"testing"

	"github.com/parley-chat/parley/storage"
)

// fakeRooms answers MediaIDsInRoom from a map.
type fakeRooms map[string][]string

func (f fakeRooms) MediaIDsInRoom(_ context.Context, roomID string) ([]string, error) {
	return f[roomID], nil
}

func createUser(t *testing.T, db *storage.DB, userID string) {
	t.Helper()
	err := db.Write(context.Background(), func(tx *storage.Tx) error {
		return db.Accounts().UserCreate(context.Background(), tx, storage.User{UserID: userID, CreatedTS: 1})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestAdminQuarantine(t *testing.T) {
	rooms := fakeRooms{}
	s := newTestServer(t, nil, Deps{Rooms: rooms})
	data := randomBytes(100)
	a := s.upload(t, "u:a", data, "application/octet-stream")
	twin := s.upload(t, "u:b", data, "application/octet-stream")
	other := s.upload(t, "u:b", randomBytes(100), "application/octet-stream")
	dl := func(id string) *response {
		return s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+id, "u:c", nil)
	}

	mustErr(t, s.do(t, "POST", "/_synapse/admin/v1/media/quarantine/test/"+a, "u:a", nil), 403, "M_FORBIDDEN")
	mustErr(t, s.do(t, "POST", "/_synapse/admin/v1/media/quarantine/test/"+a, "", nil), 401, "M_MISSING_TOKEN")
	mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/media/quarantine/test/"+a, "admin", []byte("{}")), 200)
	mustErr(t, dl(a), 404, "M_NOT_FOUND")
	mustErr(t, dl(twin), 404, "M_NOT_FOUND") // same bytes
	mustErr(t, s.thumbnail(t, a, "width=32&height=32"), 404, "M_NOT_FOUND")
	mustStatus(t, dl(other), 200)
	// A new upload of the same bytes is quarantined at once.
	again := s.upload(t, "u:d", data, "application/octet-stream")
	mustErr(t, dl(again), 404, "M_NOT_FOUND")
	// Admins may look anyway, when they insist.
	mustStatus(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+a+"?admin_unsafely_bypass_quarantine=true", "admin", nil), 200)
	mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+a+"?admin_unsafely_bypass_quarantine=true", "u:c", nil), 404, "M_NOT_FOUND")
	info := mustStatus(t, s.do(t, "GET", "/_synapse/admin/v1/media/test/"+a, "admin", nil), 200)
	if mi, _ := info.json["media_info"].(map[string]any); mi["quarantined_by"] != "@admin:test" || mi["media_length"] != float64(100) {
		t.Fatalf("media info %s", info.body)
	}

	mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/media/unquarantine/test/"+twin, "admin", nil), 200)
	mustStatus(t, dl(a), 200)
	mustStatus(t, dl(again), 200)

	// A room's media.
	rooms["!r:test"] = []string{"mxc://test/" + a, "mxc://test/" + other, "not an mxc", "mxc://remote.example/abc"}
	r := mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/room/!r:test/media/quarantine", "admin", nil), 200)
	if n := r.json["num_quarantined"]; n != float64(4) { // a, its twins, other
		t.Fatalf("num_quarantined %v", n)
	}
	mustErr(t, dl(other), 404, "M_NOT_FOUND")
	// A user's media.
	mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/media/unquarantine/test/"+a, "admin", nil), 200)
	r = mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/user/@a:test/media/quarantine", "admin", nil), 200)
	if n := r.json["num_quarantined"]; n != float64(3) {
		t.Fatalf("user num_quarantined %v", n)
	}
}

func TestRoomQuarantineNeedsRooms(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	mustErr(t, s.do(t, "POST", "/_synapse/admin/v1/room/!r:test/media/quarantine", "admin", nil), 404, "M_UNRECOGNIZED")
}

func TestAdminUserMedia(t *testing.T) {
	s := newTestServer(t, nil, Deps{})
	createUser(t, s.db, "@lister:test")
	var ids []string
	for i := range 5 {
		ids = append(ids, s.upload(t, "u:lister", randomBytes(10+i), "application/octet-stream"))
	}
	s.upload(t, "u:someone", randomBytes(10), "application/octet-stream")
	base := "/_synapse/admin/v1/users/@lister:test/media"
	r := mustStatus(t, s.do(t, "GET", base+"?limit=2", "admin", nil), 200)
	media, _ := r.json["media"].([]any)
	if len(media) != 2 || r.json["total"] != float64(5) || r.json["next_token"] != float64(2) {
		t.Fatalf("page: %s", r.body)
	}
	r = mustStatus(t, s.do(t, "GET", base+"?order_by=media_length&dir=f&from=4", "admin", nil), 200)
	media, _ = r.json["media"].([]any)
	if len(media) != 1 || media[0].(map[string]any)["media_length"] != float64(14) || r.json["next_token"] != nil {
		t.Fatalf("last page: %s", r.body)
	}
	for _, q := range []string{"?limit=-1", "?from=x", "?order_by=colour", "?dir=up"} {
		mustErr(t, s.do(t, "GET", base+q, "admin", nil), 400, "M_INVALID_PARAM")
	}
	mustErr(t, s.do(t, "GET", "/_synapse/admin/v1/users/@nobody:test/media", "admin", nil), 404, "M_NOT_FOUND")
	mustErr(t, s.do(t, "GET", "/_synapse/admin/v1/users/@x:elsewhere/media", "admin", nil), 400, "M_INVALID_PARAM")
	mustErr(t, s.do(t, "GET", base, "u:lister", nil), 403, "M_FORBIDDEN")

	r = mustStatus(t, s.do(t, "DELETE", base+"?limit=3", "admin", nil), 200)
	if r.json["total"] != float64(3) {
		t.Fatalf("delete: %s", r.body)
	}
	r = mustStatus(t, s.do(t, "DELETE", base, "admin", nil), 200)
	if r.json["total"] != float64(2) {
		t.Fatalf("delete rest: %s", r.body)
	}
	for _, id := range ids {
		mustErr(t, s.do(t, "GET", "/_matrix/client/v1/media/download/test/"+id, "u:lister", nil), 404, "M_NOT_FOUND")
	}
	if used, _ := s.db.Media().MediaUsage(context.Background(), "@lister:test"); used != 0 {
		t.Fatalf("quota not refunded: %d", used)
	}
	if n := blobFiles(t, s.dir); n != 1 {
		t.Fatalf("%d blobs left, want the other user's one", n)
	}

	mustErr(t, s.do(t, "DELETE", "/_synapse/admin/v1/media/elsewhere/abc", "admin", nil), 400, "M_UNKNOWN")
	mustErr(t, s.do(t, "DELETE", "/_synapse/admin/v1/media/test/abc", "admin", nil), 404, "M_NOT_FOUND")
	mustErr(t, s.do(t, "POST", "/_synapse/admin/v1/purge_media_cache", "admin", nil), 400, "M_INVALID_PARAM")
	r = mustStatus(t, s.do(t, "POST", "/_synapse/admin/v1/purge_media_cache?before_ts="+strconv.Itoa(1), "admin", nil), 200)
	if r.json["deleted"] != float64(0) {
		t.Fatalf("purge: %s", r.body)
	}
}
