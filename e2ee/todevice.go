package e2ee

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// ToDeviceMessage is a to-device event as /sync delivers it; Pos is its
// position on the to_device stream.
type ToDeviceMessage struct {
	Pos     int64           `json:"-"`
	Sender  string          `json:"sender"`
	Type    string          `json:"type"`
	Content json.RawMessage `json:"content"`
}

// Retention of what only guards against retries or waits for federation.
const (
	// ToDeviceTxnLifetime is how long a sendToDevice transaction ID is
	// remembered.
	ToDeviceTxnLifetime = 24 * time.Hour
	// OutboxLifetime is how long messages for other servers wait.
	OutboxLifetime = 7 * 24 * time.Hour
	// DeviceListLifetime is how long device-list changes are kept: a
	// client syncing from before that is told every user it shares a
	// room with changed, and fetches their keys again.
	DeviceListLifetime = 30 * 24 * time.Hour
)

// Batch sizes of to-device reads.
const (
	// DefaultToDeviceLimit is the spec's recommended messages per sync.
	DefaultToDeviceLimit = 100
	maxToDeviceLimit     = 1000
)

// SendToDevice queues a message of evType for each device named in
// messages (user ID → device ID or "*" for all the user's devices →
// content). A transaction ID is applied once per sending device, even
// across restarts. Unknown local devices are skipped; messages for other
// servers wait in an outbox for federation.
func (e *Engine) SendToDevice(ctx context.Context, sender, senderDevice, evType, txnID string, messages map[string]map[string]json.RawMessage) error {
	if !validID(evType) {
		return mxerr.InvalidParam("Invalid event type")
	}
	if !validID(txnID) {
		return mxerr.InvalidParam("Invalid transaction ID")
	}
	if messages == nil {
		return mxerr.MissingParam("messages is required")
	}
	n := 0
	content := map[string]map[string]string{}
	for _, u := range sortedKeys(messages) {
		if !validUserID(u) {
			return mxerr.InvalidParam("%q is not a user ID", u)
		}
		content[u] = map[string]string{}
		for dev, c := range messages[u] {
			if dev != "*" && !validID(dev) {
				return mxerr.InvalidParam("%q is not a device ID", dev)
			}
			var buf bytes.Buffer
			if !isObject(c) || json.Compact(&buf, c) != nil {
				return mxerr.BadJSON("The message for %s %s must be a JSON object", u, dev)
			}
			content[u][dev] = buf.String()
			n++
		}
	}
	if n > MaxToDeviceMessages {
		return mxerr.TooLarge("At most %d messages per request", MaxToDeviceMessages)
	}
	now := e.nowMS()
	return e.db.Write(ctx, func(tx *storage.Tx) error {
		fresh, err := e.store.ToDeviceTxnAdd(ctx, tx, sender, senderDevice, txnID, now)
		if err != nil || !fresh {
			return err
		}
		var local []storage.ToDeviceMessage
		remote := map[string]map[string]map[string]json.RawMessage{}
		for _, u := range sortedKeys(content) {
			if !e.isLocal(u) {
				dest := serverOf(u)
				if remote[dest] == nil {
					remote[dest] = map[string]map[string]json.RawMessage{}
				}
				remote[dest][u] = map[string]json.RawMessage{}
				for dev, c := range content[u] {
					remote[dest][u][dev] = json.RawMessage(c)
				}
				continue
			}
			devices, err := e.store.UserDeviceIDs(ctx, tx, u)
			if err != nil {
				return err
			}
			for _, dev := range devices {
				c, ok := content[u][dev]
				if !ok {
					// A message named for the device wins over "*".
					if c, ok = content[u]["*"]; !ok {
						continue
					}
				}
				local = append(local, storage.ToDeviceMessage{UserID: u, DeviceID: dev, Sender: sender, Type: evType, Content: c, CreatedTS: now})
			}
		}
		if len(local) > MaxToDeviceMessages {
			return mxerr.TooLarge("The request would deliver more than %d messages", MaxToDeviceMessages)
		}
		queued, err := e.store.ToDeviceAdd(ctx, tx, local)
		if err != nil {
			return err
		}
		for _, dest := range sortedKeys(remote) {
			b, err := json.Marshal(remote[dest])
			if err != nil {
				return err
			}
			if err := e.store.ToDeviceOutboxAdd(ctx, tx, storage.OutboxEntry{Destination: dest, Sender: sender, Type: evType,
				MessageID: messageID(sender, senderDevice, txnID), Messages: string(b), CreatedTS: now}); err != nil {
				return err
			}
		}
		tx.AfterCommit(func() {
			last := map[[2]string]int64{}
			for _, m := range queued {
				last[[2]string{m.UserID, m.DeviceID}] = m.Pos
			}
			for k, pos := range last {
				e.notifyToDevice(k[0], k[1], pos)
			}
		})
		return nil
	})
}

// messageID names a request in federation so that receivers can
// de-duplicate retries.
func messageID(sender, device, txnID string) string {
	h := sha256.Sum256([]byte(sender + "\x00" + device + "\x00" + txnID))
	return base64.RawURLEncoding.EncodeToString(h[:12])
}

func clampLimit(limit int64) int {
	switch {
	case limit <= 0:
		return DefaultToDeviceLimit
	case limit > maxToDeviceLimit:
		return maxToDeviceLimit
	}
	return int(limit)
}

// ToDeviceSince returns a device's pending messages after position since,
// oldest first, at most limit (≤ 0: DefaultToDeviceLimit; at most 1000),
// and next, the position to put in the sync token: the last message's
// when the batch is full (more are waiting), otherwise the stream's
// current position. Messages stay stored until AckToDevice.
func (e *Engine) ToDeviceSince(ctx context.Context, userID, deviceID string, since, limit int64) ([]ToDeviceMessage, int64, error) {
	upTo, err := e.db.StreamPos(ctx, storage.ToDeviceStream)
	if err != nil {
		return nil, 0, err
	}
	since = min(since, upTo)
	n := clampLimit(limit)
	rows, err := e.store.ToDeviceSince(ctx, userID, deviceID, since, upTo, n)
	if err != nil {
		return nil, 0, err
	}
	msgs := make([]ToDeviceMessage, len(rows))
	for i, r := range rows {
		msgs[i] = ToDeviceMessage{Pos: r.Pos, Sender: r.Sender, Type: r.Type, Content: json.RawMessage(r.Content)}
	}
	next := upTo
	if len(rows) == n {
		next = rows[len(rows)-1].Pos
	}
	return msgs, next, nil
}

// AckToDevice deletes a device's messages at or below upTo. Sync calls it
// when the device comes back with a since token holding upTo: only then
// is it known to have received them (at least once, never lost). A
// position beyond the stream's current one is clamped to it.
func (e *Engine) AckToDevice(ctx context.Context, userID, deviceID string, upTo int64) error {
	key := userID + "|" + deviceID
	if done, ok := e.acked.Get(key); ok && upTo <= done {
		return nil
	}
	cur, err := e.db.StreamPos(ctx, storage.ToDeviceStream)
	if err != nil {
		return err
	}
	upTo = min(upTo, cur)
	// Most syncs acknowledge nothing new: find out on the read pool
	// before taking the writer.
	pending, err := e.store.ToDeviceAnyUpTo(ctx, userID, deviceID, upTo)
	if err != nil {
		return err
	}
	if pending {
		if _, err := e.store.ToDeviceDeleteUpTo(ctx, userID, deviceID, upTo); err != nil {
			return err
		}
	}
	e.acked.Put(key, upTo)
	return nil
}

// RemoteToDevice is a sendToDevice request waiting to go to another
// server.
type RemoteToDevice struct {
	ID        int64
	Sender    string
	Type      string
	MessageID string
	// Messages maps user ID → device ID (or "*") → content.
	Messages json.RawMessage
}

// RemoteToDevicePending returns up to limit requests for destination with
// an ID above after, oldest first. Federation sends them, then calls
// RemoteToDeviceSent.
func (e *Engine) RemoteToDevicePending(ctx context.Context, destination string, after int64, limit int) ([]RemoteToDevice, error) {
	rows, err := e.store.ToDeviceOutboxList(ctx, destination, after, clampLimit(int64(limit)))
	if err != nil {
		return nil, err
	}
	out := make([]RemoteToDevice, len(rows))
	for i, r := range rows {
		out[i] = RemoteToDevice{ID: r.ID, Sender: r.Sender, Type: r.Type, MessageID: r.MessageID, Messages: json.RawMessage(r.Messages)}
	}
	return out, nil
}

// RemoteToDeviceSent forgets destination's requests with ID ≤ upTo.
func (e *Engine) RemoteToDeviceSent(ctx context.Context, destination string, upTo int64) error {
	return e.store.ToDeviceOutboxDelete(ctx, destination, upTo)
}

// Prune forgets old sendToDevice transaction IDs and drops messages for
// other servers that waited longer than OutboxLifetime. A periodic job
// runs it.
func (e *Engine) Prune(ctx context.Context) error {
	now := e.now()
	if _, err := e.store.ToDeviceTxnsPrune(ctx, now.Add(-ToDeviceTxnLifetime).UnixMilli()); err != nil {
		return err
	}
	n, err := e.store.ToDeviceOutboxPrune(ctx, now.Add(-OutboxLifetime).UnixMilli())
	if err != nil {
		return err
	}
	if n > 0 {
		e.log.WarnContext(ctx, "dropped to-device messages for other servers that could not be sent", "count", n)
	}
	if _, err := e.store.DeviceListsPrune(ctx, now.Add(-DeviceListLifetime).UnixMilli()); err != nil {
		return err
	}
	return nil
}
