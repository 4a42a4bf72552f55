package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"time"
)

// deniedRanges are never fetched from (unless a configured allow-list
// says otherwise): private, loopback, link-local, multicast, CGNAT,
// unique-local, documentation, benchmarking and reserved ranges, and the
// IPv6 prefixes that embed IPv4 addresses (IPv4-compatible, NAT64, 6to4,
// Teredo), which could smuggle a private IPv4 address past those checks.
var deniedRanges = func() []netip.Prefix {
	var out []netip.Prefix
	for _, s := range []string{
		"0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16", "172.16.0.0/12",
		"192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16", "198.18.0.0/15",
		"198.51.100.0/24", "203.0.113.0/24", "224.0.0.0/4", "240.0.0.0/4",
		"::/96", "::1/128", "::ffff:0:0/96", "64:ff9b::/96", "64:ff9b:1::/48", "100::/64",
		"2001::/32", "2001:db8::/32", "2002::/16", "fc00::/7", "fe80::/10", "fec0::/10", "ff00::/8",
	} {
		out = append(out, netip.MustParsePrefix(s))
	}
	return out
}()

// IPPolicy decides which addresses outgoing fetches may reach.
type IPPolicy struct {
	// Allowed are reachable even inside the built-in denied ranges.
	Allowed []netip.Prefix
	// Denied are refused in addition to the built-in ranges.
	Denied []netip.Prefix
}

// Permits reports whether a may be connected to.
func (p IPPolicy) Permits(a netip.Addr) bool {
	if !a.IsValid() {
		return false
	}
	a = a.Unmap()
	for _, pfx := range p.Allowed {
		if pfx.Contains(a) {
			return true
		}
	}
	if a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() ||
		a.IsInterfaceLocalMulticast() || a.IsMulticast() || a.IsUnspecified() {
		return false
	}
	for _, list := range [][]netip.Prefix{deniedRanges, p.Denied} {
		for _, pfx := range list {
			if pfx.Contains(a) {
				return false
			}
		}
	}
	return true
}

// BlockedError is a fetch refused because of where it would connect.
type BlockedError struct {
	Host string
	Addr netip.Addr
}

func (e *BlockedError) Error() string {
	if e.Addr.IsValid() {
		return fmt.Sprintf("mediaapi: %s resolves to %s, which may not be fetched from", e.Host, e.Addr)
	}
	return fmt.Sprintf("mediaapi: %s may not be fetched from", e.Host)
}

// dialer resolves names itself, refuses the whole name if any of its
// addresses is denied, and connects only to the addresses it checked; the
// socket's Control hook checks the final address once more.
type dialer struct {
	policy   IPPolicy
	resolver *net.Resolver
	net      net.Dialer
}

func newDialer(policy IPPolicy) *dialer {
	d := &dialer{policy: policy, resolver: net.DefaultResolver}
	d.net = net.Dialer{
		Timeout: 10 * time.Second,
		Control: func(network, address string, _ syscall.RawConn) error {
			ap, err := netip.ParseAddrPort(address)
			if err != nil {
				return &BlockedError{Host: address}
			}
			if !d.policy.Permits(ap.Addr()) {
				return &BlockedError{Host: address, Addr: ap.Addr()}
			}
			return nil
		},
	}
	return d
}

func (d *dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(address)
	if err != nil {
		return nil, err
	}
	var addrs []netip.Addr
	if a, err := netip.ParseAddr(host); err == nil {
		addrs = []netip.Addr{a}
	} else {
		addrs, err = d.resolver.LookupNetIP(ctx, "ip", host)
		if err != nil {
			return nil, err
		}
	}
	if len(addrs) == 0 {
		return nil, &BlockedError{Host: host}
	}
	for _, a := range addrs {
		if !d.policy.Permits(a) {
			return nil, &BlockedError{Host: host, Addr: a.Unmap()}
		}
	}
	var errs []error
	for _, a := range addrs {
		c, err := d.net.DialContext(ctx, network, net.JoinHostPort(a.Unmap().String(), port))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
	}
	return nil, errors.Join(errs...)
}

// maxRedirects bounds the redirects a fetch follows.
const maxRedirects = 5

// NewSafeClient returns an HTTP client for fetching from addresses chosen
// by users or remote servers: no proxy, every connection (redirects
// included) checked against policy after name resolution, a bounded
// number of http(s) redirects and an overall timeout.
func NewSafeClient(policy IPPolicy, timeout time.Duration) *http.Client {
	d := newDialer(policy)
	tr := &http.Transport{
		Proxy:                 nil,
		DialContext:           d.DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          32,
		IdleConnTimeout:       30 * time.Second,
		TLSHandshakeTimeout:   10 * time.Second,
		ResponseHeaderTimeout: timeout,
	}
	return &http.Client{
		Transport: tr,
		Timeout:   timeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) >= maxRedirects {
				return errors.New("mediaapi: too many redirects")
			}
			if req.URL.Scheme != "http" && req.URL.Scheme != "https" {
				return fmt.Errorf("mediaapi: redirect to %s URL refused", req.URL.Scheme)
			}
			// Refuse a redirect to a literal denied address at once; names
			// are checked when dialled.
			if a, err := netip.ParseAddr(trimBrackets(req.URL.Hostname())); err == nil && !policy.Permits(a) {
				return &BlockedError{Host: req.URL.Host, Addr: a.Unmap()}
			}
			return nil
		},
	}
}

func trimBrackets(s string) string {
	if len(s) > 1 && s[0] == '[' && s[len(s)-1] == ']' {
		return s[1 : len(s)-1]
	}
	return s
}
