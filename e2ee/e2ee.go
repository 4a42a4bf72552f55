// Package e2ee stores and routes what end-to-end encryption needs: device
// keys, one-time and fallback keys, cross-signing keys and signatures, key
// backups, to-device messages and device-list changes. The server never
// sees plaintext.
//
// Handlers in clientapi parse requests and make one call here; the sync
// engine reads two streams the engine owns:
//
//	to_device     one position per queued message        ToDeviceSince, AckToDevice
//	device_lists  one position per device-list change    DeviceListChanges
//
// and the per-device counts (KeyCounts).
// Positions come from storage's NextStreamPos inside the writing
// transaction, so a reader that has seen position P later sees everything
// at or below P. After each commit the engine tells the Notifier, so that
// sync can wake waiting clients.
package e2ee

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// RoomMembership answers who shares a room with whom. The rooms engine
// provides it; until then the engine only knows about a user's own keys.
type RoomMembership interface {
	// SharedRoomUsers lists the users who share at least one room with
	// userID (both joined; the spec narrows this to encrypted rooms, which
	// an implementation may do).
	SharedRoomUsers(ctx context.Context, userID string) ([]string, error)
	// UsersShareRoom reports whether a and b share at least one room.
	UsersShareRoom(ctx context.Context, a, b string) (bool, error)
}

// Notifier is told after commits, so that the sync engine can wake the
// clients waiting on them. Calls run on the committing request's
// goroutine and should return quickly.
type Notifier interface {
	// ToDevice: messages for the device are queued up to pos.
	ToDevice(userID, deviceID string, pos int64)
	// DeviceListChanged: a change concerning userID's device list (its
	// devices or cross-signing keys, or, for a signature by userID's
	// user-signing key, what userID sees of another user) is at pos of
	// the device_lists stream. userID and those who share a room with
	// them may be concerned.
	DeviceListChanged(userID string, pos int64)
	// KeysChanged: the device's one-time key counts or unused fallback key
	// types changed (an upload or a claim).
	KeysChanged(userID, deviceID string)
}

// MembershipDelta lists, for a syncing user and one sync window, the users
// who started to share a room with them and those who stopped sharing any.
// The sync engine computes it from the room stream.
type MembershipDelta struct {
	Joined []string
	Left   []string
}

// SyncTokens decodes the sync tokens clients pass to /keys/changes. The
// sync engine provides it; until then a token is the decimal device_lists
// position that CurrentPositions reports, and no membership changes are
// known.
type SyncTokens interface {
	// DeviceListsPos extracts the device_lists position from a token; an
	// invalid token is an mxerr error.
	DeviceListsPos(token string) (int64, error)
	// MembershipDelta reports the membership changes between two tokens.
	MembershipDelta(ctx context.Context, userID, from, to string) (MembershipDelta, error)
}

// Config is what the engine needs from the server configuration.
type Config struct {
	// ServerName decides which users are local.
	ServerName string
	// MaxOneTimeKeysPerDevice bounds the unclaimed one-time keys a device
	// may hold (default 1000; clients keep about 50 to 100).
	MaxOneTimeKeysPerDevice int
	// MaxOneTimeKeysPerUpload bounds one /keys/upload (default 500).
	MaxOneTimeKeysPerUpload int
	// MaxBackupKeys bounds the keys of one backup version (default 1,000,000).
	MaxBackupKeys int64
}

// Limits on the size of what clients store.
const (
	// MaxKeyObjectBytes bounds a device keys or cross-signing key object.
	MaxKeyObjectBytes = 16 << 10
	// MaxOneTimeKeyBytes bounds one one-time or fallback key object.
	MaxOneTimeKeyBytes = 4 << 10
	// MaxBlobBytes bounds a backup's auth_data, one backed-up session and
	// a dehydrated device's data.
	MaxBlobBytes = 64 << 10
	// MaxQueryUsers bounds the users of one /keys/query or /keys/claim.
	MaxQueryUsers = 5000
	// MaxClaimDevices bounds the devices of one /keys/claim.
	MaxClaimDevices = 10000
	// MaxToDeviceMessages bounds the devices one sendToDevice reaches,
	// after "*" is expanded.
	MaxToDeviceMessages = 10000
	// MaxIDBytes bounds user, device, room, session and key IDs.
	MaxIDBytes = 255
)

// Engine is the end-to-end encryption engine.
type Engine struct {
	cfg      Config
	db       *storage.DB
	store    *storage.Keys
	accounts *storage.Accounts
	log      *slog.Logger
	now      func() time.Time

	// acked remembers, per "user|device", a position up to which no
	// to-device message is left: syncs that acknowledge nothing new skip
	// the database (positions only grow, so the answer never goes stale).
	acked *lru.Cache[string, int64]
	// keyCounts remembers devices' one-time and fallback key counts, which
	// every sync reports. Uploads, claims and deletions here move
	// countsGen, which drops them all; keyCountsTTL bounds how long a
	// change made through another instance goes unseen.
	keyCounts *lru.Cache[[2]string, keyCountsAt]
	countsGen atomic.Uint64

	mu         sync.RWMutex
	membership RoomMembership
	notifier   Notifier
	tokens     SyncTokens
}

// New builds the engine.
func New(cfg Config, db *storage.DB, log *slog.Logger) *Engine {
	cfg.MaxOneTimeKeysPerDevice = cmp.Or(cfg.MaxOneTimeKeysPerDevice, 1000)
	cfg.MaxOneTimeKeysPerUpload = cmp.Or(cfg.MaxOneTimeKeysPerUpload, 500)
	cfg.MaxBackupKeys = cmp.Or(cfg.MaxBackupKeys, 1_000_000)
	return &Engine{cfg: cfg, db: db, store: db.Keys(), accounts: db.Accounts(), log: log, now: time.Now,
		acked: lru.New[string, int64](100_000), keyCounts: lru.New[[2]string, keyCountsAt](100_000)}
}

// SetMembership installs the room membership source (nil removes it).
func (e *Engine) SetMembership(m RoomMembership) {
	e.mu.Lock()
	e.membership = m
	e.mu.Unlock()
}

// SetNotifier installs the notifier (nil removes it).
func (e *Engine) SetNotifier(n Notifier) {
	e.mu.Lock()
	e.notifier = n
	e.mu.Unlock()
}

// SetSyncTokens installs the sync token decoder (nil removes it).
func (e *Engine) SetSyncTokens(t SyncTokens) {
	e.mu.Lock()
	e.tokens = t
	e.mu.Unlock()
}

func (e *Engine) deps() (RoomMembership, Notifier, SyncTokens) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	return e.membership, e.notifier, e.tokens
}

func (e *Engine) notifyToDevice(userID, deviceID string, pos int64) {
	if _, n, _ := e.deps(); n != nil {
		n.ToDevice(userID, deviceID, pos)
	}
}

func (e *Engine) notifyDeviceList(userID string, pos int64) {
	if _, n, _ := e.deps(); n != nil {
		n.DeviceListChanged(userID, pos)
	}
}

func (e *Engine) notifyKeys(userID, deviceID string) {
	if _, n, _ := e.deps(); n != nil {
		n.KeysChanged(userID, deviceID)
	}
}

// deviceListChanged records a change in tx and notifies after commit.
func (e *Engine) deviceListChanged(ctx context.Context, tx *storage.Tx, userID, onlyFor string) error {
	pos, err := e.store.DeviceListChangeAdd(ctx, tx, userID, onlyFor, e.now().UnixMilli())
	if err != nil {
		return err
	}
	tell := cmp.Or(onlyFor, userID)
	tx.AfterCommit(func() { e.notifyDeviceList(tell, pos) })
	return nil
}

func (e *Engine) nowMS() int64 { return e.now().UnixMilli() }

// isLocal reports whether userID belongs to this server.
func (e *Engine) isLocal(userID string) bool {
	return strings.HasSuffix(userID, ":"+e.cfg.ServerName) && strings.HasPrefix(userID, "@")
}

// serverOf returns the server name of a user ID.
func serverOf(userID string) string {
	_, server, _ := strings.Cut(userID, ":")
	return server
}

// validUserID checks the shape of a user ID (any server).
func validUserID(s string) bool {
	local, server, ok := strings.Cut(s, ":")
	return ok && len(s) <= MaxIDBytes && strings.HasPrefix(local, "@") && len(local) > 1 && server != ""
}

// validID checks a device, room, session or key identifier.
func validID(s string) bool {
	if s == "" || len(s) > MaxIDBytes {
		return false
	}
	for _, r := range s {
		if r < 0x20 || r == 0x7f {
			return false
		}
	}
	return true
}

// remoteFailure is what /keys/query and /keys/claim report for a server
// they could not ask.
func remoteFailure() map[string]any {
	return map[string]any{"status": 503, "message": "Federation is not available on this server"}
}

// CurrentPositions returns the newest committed position of each stream
// the engine owns: "to_device" and "device_lists". Sync puts them in its
// next_batch.
func (e *Engine) CurrentPositions(ctx context.Context) (map[string]int64, error) {
	out := make(map[string]int64, 2)
	for _, s := range []string{storage.ToDeviceStream, storage.DeviceListsStream} {
		p, err := e.db.StreamPos(ctx, s)
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", s, err)
		}
		out[s] = p
	}
	return out, nil
}

// parsePos reads a stream position given as a decimal number.
func parsePos(s string) (int64, error) {
	p, err := strconv.ParseInt(s, 10, 64)
	if err != nil || p < 0 {
		return 0, mxerr.InvalidParam("Invalid token %q", s)
	}
	return p, nil
}

func notFoundAs(err error, me *mxerr.Error) error {
	if errors.Is(err, storage.ErrNotFound) {
		return me
	}
	return err
}
