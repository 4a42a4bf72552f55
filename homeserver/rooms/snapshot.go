package rooms

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"

	"github.com/parley-chat/parley/internal/lru"
	"github.com/parley-chat/parley/storage"
)

// State snapshots are stored as binary skip deltas.
//
// Every snapshot has a sequence number n, one more than the snapshot it was
// derived from (the empty state is n = 0, snapshot 0). With h the number of
// trailing zero bits of n, the snapshot stores the entries that changed in
// (n − 2^h, n] — merged, last value wins — and a skip pointer to its
// ancestor at n − 2^h:
//
//	n:      1   2   3   4   5   6   7   8
//	holds: (0,1] (0,2] (2,3] (0,4] (4,5] (4,6] (6,7] (0,8]
//	skip:   0   0   2   0   4   4   6   0
//
// Reading the state at n follows at most popcount(n) skip pointers, and a
// single change is stored about log2(n) times over its lifetime, so a
// membership change in a room of 10,000 members costs a few dozen bytes,
// not a copy of the room. Deriving snapshot n reads the h snapshots it
// merges, which are the newest ones and almost always cached.

// snapEntry is one state entry: an interned key and an event (0: removed).
type snapEntry struct {
	Key   int64
	Event int64
}

// snapshot is one decoded delta.
type snapshot struct {
	NID, Seq, Skip int64
	Entries        []snapEntry // sorted by Key
}

func (s *snapshot) get(key int64) (int64, bool) {
	i, ok := slices.BinarySearchFunc(s.Entries, key, func(e snapEntry, k int64) int {
		switch {
		case e.Key < k:
			return -1
		case e.Key > k:
			return 1
		}
		return 0
	})
	if !ok {
		return 0, false
	}
	return s.Entries[i].Event, true
}

// encodeEntries writes entries (sorted by key) as varints: the key as a
// delta from the previous key, then the event nid.
func encodeEntries(entries []snapEntry) []byte {
	buf := make([]byte, 0, len(entries)*5)
	var prev int64
	for _, e := range entries {
		buf = binary.AppendUvarint(buf, uint64(e.Key-prev))
		buf = binary.AppendUvarint(buf, uint64(e.Event))
		prev = e.Key
	}
	return buf
}

var errCorruptSnapshot = errors.New("rooms: corrupt state snapshot")

func decodeEntries(b []byte) ([]snapEntry, error) {
	out := make([]snapEntry, 0, len(b)/4)
	var prev int64
	for len(b) > 0 {
		dk, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errCorruptSnapshot
		}
		b = b[n:]
		ev, n := binary.Uvarint(b)
		if n <= 0 {
			return nil, errCorruptSnapshot
		}
		b = b[n:]
		prev += int64(dk)
		out = append(out, snapEntry{Key: prev, Event: int64(ev)})
	}
	return out, nil
}

// snapshots reads and derives snapshots, caching decoded deltas.
type snapshots struct {
	store *storage.Rooms
	cache *lru.Cache[int64, *snapshot]
}

func newSnapshots(store *storage.Rooms, size int) *snapshots {
	return &snapshots{store: store, cache: lru.New[int64, *snapshot](size)}
}

var emptySnapshot = &snapshot{}

// overlay holds snapshots written in a transaction that has not committed.
type overlay map[int64]*snapshot

func (s *snapshots) load(ctx context.Context, q storage.Querier, ov overlay, nid int64) (*snapshot, error) {
	if nid == 0 {
		return emptySnapshot, nil
	}
	if sn, ok := ov[nid]; ok {
		return sn, nil
	}
	if sn, ok := s.cache.Get(nid); ok {
		return sn, nil
	}
	row, err := s.store.SnapshotGet(ctx, q, nid)
	if err != nil {
		return nil, fmt.Errorf("load snapshot %d: %w", nid, err)
	}
	entries, err := decodeEntries(row.Entries)
	if err != nil {
		return nil, fmt.Errorf("snapshot %d: %w", nid, err)
	}
	sn := &snapshot{NID: nid, Seq: row.Seq, Skip: row.Skip, Entries: entries}
	s.cache.Put(nid, sn)
	return sn, nil
}

// StateMap is a full state: interned key → event nid.
type StateMap map[int64]int64

// full returns the whole state at snapshot nid.
func (s *snapshots) full(ctx context.Context, q storage.Querier, ov overlay, nid int64) (StateMap, error) {
	out := StateMap{}
	seen := map[int64]bool{}
	for nid != 0 {
		sn, err := s.load(ctx, q, ov, nid)
		if err != nil {
			return nil, err
		}
		for _, e := range sn.Entries {
			if seen[e.Key] {
				continue
			}
			seen[e.Key] = true
			if e.Event != 0 {
				out[e.Key] = e.Event
			}
		}
		nid = sn.Skip
	}
	return out, nil
}

// lookup returns the event for key at snapshot nid (0 when unset).
func (s *snapshots) lookup(ctx context.Context, q storage.Querier, ov overlay, nid, key int64) (int64, error) {
	for nid != 0 {
		sn, err := s.load(ctx, q, ov, nid)
		if err != nil {
			return 0, err
		}
		if ev, ok := sn.get(key); ok {
			return ev, nil
		}
		nid = sn.Skip
	}
	return 0, nil
}

// snapWriter is what deriving snapshots inside a batch needs.
type snapWriter struct {
	q     storage.Querier
	ov    overlay
	alloc func() (int64, error)
	batch *storage.Batch
	tx    *storage.Tx
}

// derive queues the snapshot parent+changes and returns its nid; with no
// changes it returns parent itself.
func (s *snapshots) derive(ctx context.Context, w *snapWriter, parent int64, changes map[int64]int64) (int64, error) {
	if len(changes) == 0 {
		return parent, nil
	}
	p, err := s.load(ctx, w.q, w.ov, parent)
	if err != nil {
		return 0, err
	}
	seq := p.Seq + 1
	h := bits.TrailingZeros64(uint64(seq))
	merged := make(map[int64]int64, len(changes))
	for k, v := range changes {
		merged[k] = v
	}
	cur := p
	for range h {
		for _, e := range cur.Entries {
			if _, ok := merged[e.Key]; !ok {
				merged[e.Key] = e.Event
			}
		}
		if cur, err = s.load(ctx, w.q, w.ov, cur.Skip); err != nil {
			return 0, err
		}
	}
	skip := cur.NID
	entries := make([]snapEntry, 0, len(merged))
	for k, v := range merged {
		// Removals matter only if something older could show through.
		if v == 0 && skip == 0 {
			continue
		}
		entries = append(entries, snapEntry{Key: k, Event: v})
	}
	slices.SortFunc(entries, func(a, b snapEntry) int {
		switch {
		case a.Key < b.Key:
			return -1
		case a.Key > b.Key:
			return 1
		}
		return 0
	})
	nid, err := w.alloc()
	if err != nil {
		return 0, err
	}
	s.store.AddSnapshot(w.batch, nid, seq, skip, encodeEntries(entries))
	sn := &snapshot{NID: nid, Seq: seq, Skip: skip, Entries: entries}
	w.ov[nid] = sn
	w.tx.AfterCommit(func() { s.cache.Put(nid, sn) })
	return nid, nil
}

// deriveFull queues a snapshot equal to state, as a delta from parent.
func (s *snapshots) deriveFull(ctx context.Context, w *snapWriter, parent int64, state StateMap) (int64, error) {
	base, err := s.full(ctx, w.q, w.ov, parent)
	if err != nil {
		return 0, err
	}
	changes := map[int64]int64{}
	for k, v := range state {
		if base[k] != v {
			changes[k] = v
		}
	}
	for k := range base {
		if _, ok := state[k]; !ok {
			changes[k] = 0
		}
	}
	return s.derive(ctx, w, parent, changes)
}
