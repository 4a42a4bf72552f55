package rooms

import (
	"context"
	"net/netip"
	"strings"

	"github.com/tidwall/gjson"
)

// serverACL is a room's parsed m.room.server_acl.
type serverACL struct {
	// allow and deny are the patterns as sent; the lower-case copies
	// are what server names are matched against.
	allow, deny           []string
	allowLower, denyLower []string
	allowIPLiterals       bool
}

// parseServerACL reads m.room.server_acl content leniently, as the spec
// asks: entries that are not strings are skipped, a missing list is
// empty, and allow_ip_literals is true unless it is the boolean false.
func parseServerACL(content []byte) *serverACL {
	a := &serverACL{allowIPLiterals: true}
	if v := gjson.GetBytes(content, "allow_ip_literals"); v.Type == gjson.False {
		a.allowIPLiterals = false
	}
	read := func(key string) (raw, lower []string) {
		v := gjson.GetBytes(content, key)
		if !v.IsArray() {
			return nil, nil
		}
		for _, x := range v.Array() {
			if x.Type == gjson.String {
				raw = append(raw, x.Str)
				lower = append(lower, strings.ToLower(x.Str))
			}
		}
		return raw, lower
	}
	a.allow, a.allowLower = read("allow")
	a.deny, a.denyLower = read("deny")
	return a
}

// allows applies the spec's order: IP literals when forbidden, then deny,
// then allow, then deny by default. The port never counts.
func (a *serverACL) allows(serverName string) bool {
	host, ip := serverHost(serverName)
	if ip && !a.allowIPLiterals {
		return false
	}
	host = strings.ToLower(host)
	for _, p := range a.denyLower {
		if globMatch(p, host) {
			return false
		}
	}
	for _, p := range a.allowLower {
		if globMatch(p, host) {
			return true
		}
	}
	return false
}

// serverHost strips the port from a server name and reports whether what
// is left is an IP address literal (IPv4, or IPv6 in brackets).
func serverHost(serverName string) (host string, ipLiteral bool) {
	if _, err := netip.ParseAddr(serverName); err == nil {
		// An IPv4 address without a port, or a bare IPv6 address (not a
		// valid server name, but an IP all the same).
		return serverName, true
	}
	if strings.HasPrefix(serverName, "[") {
		end := strings.IndexByte(serverName, ']')
		if end < 0 {
			return serverName, false
		}
		host = serverName[:end+1]
		_, err := netip.ParseAddr(host[1:end])
		return host, err == nil
	}
	host = serverName
	if i := strings.LastIndexByte(host, ':'); i >= 0 {
		host = host[:i]
	}
	_, err := netip.ParseAddr(host)
	return host, err == nil
}

// globMatch matches name against a glob pattern where * is any run of
// characters and ? exactly one; both are compared as given (callers
// lower-case them). It backtracks only to the last star, so it runs in
// O(len(pattern) × len(name)) at worst.
func globMatch(pattern, name string) bool {
	p, n := []rune(pattern), []rune(name)
	pi, ni := 0, 0
	star, mark := -1, 0
	for ni < len(n) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == n[ni]):
			pi++
			ni++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ni
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ni = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// roomACL returns a room's server ACL, nil when the room has none.
func (e *Engine) roomACL(ctx context.Context, roomID string) (*serverACL, error) {
	m, err := e.meta(ctx, roomID)
	if err != nil {
		return nil, err
	}
	ev, err := e.currentStateEvent(ctx, e.db.Read(), m.NID, "m.room.server_acl", "")
	if err != nil || ev == nil {
		return nil, err
	}
	e.x.init()
	if a, ok := e.x.acls.Get(ev.NID); ok && ev.RedactedBy == nil {
		return a, nil
	}
	a := parseServerACL(ev.Content())
	if ev.RedactedBy == nil {
		e.x.acls.Put(ev.NID, a)
	}
	return a, nil
}

// ServerACL returns a room's server ACL; a room without one allows every
// server (allow ["*"]). M_NOT_FOUND for an unknown room.
func (e *Engine) ServerACL(ctx context.Context, roomID string) (allow, deny []string, allowIPLiterals bool, err error) {
	a, err := e.roomACL(ctx, roomID)
	if err != nil {
		return nil, nil, false, err
	}
	if a == nil {
		return []string{"*"}, nil, true, nil
	}
	return append([]string(nil), a.allow...), append([]string(nil), a.deny...), a.allowIPLiterals, nil
}

// ServerAllowed reports whether a room's server ACL lets a server take
// part (federation checks every request and PDU with it).
func (e *Engine) ServerAllowed(ctx context.Context, roomID, serverName string) (bool, error) {
	a, err := e.roomACL(ctx, roomID)
	if err != nil || a == nil {
		return err == nil, err
	}
	return a.allows(serverName), nil
}
