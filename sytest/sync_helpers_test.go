package sytest

import (
	"encoding/json"
	"net/url"
	"testing"
)

// syncResp is the part of a sync response tests look at.
type syncResp struct {
	NextBatch string `json:"next_batch"`
	Rooms     struct {
		Join   map[string]syncRoom       `json:"join"`
		Invite map[string]map[string]any `json:"invite"`
		Leave  map[string]syncRoom       `json:"leave"`
		Knock  map[string]map[string]any `json:"knock"`
	} `json:"rooms"`
	AccountData struct {
		Events []syncEvent `json:"events"`
	} `json:"account_data"`
	Presence struct {
		Events []syncEvent `json:"events"`
	} `json:"presence"`
	ToDevice struct {
		Events []syncEvent `json:"events"`
	} `json:"to_device"`
	DeviceLists struct {
		Changed []string `json:"changed"`
		Left    []string `json:"left"`
	} `json:"device_lists"`
	OTKCounts map[string]int `json:"device_one_time_keys_count"`
}

type syncRoom struct {
	Timeline struct {
		Events    []syncEvent `json:"events"`
		Limited   bool        `json:"limited"`
		PrevBatch string      `json:"prev_batch"`
	} `json:"timeline"`
	State struct {
		Events []syncEvent `json:"events"`
	} `json:"state"`
	StateAfter *struct {
		Events []syncEvent `json:"events"`
	} `json:"state_after"`
	Ephemeral struct {
		Events []syncEvent `json:"events"`
	} `json:"ephemeral"`
	AccountData struct {
		Events []syncEvent `json:"events"`
	} `json:"account_data"`
	Summary map[string]any `json:"summary"`
	Unread  *struct {
		Notification int `json:"notification_count"`
		Highlight    int `json:"highlight_count"`
	} `json:"unread_notifications"`
}

type syncEvent struct {
	Type     string          `json:"type"`
	EventID  string          `json:"event_id"`
	Sender   string          `json:"sender"`
	StateKey *string         `json:"state_key"`
	Content  json.RawMessage `json:"content"`
	Unsigned map[string]any  `json:"unsigned"`
}

func (e syncEvent) body() string {
	var c struct {
		Body string `json:"body"`
	}
	_ = json.Unmarshal(e.Content, &c)
	return c.Body
}

// sync runs one /sync and decodes it.
func (u *User) sync(t testing.TB, since string, params url.Values) syncResp {
	t.Helper()
	if params == nil {
		params = url.Values{}
	}
	if since != "" {
		params.Set("since", since)
	}
	r := Must(t, u.Do(t, "GET", v3+"/sync?"+params.Encode(), nil), 200)
	var s syncResp
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("sync response: %v\n%s", err, r.Body)
	}
	if s.NextBatch == "" {
		t.Fatalf("sync without next_batch: %s", r.Body)
	}
	return s
}

func bodies(evs []syncEvent) []string {
	var out []string
	for _, e := range evs {
		if e.Type == "m.room.message" {
			out = append(out, e.body())
		}
	}
	return out
}
