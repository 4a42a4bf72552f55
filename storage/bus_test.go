package storage_test

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/parley-chat/parley/storage"
	"github.com/parley-chat/parley/storage/storagetest"
)

func TestBusDeliversToOtherInstancesOnly(t *testing.T) {
	url := storagetest.NewSchemaURL(t)
	ctx := context.Background()
	open := func() *storage.DB {
		db, err := storage.Open(ctx, url, storage.Options{MaxConns: 4})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = db.Close() })
		return db
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	dbB := open()
	a, b := open().NewBus(log), dbB.NewBus(log)
	gotA, gotB := make(chan string, 4), make(chan string, 4)
	a.Subscribe("parley_test", func(p string) { gotA <- p })
	// A message from another instance moves the commit epoch before its
	// handlers run: they wake the builds that rely on it.
	epochs := make(chan uint64, 4)
	b.Subscribe("parley_test", func(p string) {
		epochs <- dbB.CommitEpoch()
		gotB <- p
	})
	for _, bus := range []*storage.Bus{a, b} {
		if err := bus.Start(ctx); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(bus.Stop)
	}
	// LISTEN is asynchronous: publish until the other side hears.
	deadline := time.After(10 * time.Second)
	for heard := false; !heard; {
		if err := a.Publish(ctx, "parley_test", "hello:with:colons"); err != nil {
			t.Fatal(err)
		}
		select {
		case p := <-gotB:
			if p != "hello:with:colons" {
				t.Fatalf("payload %q", p)
			}
			heard = true
			if e := <-epochs; e == 0 {
				t.Fatal("the handler ran before the commit epoch moved")
			}
		case <-time.After(100 * time.Millisecond):
		case <-deadline:
			t.Fatal("instance b never heard instance a")
		}
	}
	select {
	case p := <-gotA:
		t.Fatalf("instance a heard its own message %q", p)
	case <-time.After(200 * time.Millisecond):
	}
	// A message published in a rolled-back transaction is never sent.
	db := open()
	bus := db.NewBus(log)
	_ = db.Write(ctx, func(tx *storage.Tx) error {
		if err := bus.PublishTx(ctx, tx, "parley_test", "rolled back"); err != nil {
			t.Fatal(err)
		}
		return context.Canceled
	})
	select {
	case p := <-gotB:
		t.Fatalf("rolled-back message delivered: %q", p)
	case <-time.After(300 * time.Millisecond):
	}
}
