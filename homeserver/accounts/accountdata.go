package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"

	"github.com/parley-chat/parley/homeserver/filter"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// MaxAccountDataBytes bounds one account data entry, like an event.
const MaxAccountDataBytes = 65536

// serverManaged are account data types clients may not set directly.
var serverManaged = map[string]string{
	"m.fully_read": "Cannot set m.fully_read through this API.",
	"m.push_rules": "Cannot set m.push_rules through this API.",
}

// SetAccountData stores global (roomID "") or per-room account data.
func (e *Engine) SetAccountData(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error {
	if typ == "" || len(typ) > 255 {
		return mxerr.InvalidParam("Invalid account data type")
	}
	if msg, ok := serverManaged[typ]; ok {
		return mxerr.Custom(405, "M_BAD_JSON", "%s", msg)
	}
	if len(content) > MaxAccountDataBytes {
		return mxerr.TooLarge("Account data is larger than %d bytes", MaxAccountDataBytes)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(content, &obj); err != nil || obj == nil {
		return mxerr.BadJSON("Account data content must be a JSON object")
	}
	return e.PutAccountData(ctx, userID, roomID, typ, content)
}

// PutAccountData stores account data without the client-facing checks
// (the server's own writers: push rules, read markers, ignored users).
func (e *Engine) PutAccountData(ctx context.Context, userID, roomID, typ string, content json.RawMessage) error {
	var pos int64
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		var err error
		pos, err = e.store.AccountDataSet(ctx, tx, userID, roomID, typ, string(content))
		return err
	})
	if err != nil {
		return err
	}
	if e.hooks.AccountDataChanged != nil {
		e.hooks.AccountDataChanged(userID, pos)
	}
	return nil
}

// AccountData returns one entry; M_NOT_FOUND if unset.
func (e *Engine) AccountData(ctx context.Context, userID, roomID, typ string) (json.RawMessage, error) {
	c, err := e.store.AccountDataGet(ctx, userID, roomID, typ)
	if err != nil {
		return nil, notFoundAs(err, mxerr.NotFound("Account data not found"))
	}
	return json.RawMessage(c), nil
}

// MaxFilterBytes bounds a stored filter.
const MaxFilterBytes = 65536

// CreateFilter stores a filter after checking its shape.
func (e *Engine) CreateFilter(ctx context.Context, userID string, body []byte) (string, error) {
	if len(body) > MaxFilterBytes {
		return "", mxerr.TooLarge("Filter is larger than %d bytes", MaxFilterBytes)
	}
	if _, err := filter.Parse(body); err != nil {
		return "", err
	}
	return e.store.FilterCreate(ctx, userID, string(body))
}

// Filter returns a stored filter; M_NOT_FOUND if unknown.
func (e *Engine) Filter(ctx context.Context, userID, filterID string) (json.RawMessage, error) {
	id, err := strconv.ParseInt(filterID, 10, 64)
	if err != nil {
		return nil, mxerr.NotFound("No such filter")
	}
	c, err := e.store.FilterGet(ctx, userID, id)
	if err != nil {
		return nil, notFoundAs(err, mxerr.NotFound("No such filter"))
	}
	return json.RawMessage(c), nil
}

// MaxTagBytes bounds a room tag's name.
const MaxTagBytes = 255

// Tags returns a user's tags of a room (the m.tag room account data).
func (e *Engine) Tags(ctx context.Context, userID, roomID string) (map[string]json.RawMessage, error) {
	raw, err := e.store.AccountDataGet(ctx, userID, roomID, "m.tag")
	if err != nil {
		if errors.Is(err, storage.ErrNotFound) {
			return map[string]json.RawMessage{}, nil
		}
		return nil, err
	}
	var c struct {
		Tags map[string]json.RawMessage `json:"tags"`
	}
	if json.Unmarshal([]byte(raw), &c) != nil || c.Tags == nil {
		return map[string]json.RawMessage{}, nil
	}
	return c.Tags, nil
}

// SetTag adds (or, with a nil value, removes) a tag of a room.
func (e *Engine) SetTag(ctx context.Context, userID, roomID, tag string, value json.RawMessage) error {
	if tag == "" || len(tag) > MaxTagBytes {
		return mxerr.InvalidParam("Tag names are 1–%d bytes", MaxTagBytes)
	}
	if value != nil {
		var v struct {
			Order *float64 `json:"order"`
		}
		if err := json.Unmarshal(value, &v); err != nil {
			return mxerr.BadJSON("Tag content must be an object with an optional numeric order")
		}
		if v.Order != nil && (*v.Order < 0 || *v.Order > 1) {
			return mxerr.InvalidParam("order must be between 0 and 1")
		}
	}
	tags, err := e.Tags(ctx, userID, roomID)
	if err != nil {
		return err
	}
	if value == nil {
		delete(tags, tag)
	} else {
		tags[tag] = value
	}
	if len(tags) > 100 {
		return mxerr.InvalidParam("A room can have at most 100 tags")
	}
	b, _ := json.Marshal(map[string]any{"tags": tags})
	return e.PutAccountData(ctx, userID, roomID, "m.tag", b)
}
