package sytest

import (
	"fmt"
	"net/http"
	"net/url"
	"sync"
	"testing"
	"time"
)

// TestCrashLosesNothingAcknowledged sends in a loop, kills the server with
// SIGKILL, restarts it, and checks that every event that got a 200 is
// there and that retried transaction IDs make no duplicate.
func TestCrashLosesNothingAcknowledged(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{"PARLEY_SQLITE_SYNCHRONOUS": "FULL"}})
		alice := s.Register(t, "crash")
		room := alice.createRoom(t, nil)
		var (
			mu    sync.Mutex
			acked = map[string]string{} // txn → event ID
			tried []string
			wg    sync.WaitGroup
		)
		client := &http.Client{Timeout: 5 * time.Second}
		stop := make(chan struct{})
		for w := range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ; i++ {
					select {
					case <-stop:
						return
					default:
					}
					txn := fmt.Sprintf("w%d-%d", w, i)
					mu.Lock()
					tried = append(tried, txn)
					mu.Unlock()
					req, _ := http.NewRequest("PUT", s.URL+roomPath(room)+"/send/m.room.message/"+txn,
						stringsReader(fmt.Sprintf(`{"msgtype":"m.text","body":%q}`, txn)))
					req.Header.Set("Authorization", "Bearer "+alice.Token)
					resp, err := client.Do(req)
					if err != nil {
						return
					}
					var body struct {
						EventID string `json:"event_id"`
					}
					ok := resp.StatusCode == 200 && decodeJSON(resp, &body) == nil
					resp.Body.Close()
					if ok {
						mu.Lock()
						acked[txn] = body.EventID
						mu.Unlock()
					}
				}
			}()
		}
		time.Sleep(700 * time.Millisecond)
		s.Kill(t)
		close(stop)
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 10 {
			t.Fatalf("only %d sends acknowledged before the crash", len(acked))
		}
		s.Start(t)
		for txn, id := range acked {
			r := alice.Do(t, "GET", roomPath(room)+"/event/"+url.PathEscape(id), nil)
			if r.Status != 200 {
				t.Fatalf("acknowledged event %s (txn %s) lost after the crash: %s", id, txn, r)
			}
		}
		// Retrying every attempted transaction creates no duplicate.
		for _, txn := range tried {
			r := Must(t, alice.Do(t, "PUT", roomPath(room)+"/send/m.room.message/"+txn, map[string]any{"msgtype": "m.text", "body": txn}), 200)
			if want, ok := acked[txn]; ok && r.Str("event_id") != want {
				t.Fatalf("retry of %s made %s, want %s", txn, r.Str("event_id"), want)
			}
		}
		seen := map[string]int{}
		from := ""
		for {
			path := roomPath(room) + "/messages?dir=b&limit=500"
			if from != "" {
				path += "&from=" + url.QueryEscape(from)
			}
			r := Must(t, alice.Do(t, "GET", path, nil), 200)
			for _, b := range chunkBodies(r) {
				seen[b]++
			}
			if from = r.Str("end"); from == "" {
				break
			}
		}
		for _, txn := range tried {
			if seen[txn] != 1 {
				t.Fatalf("txn %s appears %d times after retries", txn, seen[txn])
			}
		}
		t.Logf("%s: %d acknowledged before SIGKILL, %d attempted", dialect, len(acked), len(tried))
	})
}
