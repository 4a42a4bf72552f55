package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEveryKeyHasAnEnvVariableNamedAfterIt(t *testing.T) {
	for _, kv := range Keys() {
		key, env := kv[0], kv[1]
		want := "PARLEY_" + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
		if env != want {
			t.Errorf("key %s: env tag %q, want %q", key, env, want)
		}
	}
}

func TestGeneratedFileRoundTrips(t *testing.T) {
	c := Default("/srv/parley")
	c.fillDerived()
	c.TrustedProxies = []string{"10.0.0.0/8"}
	c.RegistrationSharedSecret = "s3cret"
	b, err := Generate(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range Keys() {
		leaf := kv[0][strings.LastIndex(kv[0], ".")+1:]
		if !strings.Contains(string(b), "\n"+leaf+":") && !strings.Contains(string(b), "  "+leaf+":") {
			t.Errorf("generated file lacks key %s", kv[0])
		}
	}
	path := filepath.Join(t.TempDir(), "parley.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := Load(path, nil)
	if err != nil {
		t.Fatalf("generated file does not load: %v\n%s", err, b)
	}
	if got.DataDir != "/srv/parley" || got.RegistrationSharedSecret != "s3cret" || got.TrustedProxies[0] != "10.0.0.0/8" ||
		got.AccessTokenLifetime.Std() != 5*time.Minute || !bool(got.RateLimits) {
		t.Fatalf("round trip lost values: %+v", got)
	}
}

func TestLoad(t *testing.T) {
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "c.yaml")
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name    string
		file    string
		env     []string
		wantErr string
		check   func(*Config) bool
	}{
		{name: "defaults", check: func(c *Config) bool {
			return c.Listen == "127.0.0.1:8008" && c.Registration == "closed" && strings.HasPrefix(c.Database, "sqlite://")
		}},
		{name: "env overrides file", file: "server_name: a.example\nregistration: open\n",
			env: []string{"PARLEY_SERVER_NAME=b.example", "PARLEY_RATE_LIMITS=off"},
			check: func(c *Config) bool {
				return c.ServerName == "b.example" && c.Registration == "open" && !bool(c.RateLimits)
			}},
		{name: "data dir moves derived paths", env: []string{"PARLEY_DATA_DIR=/tmp/x"}, check: func(c *Config) bool {
			return c.Database == "sqlite:///tmp/x/parley.db" && c.SigningKeyPath == "/tmp/x/signing.key"
		}},
		{name: "nested env", env: []string{"PARLEY_PASSWORD_HASHING_MEMORY_KIB=64"}, check: func(c *Config) bool {
			return c.PasswordHashing.MemoryKiB == 64
		}},
		{name: "unknown key", file: "server_nam: x\n", wantErr: "server_nam"},
		{name: "unknown env", env: []string{"PARLEY_SERVERNAME=x"}, wantErr: "PARLEY_SERVERNAME"},
		{name: "bad registration", env: []string{"PARLEY_REGISTRATION=maybe"}, wantErr: "registration"},
		{name: "bad switch", env: []string{"PARLEY_RATE_LIMITS=sometimes"}, wantErr: "PARLEY_RATE_LIMITS"},
		{name: "bad database", env: []string{"PARLEY_DATABASE=mysql://x"}, wantErr: "database"},
		{name: "bad listen", env: []string{"PARLEY_LISTEN=nonsense"}, wantErr: "listen"},
		{name: "bad server name", env: []string{"PARLEY_SERVER_NAME=bad name"}, wantErr: "server_name"},
		{name: "bad int", env: []string{"PARLEY_MAX_REQUEST_BYTES=lots"}, wantErr: "PARLEY_MAX_REQUEST_BYTES"},
		{name: "several errors at once", env: []string{"PARLEY_REGISTRATION=x", "PARLEY_LOG_LEVEL=loud"}, wantErr: "log_level"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := ""
			if tc.file != "" {
				path = write(tc.file)
			}
			c, err := Load(path, tc.env)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want mention of %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !tc.check(c) {
				t.Fatalf("unexpected config %+v", c)
			}
		})
	}
}

func TestRedactedHidesSecrets(t *testing.T) {
	c := Default("d")
	c.RegistrationSharedSecret = "hunter2"
	c.Database = "postgres://user:pw@db/parley"
	r := c.Redacted()
	if r.RegistrationSharedSecret == "hunter2" || strings.Contains(r.Database, "pw") {
		t.Fatalf("secrets leaked: %+v", r)
	}
	if c.RegistrationSharedSecret != "hunter2" {
		t.Fatal("Redacted changed the original")
	}
}
