package sytest

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestRestartKeepsAccounts is the foundation's acceptance test: register,
// log in, whoami, restart, log in again — and shared-secret registration
// configured purely through environment variables.
func TestRestartKeepsAccounts(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect, Env: map[string]string{
			"PARLEY_SERVER_NAME":                "restart.test",
			"PARLEY_REGISTRATION":               "closed",
			"PARLEY_REGISTRATION_SHARED_SECRET": "env-secret",
		}})
		nonce := Must(t, s.Do(t, "GET", "/_synapse/admin/v1/register", "", nil), 200).Str("nonce")
		r := Must(t, s.Do(t, "POST", "/_synapse/admin/v1/register", "", map[string]any{
			"nonce": nonce, "username": "carol", "password": "carol's password", "admin": false,
			"mac": SharedSecretMAC("env-secret", nonce, "carol", "carol's password", false),
		}), 200)
		if r.Str("user_id") != "@carol:restart.test" {
			t.Fatalf("registration: %s", r)
		}
		login := func() *Response {
			return Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
				"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": "carol"}, "password": "carol's password",
			}), 200)
		}
		tok := login().Str("access_token")
		who := Must(t, s.Do(t, "GET", v3+"/account/whoami", tok, nil), 200)
		if who.Str("user_id") != "@carol:restart.test" {
			t.Fatalf("whoami: %s", who)
		}
		Must(t, s.Do(t, "PUT", v3+"/user/@carol:restart.test/account_data/org.example.k", tok, map[string]any{"v": 1}), 200)
		s.Restart(t)
		// Tokens and data survive; so does the signing key.
		Must(t, s.Do(t, "GET", v3+"/account/whoami", tok, nil), 200)
		login()
		if r := Must(t, s.Do(t, "GET", v3+"/user/@carol:restart.test/account_data/org.example.k", tok, nil), 200); r.JSON["v"] != float64(1) {
			t.Fatalf("account data after restart: %s", r)
		}
		// A graceful stop logged its shutdown and exited 0 (checked by Terminate).
		if !strings.Contains(s.Log(), "Parley is running") {
			t.Fatal("start-up line missing from the log")
		}
	})
}

// TestCommands drives the binary's admin subcommands on a server's data.
func TestCommands(t *testing.T) {
	ForEachDialect(t, func(t *testing.T, dialect string) {
		t.Parallel()
		s := StartServer(t, Options{Dialect: dialect})
		env := append(os.Environ(), "PARLEY_DATA_DIR="+s.DataDir, "PARLEY_DATABASE="+s.Database, "PARLEY_SERVER_NAME=localhost")
		run := func(args ...string) string {
			cmd := exec.Command(binary, args...)
			cmd.Env = env
			cmd.Stdin = strings.NewReader("dave's password\n")
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("parley %v: %v\n%s", args, err, out)
			}
			return string(out)
		}
		if out := run("version"); !strings.HasPrefix(out, "parley ") {
			t.Fatalf("version: %q", out)
		}
		name := UniqueName("dave")
		if out := run("create-user", "--admin", name); !strings.Contains(out, "@"+name+":localhost (admin)") {
			t.Fatalf("create-user: %q", out)
		}
		l := Must(t, s.Do(t, "POST", v3+"/login", "", map[string]any{
			"type": "m.login.password", "identifier": map[string]any{"type": "m.id.user", "user": name}, "password": "dave's password",
		}), 200)
		// The created admin can use admin endpoints.
		Must(t, s.Do(t, "GET", "/_synapse/admin/v1/registration_tokens", l.Str("access_token"), nil), 200)
		if out := run("migrate", "--status"); !strings.Contains(out, "applied") || strings.Contains(out, "pending") {
			t.Fatalf("migrate --status: %q", out)
		}
		if out := run("migrate"); !strings.Contains(out, "applied 0 migration") {
			t.Fatalf("migrate: %q", out)
		}
		if out := run("generate-config", "--config", "-"); !strings.Contains(out, "server_name:") {
			t.Fatalf("generate-config: %q", out)
		}
		cmd := exec.Command(binary, "serve")
		cmd.Env = append(env, "PARLEY_NO_SUCH_KEY=1")
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "PARLEY_NO_SUCH_KEY") {
			t.Fatalf("unknown variable accepted: %v %s", err, out)
		}
	})
}
