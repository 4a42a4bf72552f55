package storage

import "testing"

func TestRebindSQLite(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"SELECT 1", "SELECT 1"},
		{"SELECT a FROM t WHERE b = $1 AND c = $2", "SELECT a FROM t WHERE b = ?1 AND c = ?2"},
		{"SELECT '$1' FROM t WHERE b = $10", "SELECT '$1' FROM t WHERE b = ?10"},
		{`SELECT "a$1" FROM t WHERE x = $2`, `SELECT "a$1" FROM t WHERE x = ?2`},
		{"SELECT $ FROM t", "SELECT $ FROM t"},
	} {
		if got := rebindSQLite(tc.in); got != tc.want {
			t.Errorf("rebindSQLite(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}
