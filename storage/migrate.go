package storage

import (
	"context"
	"embed"
	"fmt"
	"io/fs"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
)

//go:embed migrations/*.sql
var migrationFS embed.FS

// Migration is one versioned schema change.
type Migration struct {
	Version int
	Name    string
	SQL     string
}

// Migrations returns the embedded migrations in version order.
//
// Files are named NNNN_name.sql and written once for both dialects. Type
// tokens ({{serial}}, {{bytes}}, {{json}}) become each dialect's spelling,
// and a block between "-- postgres only" / "-- sqlite only" and "-- end"
// runs on that dialect alone.
func Migrations() ([]Migration, error) {
	entries, err := fs.Glob(migrationFS, "migrations/*.sql")
	if err != nil {
		return nil, err
	}
	var out []Migration
	seen := map[int]string{}
	for _, path := range entries {
		base := strings.TrimSuffix(strings.TrimPrefix(path, "migrations/"), ".sql")
		num, name, ok := strings.Cut(base, "_")
		v, err := strconv.Atoi(num)
		if !ok || err != nil || v <= 0 {
			return nil, fmt.Errorf("storage: migration file %s is not named NNNN_name.sql", path)
		}
		if other, dup := seen[v]; dup {
			return nil, fmt.Errorf("storage: migrations %s and %s share version %d", other, base, v)
		}
		seen[v] = base
		b, err := migrationFS.ReadFile(path)
		if err != nil {
			return nil, err
		}
		out = append(out, Migration{Version: v, Name: name, SQL: string(b)})
	}
	slices.SortFunc(out, func(a, b Migration) int { return a.Version - b.Version })
	return out, nil
}

var typeToken = regexp.MustCompile(`\{\{(\w+)\}\}`)

// render turns a migration into the dialect's SQL statements.
func render(d dialect, m Migration) ([]string, error) {
	var (
		kept    []string
		only    string
		badType string
	)
	for _, line := range strings.Split(m.SQL, "\n") {
		trim := strings.TrimSpace(line)
		switch {
		case trim == "-- postgres only":
			only = "postgres"
			continue
		case trim == "-- sqlite only":
			only = "sqlite"
			continue
		case trim == "-- end":
			only = ""
			continue
		}
		if only != "" && only != d.name() {
			continue
		}
		if strings.HasPrefix(trim, "--") {
			continue
		}
		kept = append(kept, line)
	}
	text := typeToken.ReplaceAllStringFunc(strings.Join(kept, "\n"), func(tok string) string {
		t := strings.Trim(tok, "{}")
		s, ok := d.sqlType(t)
		if !ok {
			badType = t
		}
		return s
	})
	if badType != "" {
		return nil, fmt.Errorf("storage: migration %04d_%s uses unknown type token {{%s}}", m.Version, m.Name, badType)
	}
	var stmts []string
	for _, s := range strings.Split(text, ";\n") {
		if s = strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(s), ";")); s != "" {
			stmts = append(stmts, s)
		}
	}
	return stmts, nil
}

// MigrationStatus is a migration and whether it has been applied.
type MigrationStatus struct {
	Migration
	Applied bool
}

// Migrate applies every pending migration of Parley's schema in one
// transaction, then River's own migrations. It is safe to run from several
// instances at once: the first holds a lock, the others wait and find
// nothing left to do.
func (db *DB) Migrate(ctx context.Context) ([]Migration, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	var applied []Migration
	err = db.Write(ctx, func(tx *Tx) error {
		applied = applied[:0]
		if db.d.name() == "postgres" {
			if _, err := tx.Exec(ctx, `SELECT pg_advisory_xact_lock(8200400)`); err != nil {
				return fmt.Errorf("lock migrations: %w", err)
			}
		}
		if _, err := tx.Exec(ctx, `CREATE TABLE IF NOT EXISTS schema_migrations (
			version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_ts BIGINT NOT NULL)`); err != nil {
			return fmt.Errorf("create schema_migrations: %w", err)
		}
		done, err := appliedVersions(ctx, tx)
		if err != nil {
			return err
		}
		for _, m := range all {
			if done[m.Version] {
				continue
			}
			stmts, err := render(db.d, m)
			if err != nil {
				return err
			}
			for _, s := range stmts {
				if _, err := tx.Exec(ctx, s); err != nil {
					return fmt.Errorf("storage: migration %04d_%s: %w", m.Version, m.Name, err)
				}
			}
			if _, err := tx.Exec(ctx, `INSERT INTO schema_migrations (version, name, applied_ts) VALUES ($1, $2, $3)`,
				m.Version, m.Name, time.Now().UnixMilli()); err != nil {
				return fmt.Errorf("storage: record migration %d: %w", m.Version, err)
			}
			applied = append(applied, m)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := db.migrateRiver(ctx); err != nil {
		return applied, err
	}
	return applied, nil
}

// MigrationStatuses lists every known migration and whether it is applied.
func (db *DB) MigrationStatuses(ctx context.Context) ([]MigrationStatus, error) {
	all, err := Migrations()
	if err != nil {
		return nil, err
	}
	done := map[int]bool{}
	var n int
	if err := db.Read().QueryRow(ctx, `SELECT COUNT(*) FROM schema_migrations`).Scan(&n); err == nil {
		if done, err = appliedVersions(ctx, db.Read()); err != nil {
			return nil, err
		}
	}
	out := make([]MigrationStatus, len(all))
	for i, m := range all {
		out[i] = MigrationStatus{Migration: m, Applied: done[m.Version]}
	}
	return out, nil
}

func appliedVersions(ctx context.Context, q Querier) (map[int]bool, error) {
	rows, err := q.Query(ctx, `SELECT version FROM schema_migrations`)
	if err != nil {
		return nil, fmt.Errorf("read schema_migrations: %w", err)
	}
	defer rows.Close()
	done := map[int]bool{}
	for rows.Next() {
		var v int
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		done[v] = true
	}
	return done, rows.Err()
}
