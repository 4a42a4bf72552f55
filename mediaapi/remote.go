package mediaapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// RemoteMedia is media fetched from another server. Body must be closed.
type RemoteMedia struct {
	ContentType string
	// Filename is the remote Content-Disposition's, if any.
	Filename string
	Body     io.ReadCloser
}

// RemoteFetcher downloads media from the server that owns it.
type RemoteFetcher interface {
	Fetch(ctx context.Context, serverName, mediaID string) (*RemoteMedia, error)
}

// Errors a RemoteFetcher returns for answers that mean something to the
// client (anything else is a 502).
var (
	ErrRemoteNotFound       = errors.New("mediaapi: remote media not found")
	ErrRemoteTooLarge       = errors.New("mediaapi: remote media too large")
	ErrRemoteNotYetUploaded = errors.New("mediaapi: remote media not yet uploaded")
)

// RequestSigner signs an outgoing federation request for destination
// (the X-Matrix Authorization header).
type RequestSigner interface {
	Sign(req *http.Request, destination string) error
}

// ServerResolver turns a server name into the base URL of its federation
// API (server discovery: .well-known, SRV, port 8448).
type ServerResolver interface {
	Resolve(ctx context.Context, serverName string) (string, error)
}

// DirectResolver is the simplest server discovery: https://name, on port
// 8448 when the name has no port. It skips .well-known and SRV lookups,
// which the federation work provides.
type DirectResolver struct{}

// Resolve implements ServerResolver.
func (DirectResolver) Resolve(_ context.Context, serverName string) (string, error) {
	if !validServerName(serverName) {
		return "", fmt.Errorf("mediaapi: invalid server name %q", serverName)
	}
	host := serverName
	if _, _, err := net.SplitHostPort(serverName); err != nil {
		if strings.HasPrefix(host, "[") {
			host += ":8448"
		} else {
			host = net.JoinHostPort(host, "8448")
		}
	}
	return "https://" + host, nil
}

// FederationFetcher fetches remote media over federation:
// GET /_matrix/federation/v1/media/download/{mediaId}, whose answer is
// multipart/mixed (a JSON part, then the bytes or a Location to fetch
// them from), falling back to the deprecated unauthenticated
// /_matrix/media/v3/download when the remote does not know the new
// endpoint (404 M_UNRECOGNIZED), as the spec asks.
type FederationFetcher struct {
	// Client makes the requests; use NewSafeClient so that server names
	// resolving to private addresses are refused.
	Client *http.Client
	// Signer signs the authenticated request; nil sends it unsigned.
	Signer RequestSigner
	// Resolver finds a server's base URL; nil is DirectResolver.
	Resolver ServerResolver
	// Wait is the timeout_ms sent for media still being uploaded.
	Wait time.Duration
}

// maxMetadataBytes bounds the JSON part of a federation media answer.
const maxMetadataBytes = 64 << 10

// Fetch implements RemoteFetcher.
func (f *FederationFetcher) Fetch(ctx context.Context, serverName, mediaID string) (*RemoteMedia, error) {
	resolver := f.Resolver
	if resolver == nil {
		resolver = DirectResolver{}
	}
	base, err := resolver.Resolve(ctx, serverName)
	if err != nil {
		return nil, err
	}
	wait := f.Wait
	if wait <= 0 {
		wait = 20 * time.Second
	}
	q := url.Values{"timeout_ms": {fmt.Sprint(wait.Milliseconds())}}
	u := base + "/_matrix/federation/v1/media/download/" + url.PathEscape(mediaID) + "?" + q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	if f.Signer != nil {
		if err := f.Signer.Sign(req, serverName); err != nil {
			return nil, fmt.Errorf("mediaapi: sign media request: %w", err)
		}
	}
	resp, err := f.Client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mediaapi: fetch remote media: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		err := statusError(resp)
		if errors.Is(err, errUnrecognized) {
			return f.fetchLegacy(ctx, base, serverName, mediaID, wait)
		}
		return nil, err
	}
	return parseMultipartMedia(ctx, f.Client, resp)
}

// errUnrecognized is a remote's 404 M_UNRECOGNIZED: an old server.
var errUnrecognized = errors.New("mediaapi: endpoint not recognised")

// statusError reads a non-200 answer (and closes it).
func statusError(resp *http.Response) error {
	defer resp.Body.Close()
	var body struct {
		Errcode string `json:"errcode"`
		Error   string `json:"error"`
	}
	_ = json.NewDecoder(io.LimitReader(resp.Body, maxMetadataBytes)).Decode(&body)
	switch {
	case resp.StatusCode == http.StatusNotFound && body.Errcode == "M_UNRECOGNIZED":
		return errUnrecognized
	case resp.StatusCode == http.StatusNotFound:
		return ErrRemoteNotFound
	case body.Errcode == "M_TOO_LARGE" || resp.StatusCode == http.StatusRequestEntityTooLarge:
		return ErrRemoteTooLarge
	case body.Errcode == "M_NOT_YET_UPLOADED" || resp.StatusCode == http.StatusGatewayTimeout:
		return ErrRemoteNotYetUploaded
	}
	return fmt.Errorf("mediaapi: remote answered %d %s %s", resp.StatusCode, body.Errcode, body.Error)
}

// fetchLegacy uses the deprecated unauthenticated endpoint, with
// allow_remote=false so that the remote does not go looking elsewhere.
func (f *FederationFetcher) fetchLegacy(ctx context.Context, base, serverName, mediaID string, wait time.Duration) (*RemoteMedia, error) {
	q := url.Values{"allow_remote": {"false"}, "timeout_ms": {fmt.Sprint(wait.Milliseconds())}}
	u := base + "/_matrix/media/v3/download/" + url.PathEscape(serverName) + "/" + url.PathEscape(mediaID) + "?" + q.Encode()
	return fetchPlain(ctx, f.Client, u)
}

// fetchPlain GETs media bytes from a URL (a Location, or the legacy
// endpoint).
func fetchPlain(ctx context.Context, client *http.Client, u string) (*RemoteMedia, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("mediaapi: remote media URL: %w", err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("mediaapi: fetch remote media: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, statusError(resp)
	}
	return &RemoteMedia{
		ContentType: resp.Header.Get("Content-Type"),
		Filename:    dispositionFilename(resp.Header.Get("Content-Disposition")),
		Body:        resp.Body,
	}, nil
}

// parseMultipartMedia reads a federation media answer: exactly a JSON
// part and then the media part (bytes, or a Location header).
func parseMultipartMedia(ctx context.Context, client *http.Client, resp *http.Response) (_ *RemoteMedia, err error) {
	defer func() {
		if err != nil {
			resp.Body.Close()
		}
	}()
	mt, params, err := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	if err != nil || mt != "multipart/mixed" || params["boundary"] == "" {
		return nil, fmt.Errorf("mediaapi: remote media answer is %q, not multipart/mixed with a boundary", resp.Header.Get("Content-Type"))
	}
	mr := multipart.NewReader(resp.Body, params["boundary"])
	meta, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("mediaapi: remote media metadata: %w", err)
	}
	if ct, _, _ := mime.ParseMediaType(meta.Header.Get("Content-Type")); ct != "application/json" {
		return nil, fmt.Errorf("mediaapi: remote media metadata is %q, not JSON", meta.Header.Get("Content-Type"))
	}
	raw, err := io.ReadAll(io.LimitReader(meta, maxMetadataBytes+1))
	if err != nil {
		return nil, fmt.Errorf("mediaapi: remote media metadata: %w", err)
	}
	var obj map[string]any
	if len(raw) > maxMetadataBytes || json.Unmarshal(raw, &obj) != nil {
		return nil, errors.New("mediaapi: remote media metadata is not a small JSON object")
	}
	part, err := mr.NextPart()
	if err != nil {
		return nil, fmt.Errorf("mediaapi: remote media part: %w", err)
	}
	if loc := part.Header.Get("Location"); loc != "" {
		// The bytes are elsewhere (a CDN): fetch them there, unsigned.
		resp.Body.Close()
		target, err := resp.Request.URL.Parse(loc)
		if err != nil || (target.Scheme != "https" && target.Scheme != "http") {
			return nil, fmt.Errorf("mediaapi: bad Location %q in remote media answer", loc)
		}
		return fetchPlain(ctx, client, target.String())
	}
	return &RemoteMedia{
		ContentType: part.Header.Get("Content-Type"),
		Filename:    dispositionFilename(part.Header.Get("Content-Disposition")),
		Body:        partBody{part: part, body: resp.Body},
	}, nil
}

// partBody reads one multipart part and closes the whole answer.
type partBody struct {
	part *multipart.Part
	body io.Closer
}

func (p partBody) Read(b []byte) (int, error) { return p.part.Read(b) }

func (p partBody) Close() error {
	_ = p.part.Close()
	return p.body.Close()
}

// dispositionFilename returns the filename of a Content-Disposition
// header (filename* decoded), or "".
func dispositionFilename(h string) string {
	if h == "" {
		return ""
	}
	_, params, err := mime.ParseMediaType(h)
	if err != nil {
		return ""
	}
	return params["filename"]
}
