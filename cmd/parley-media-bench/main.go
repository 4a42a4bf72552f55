// Command parley-media-bench measures the media repository end to end: it
// starts a real parley server on loopback (SQLite, file:// media store in
// a temporary folder), uploads and downloads one large file, and reports
// the time taken next to `cp` of the same file on the same disk (a
// download is timed twice: written to a file, as cp does, and read and
// discarded, which is the server's part alone), together
// with the server's resident memory before and after (VmRSS and its peak,
// VmHWM, from /proc; Linux only).
//
//	go run ./cmd/parley-media-bench -size 100 -runs 3
//
// It is a measuring tool, not a test: nothing in it asserts a time.
package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "parley-media-bench:", err)
		os.Exit(1)
	}
}

func run() error {
	sizeMiB := flag.Int("size", 100, "file size in MiB")
	runs := flag.Int("runs", 3, "uploads and downloads to time")
	binary := flag.String("parley", "", "parley binary (default: build ./cmd/parley)")
	dir := flag.String("dir", os.TempDir(), "folder for the data, the file and the cp copies (one disk)")
	flag.Parse()

	work, err := os.MkdirTemp(*dir, "parley-media-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if *binary == "" {
		*binary = filepath.Join(work, "parley")
		build := exec.Command("go", "build", "-o", *binary, "./cmd/parley")
		build.Stdout, build.Stderr = os.Stderr, os.Stderr
		if err := build.Run(); err != nil {
			return fmt.Errorf("build parley: %w", err)
		}
	}
	size := int64(*sizeMiB) << 20
	src := filepath.Join(work, "source.bin")
	if err := writeRandom(src, size); err != nil {
		return err
	}

	srv, err := startServer(*binary, filepath.Join(work, "data"), size)
	if err != nil {
		return err
	}
	defer srv.stop()
	token, err := srv.register()
	if err != nil {
		return err
	}
	// Warm up the paths (and the allocator) with a small file first.
	small := filepath.Join(work, "small.bin")
	if err := writeRandom(small, 1<<20); err != nil {
		return err
	}
	if id, _, err := srv.upload(token, small); err != nil {
		return err
	} else if _, err := srv.download(token, id, filepath.Join(work, "small.out")); err != nil {
		return err
	}
	base, err := memory(srv.cmd.Process.Pid)
	if err != nil {
		return err
	}
	fmt.Printf("file: %d MiB; server after start-up and warm-up: VmRSS %.1f MiB, VmHWM %.1f MiB\n\n", *sizeMiB, mib(base.rss), mib(base.hwm))

	var cpTimes, cpSyncTimes, upTimes, downTimes, netTimes []time.Duration
	peak := base
	for i := 0; i < *runs; i++ {
		d, err := timeCP(src, filepath.Join(work, "cp.bin"), false)
		if err != nil {
			return err
		}
		cpTimes = append(cpTimes, d)
		d, err = timeCP(src, filepath.Join(work, "cpsync.bin"), true)
		if err != nil {
			return err
		}
		cpSyncTimes = append(cpSyncTimes, d)

		// Each run uploads different bytes, so that deduplication does not
		// skip the work.
		if err := touchFirstBytes(src); err != nil {
			return err
		}
		srcSum, err := fileSHA(src)
		if err != nil {
			return err
		}
		id, d, err := srv.upload(token, src)
		if err != nil {
			return err
		}
		upTimes = append(upTimes, d)
		m, err := memory(srv.cmd.Process.Pid)
		if err != nil {
			return err
		}
		peak = peak.max(m)
		out := filepath.Join(work, "download.bin")
		d, err = srv.download(token, id, out)
		if err != nil {
			return err
		}
		downTimes = append(downTimes, d)
		// The same download read and discarded: the server's part
		// without the client's file writes.
		d, err = srv.download(token, id, "")
		if err != nil {
			return err
		}
		netTimes = append(netTimes, d)
		if sum, err := fileSHA(out); err != nil || sum != srcSum {
			return fmt.Errorf("downloaded file differs (%v)", err)
		}
		_ = os.Remove(out)
		// Like cp's copies, the upload is removed after its run. Keeping
		// every 100 MiB would time the memory, not the server: on a
		// virtual machine, page cache that grows into guest memory never
		// touched before is several times slower to write (cp to kept
		// files slows down the same way).
		if err := srv.remove(token, id); err != nil {
			return err
		}
		m, err = memory(srv.cmd.Process.Pid)
		if err != nil {
			return err
		}
		peak = peak.max(m)
		fmt.Printf("run %d: cp %v, cp+fsync %v, upload %v, download %v (discarded: %v); VmRSS %.1f MiB, VmHWM %.1f MiB\n",
			i+1, round(cpTimes[i]), round(cpSyncTimes[i]), round(upTimes[i]), round(downTimes[i]), round(netTimes[i]), mib(m.rss), mib(m.hwm))
	}
	mbps := func(d time.Duration) float64 { return float64(size) / (1 << 20) / d.Seconds() }
	fmt.Printf("\nmedian of %d: cp %v (%.0f MiB/s), cp+fsync %v, upload %v (%.0f MiB/s, %.2f× cp+fsync, %.2f× cp), download %v (%.0f MiB/s, %.2f× cp), download discarded %v (%.2f× cp)\n",
		*runs, round(median(cpTimes)), mbps(median(cpTimes)), round(median(cpSyncTimes)),
		round(median(upTimes)), mbps(median(upTimes)), ratio(median(upTimes), median(cpSyncTimes)), ratio(median(upTimes), median(cpTimes)),
		round(median(downTimes)), mbps(median(downTimes)), ratio(median(downTimes), median(cpTimes)),
		round(median(netTimes)), ratio(median(netTimes), median(cpTimes)))
	fmt.Printf("server memory growth over the runs: VmRSS %+.1f MiB, peak (VmHWM) %+.1f MiB\n",
		mib(peak.rss-base.rss), mib(peak.hwm-base.hwm))
	return nil
}

type server struct {
	cmd  *exec.Cmd
	url  string
	done chan struct{}
}

func startServer(binary, dataDir string, size int64) (*server, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	cmd := exec.Command(binary, "serve")
	cmd.Env = []string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"PARLEY_DATA_DIR=" + dataDir, "PARLEY_LISTEN=" + addr, "PARLEY_REGISTRATION_SHARED_SECRET=" + benchSecret,
		"PARLEY_RATE_LIMITS=off", "PARLEY_LOG_LEVEL=warn",
		"PARLEY_PASSWORD_HASHING_MEMORY_KIB=64", "PARLEY_PASSWORD_HASHING_ITERATIONS=1",
		"PARLEY_MEDIA_MAX_UPLOAD_BYTES=" + strconv.FormatInt(size+(1<<20), 10),
		"PARLEY_MEDIA_USER_QUOTA_BYTES=0",
	}
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	s := &server{cmd: cmd, url: "http://" + addr, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(s.done) }()
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		select {
		case <-s.done:
			return nil, errors.New("parley exited during start")
		default:
		}
		if resp, err := http.Get(s.url + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s, nil
			}
		}
	}
	s.stop()
	return nil, errors.New("parley did not become ready")
}

func (s *server) stop() {
	_ = s.cmd.Process.Signal(os.Interrupt)
	select {
	case <-s.done:
	case <-time.After(30 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.done
	}
}

// benchSecret is the registration shared secret of the server under test.
const benchSecret = "media-bench"

// register creates an administrator (who may delete media) through the
// shared-secret registration API and returns its access token.
func (s *server) register() (string, error) {
	resp, err := http.Get(s.url + "/_synapse/admin/v1/register")
	if err != nil {
		return "", err
	}
	var n struct {
		Nonce string `json:"nonce"`
	}
	err = json.NewDecoder(resp.Body).Decode(&n)
	resp.Body.Close()
	if err != nil {
		return "", fmt.Errorf("register nonce: %w", err)
	}
	const name, pw = "bench", "a bench password"
	m := hmac.New(sha1.New, []byte(benchSecret))
	m.Write([]byte(n.Nonce + "\x00" + name + "\x00" + pw + "\x00admin"))
	body, _ := json.Marshal(map[string]any{"nonce": n.Nonce, "username": name, "password": pw, "admin": true, "mac": hex.EncodeToString(m.Sum(nil))})
	resp, err = http.Post(s.url+"/_synapse/admin/v1/register", "application/json", bytes.NewReader(body))
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var out struct {
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || out.AccessToken == "" {
		return "", fmt.Errorf("register: %d %v", resp.StatusCode, err)
	}
	return out.AccessToken, nil
}

// remove deletes media through the admin API.
func (s *server) remove(token, id string) error {
	req, err := http.NewRequest(http.MethodDelete, s.url+"/_synapse/admin/v1/media/localhost/"+id, nil)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("delete media: %d", resp.StatusCode)
	}
	return nil
}

func (s *server) upload(token, path string) (string, time.Duration, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", 0, err
	}
	req, err := http.NewRequestWithContext(context.Background(), http.MethodPost, s.url+"/_matrix/media/v3/upload", f)
	if err != nil {
		return "", 0, err
	}
	req.ContentLength = st.Size()
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/octet-stream")
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", 0, err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	d := time.Since(start)
	var out struct {
		ContentURI string `json:"content_uri"`
	}
	if err := json.Unmarshal(b, &out); err != nil || resp.StatusCode != http.StatusOK {
		return "", 0, fmt.Errorf("upload: %d %s", resp.StatusCode, b)
	}
	return out.ContentURI[strings.LastIndexByte(out.ContentURI, '/')+1:], d, nil
}

// download fetches the media into the file at path, or discards it
// when path is empty.
func (s *server) download(token, id, path string) (time.Duration, error) {
	req, err := http.NewRequest(http.MethodGet, s.url+"/_matrix/client/v1/media/download/localhost/"+id, nil)
	if err != nil {
		return 0, err
	}
	req.Header.Set("Authorization", "Bearer "+token)
	var out io.Writer = io.Discard
	if path != "" {
		f, err := os.Create(path)
		if err != nil {
			return 0, err
		}
		defer f.Close()
		out = f
	}
	start := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("download: %d", resp.StatusCode)
	}
	if _, err := io.Copy(out, resp.Body); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// timeCP copies with cp(1) (and, with sync, then fsyncs the copy, which
// the server does for every upload) and returns how long it took.
func timeCP(src, dst string, sync bool) (time.Duration, error) {
	_ = os.Remove(dst)
	start := time.Now()
	if err := exec.Command("cp", src, dst).Run(); err != nil {
		return 0, fmt.Errorf("cp: %w", err)
	}
	if sync {
		f, err := os.Open(dst)
		if err != nil {
			return 0, err
		}
		err = f.Sync()
		f.Close()
		if err != nil {
			return 0, err
		}
	}
	d := time.Since(start)
	return d, os.Remove(dst)
}

func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	w := bufio.NewWriterSize(f, 1<<20)
	if _, err := io.CopyN(w, rand.Reader, size); err != nil {
		return err
	}
	if err := w.Flush(); err != nil {
		return err
	}
	return f.Sync()
}

func touchFirstBytes(path string) error {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	b := make([]byte, 32)
	_, _ = rand.Read(b)
	_, err = f.WriteAt(b, 0)
	return err
}

func fileSHA(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", h.Sum(nil)), nil
}

type mem struct{ rss, hwm int64 }

func (m mem) max(o mem) mem { return mem{rss: max(m.rss, o.rss), hwm: max(m.hwm, o.hwm)} }

// memory reads VmRSS and VmHWM (bytes) from /proc.
func memory(pid int) (mem, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return mem{}, fmt.Errorf("read process status (Linux only): %w", err)
	}
	var m mem
	for _, line := range bytes.Split(b, []byte("\n")) {
		f := strings.Fields(string(line))
		if len(f) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmRSS:":
			m.rss = kb << 10
		case "VmHWM:":
			m.hwm = kb << 10
		}
	}
	return m, nil
}

func mib(n int64) float64 { return float64(n) / (1 << 20) }

func median(d []time.Duration) time.Duration {
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return s[len(s)/2]
}

func ratio(a, b time.Duration) float64 { return a.Seconds() / b.Seconds() }

func round(d time.Duration) time.Duration { return d.Round(time.Millisecond) }
