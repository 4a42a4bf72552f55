// Command parley is the Parley homeserver: one binary that serves the
// Matrix client-server and server-server APIs.
//
//	parley [serve]                 run the server (the default)
//	parley generate-config         write a commented configuration file
//	parley create-user [--admin]   create an account
//	parley migrate [--status]      apply (or list) database migrations
//	parley version                 print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/parley-chat/parley/homeserver"
	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/config"
	"github.com/parley-chat/parley/storage"
)

// version is set at build time with -ldflags "-X main.version=…".
var version = ""

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "parley:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	cmd := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		cmd, args = args[0], args[1:]
	}
	switch cmd {
	case "serve":
		return serve(args, stderr)
	case "generate-config":
		return generateConfig(args, stdout, stderr)
	case "create-user":
		return createUser(args, stdin, stdout, stderr)
	case "migrate":
		return migrate(args, stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "parley", versionString())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	return fmt.Errorf("unknown command %q\n%s", cmd, usage)
}

const usage = `usage: parley [command] [flags]

commands:
  serve            run the homeserver (default)
  generate-config  write a commented configuration file
  create-user      create an account: create-user [--admin] [--password P] NAME
  migrate          apply database migrations (--status lists them)
  version          print the version

Every command takes --config PATH (default $PARLEY_CONFIG, else
$PARLEY_DATA_DIR/parley.yaml, else ./data/parley.yaml).
`

func versionString() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

// configPath picks the configuration file and whether it was named
// explicitly (an explicit file must exist).
func configPath(flagValue string) (string, bool) {
	if flagValue != "" {
		return flagValue, true
	}
	if p := os.Getenv("PARLEY_CONFIG"); p != "" {
		return p, true
	}
	dir := os.Getenv("PARLEY_DATA_DIR")
	if dir == "" {
		dir = "./data"
	}
	return filepath.Join(dir, "parley.yaml"), false
}

// loadConfig reads the configuration; when no file exists at the default
// place and create is set, it writes one first.
func loadConfig(flagValue string, create bool, stderr io.Writer) (*config.Config, string, error) {
	path, explicit := configPath(flagValue)
	_, statErr := os.Stat(path)
	switch {
	case statErr == nil:
	case errors.Is(statErr, os.ErrNotExist) && explicit:
		return nil, "", fmt.Errorf("config file %s does not exist (run parley generate-config --config %s)", path, path)
	case errors.Is(statErr, os.ErrNotExist) && create:
		c, err := config.Load("", os.Environ())
		if err != nil {
			return nil, "", err
		}
		if err := writeConfig(path, c); err != nil {
			return nil, "", err
		}
		fmt.Fprintf(stderr, "parley: wrote a new configuration to %s\n", path)
	case errors.Is(statErr, os.ErrNotExist):
		path = ""
	default:
		return nil, "", fmt.Errorf("config: %w", statErr)
	}
	c, err := config.Load(path, os.Environ())
	return c, path, err
}

func writeConfig(path string, c *config.Config) error {
	b, err := config.Generate(c)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("config: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("config: %w", err)
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("config: %w", err)
	}
	return f.Close()
}

func newLogger(c *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(c.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	if c.LogFormat == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

func serve(args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	cfgFlag := fs.String("config", "", "configuration file")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, path, err := loadConfig(*cfgFlag, true, stderr)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.DataDir, 0o700); err != nil {
		return fmt.Errorf("data dir: %w", err)
	}
	log := newLogger(c, stderr)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	srv, err := homeserver.New(ctx, c, log)
	if err != nil {
		return err
	}
	if err := srv.Start(ctx); err != nil {
		_ = srv.Stop(context.Background())
		return err
	}
	log.Info("Parley is running",
		"version", versionString(),
		"server_name", c.ServerName,
		"listen", "http://"+srv.Addr(),
		"config", path,
		"data_dir", c.DataDir,
		"database", c.Redacted().Database,
		"signing_key", c.SigningKeyPath,
		"media", c.MediaStore,
	)
	<-ctx.Done()
	stop()
	log.Info("shutting down")
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	return srv.Stop(shutdownCtx)
}

func generateConfig(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("generate-config", flag.ContinueOnError)
	cfgFlag := fs.String("config", "", "where to write the file; - for standard output")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, err := config.Load("", os.Environ())
	if err != nil {
		return err
	}
	if *cfgFlag == "-" {
		b, err := config.Generate(c)
		if err != nil {
			return err
		}
		_, err = stdout.Write(b)
		return err
	}
	path, _ := configPath(*cfgFlag)
	if err := writeConfig(path, c); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "parley: wrote %s\n", path)
	return nil
}

func createUser(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("create-user", flag.ContinueOnError)
	cfgFlag := fs.String("config", "", "configuration file")
	admin := fs.Bool("admin", false, "make the user a server admin")
	password := fs.String("password", "", "password (read from standard input when empty)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		return errors.New("usage: parley create-user [--admin] [--password P] NAME")
	}
	c, _, err := loadConfig(*cfgFlag, false, stderr)
	if err != nil {
		return err
	}
	pw := *password
	if pw == "" {
		fmt.Fprint(stderr, "Password: ")
		b, err := io.ReadAll(io.LimitReader(stdin, 1024))
		if err != nil {
			return err
		}
		pw = strings.TrimRight(string(b), "\r\n")
	}
	ctx := context.Background()
	log := newLogger(c, stderr)
	db, err := storage.Open(ctx, c.Database, storage.Options{MaxConns: 2, SQLiteSynchronous: c.SQLiteSynchronous})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Migrate(ctx); err != nil {
		return err
	}
	acc, err := homeserver.NewAccountsEngine(c, db, log)
	if err != nil {
		return err
	}
	localpart := fs.Arg(0)
	if strings.HasPrefix(localpart, "@") {
		id, err := acc.ParseLocalUser(localpart)
		if err != nil {
			return err
		}
		localpart = strings.TrimPrefix(strings.SplitN(id, ":", 2)[0], "@")
	}
	sess, err := acc.Register(ctx, accounts.RegisterParams{Localpart: localpart, Password: pw, Admin: *admin, InhibitLogin: true})
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "created %s%s\n", sess.UserID, map[bool]string{true: " (admin)"}[*admin])
	return nil
}

func migrate(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("migrate", flag.ContinueOnError)
	cfgFlag := fs.String("config", "", "configuration file")
	status := fs.Bool("status", false, "list migrations and whether they are applied")
	if err := fs.Parse(args); err != nil {
		return err
	}
	c, _, err := loadConfig(*cfgFlag, false, stderr)
	if err != nil {
		return err
	}
	ctx := context.Background()
	db, err := storage.Open(ctx, c.Database, storage.Options{MaxConns: 2, SQLiteSynchronous: c.SQLiteSynchronous})
	if err != nil {
		return err
	}
	defer db.Close()
	if *status {
		st, err := db.MigrationStatuses(ctx)
		if err != nil {
			return err
		}
		for _, m := range st {
			mark := "pending"
			if m.Applied {
				mark = "applied"
			}
			fmt.Fprintf(stdout, "%04d %-30s %s\n", m.Version, m.Name, mark)
		}
		return nil
	}
	applied, err := db.Migrate(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "applied %d migration(s); the schema is current\n", len(applied))
	return nil
}
