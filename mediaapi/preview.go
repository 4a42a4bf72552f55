package mediaapi

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strings"
	"unicode/utf8"

	"golang.org/x/net/html"
	"golang.org/x/net/html/charset"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// previewer fetches pages for URL previews.
type previewer struct {
	cfg    PreviewConfig
	client *http.Client
}

func newPreviewer(cfg PreviewConfig) *previewer {
	return &previewer{cfg: cfg, client: NewSafeClient(IPPolicy{Allowed: cfg.Allowed, Denied: cfg.Denied}, cfg.Timeout)}
}

// previewURL checks a URL a client wants previewed and returns it without
// its fragment (the cache key).
func previewURL(raw string) (*url.URL, error) {
	if raw == "" {
		return nil, mxerr.MissingParam("Missing url parameter")
	}
	if len(raw) > 4096 {
		return nil, mxerr.InvalidParam("url is too long")
	}
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
		return nil, mxerr.InvalidParam("url must be an absolute http or https URL without credentials")
	}
	u.Fragment, u.RawFragment = "", ""
	return u, nil
}

// Preview returns the OpenGraph data of a web page (or image) for a user,
// from the cache when it is fresh.
func (e *Engine) Preview(ctx context.Context, userID, raw string) (map[string]any, error) {
	u, err := previewURL(raw)
	if err != nil {
		return nil, err
	}
	key := u.String()
	if og, err := e.cachedPreview(ctx, key); err == nil {
		return og, nil
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	err = e.previews.do(ctx, key, func() error {
		ctx := context.WithoutCancel(ctx)
		og, err := e.fetchPreview(ctx, userID, u)
		if err != nil {
			return err
		}
		b, err := json.Marshal(og)
		if err != nil {
			return err
		}
		now := e.now()
		return e.store.MediaPreviewPut(ctx, key, string(b), now.UnixMilli(), now.Add(e.cfg.Preview.CacheTTL).UnixMilli())
	})
	if err != nil {
		return nil, previewError(err)
	}
	return e.cachedPreview(ctx, key)
}

func (e *Engine) cachedPreview(ctx context.Context, key string) (map[string]any, error) {
	body, err := e.store.MediaPreviewGet(ctx, key, e.now().UnixMilli())
	if err != nil {
		return nil, err
	}
	og := map[string]any{}
	if err := json.Unmarshal([]byte(body), &og); err != nil {
		return nil, fmt.Errorf("mediaapi: cached preview: %w", err)
	}
	return og, nil
}

// previewError turns a fetch failure into what the client sees.
func previewError(err error) error {
	var blocked *BlockedError
	switch {
	case errors.As(err, &blocked):
		return mxerr.Forbidden("URL previews of private or reserved addresses are not allowed").Wrap(err)
	case errors.Is(err, errTooLarge):
		return mxerr.Custom(http.StatusBadGateway, "M_TOO_LARGE", "The page is too large to preview")
	}
	if _, ok := mxerr.As(err); ok {
		return err
	}
	return mxerr.Custom(http.StatusBadGateway, "M_UNKNOWN", "Could not fetch the page to preview").Wrap(err)
}

// errPageStatus is a page that answered something other than 200.
type errPageStatus int

func (e errPageStatus) Error() string { return fmt.Sprintf("mediaapi: the page answered %d", int(e)) }

func (e *Engine) previewGet(ctx context.Context, u string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("User-Agent", e.cfg.Preview.UserAgent)
	req.Header.Set("Accept", "text/html,application/xhtml+xml,image/*;q=0.9,*/*;q=0.5")
	resp, err := e.preview.client.Do(req)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		resp.Body.Close()
		return nil, errPageStatus(resp.StatusCode)
	}
	return resp, nil
}

// fetchPreview builds a preview: a page's OpenGraph data (with its image
// stored as media), or an image's own description.
func (e *Engine) fetchPreview(ctx context.Context, userID string, u *url.URL) (map[string]any, error) {
	ctx, cancel := context.WithTimeout(ctx, e.cfg.Preview.Timeout)
	defer cancel()
	resp, err := e.previewGet(ctx, u.String())
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	mt, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type"))
	og := map[string]any{}
	switch {
	case strings.HasPrefix(mt, "image/"):
		if err := e.previewImage(ctx, userID, resp, og); err != nil {
			return nil, err
		}
		if name := path.Base(resp.Request.URL.Path); name != "/" && name != "." {
			og["og:title"] = name
		}
	case mt == "text/html" || mt == "application/xhtml+xml":
		body := &limitedReader{r: resp.Body, left: e.cfg.Preview.MaxBytes}
		og = parseOpenGraph(body, resp.Header.Get("Content-Type"), resp.Request.URL)
		if body.over {
			return nil, errTooLarge
		}
		if img, _ := og["og:image"].(string); img != "" {
			delete(og, "og:image")
			if ir, err := e.previewGet(ctx, img); err == nil {
				if err := e.previewImage(ctx, userID, ir, og); err != nil {
					e.log.DebugContext(ctx, "URL preview: image not stored", "url", img, "err", err)
				}
				ir.Body.Close()
			} else {
				e.log.DebugContext(ctx, "URL preview: image not fetched", "url", img, "err", err)
			}
		}
	}
	return og, nil
}

// previewImage stores a fetched image as media of the user (not counted
// against their quota) and describes it in og.
func (e *Engine) previewImage(ctx context.Context, userID string, resp *http.Response, og map[string]any) error {
	for _, k := range []string{"og:image", "og:image:url", "og:image:secure_url", "og:image:width", "og:image:height", "og:image:type"} {
		delete(og, k)
	}
	now := e.now().UnixMilli()
	rec := storage.MediaRecord{Origin: e.cfg.ServerName, MediaID: newMediaID(), UserID: userID, CreatedTS: now}
	var sniffed string
	rec, err := e.storeLocal(ctx, rec, resp.Body, storeOptions{
		uncharged: true, limit: e.cfg.Preview.MaxBytes,
		accept: func(head []byte) bool {
			sniffed = http.DetectContentType(head)
			return strings.HasPrefix(sniffed, "image/")
		},
	})
	if err != nil {
		return err
	}
	og["og:image"] = mxc(rec.Origin, rec.MediaID)
	og["og:image:type"] = sniffed
	og["matrix:image:size"] = rec.Size
	if c, err := e.store.MediaContentGet(ctx, rec.SHA256); err == nil {
		if img, err := e.imageInfo(ctx, &c, false); err == nil {
			og["og:image:width"], og["og:image:height"] = img.Width, img.Height
		}
	}
	return nil
}

// limitedReader reads at most left bytes and remembers if there was more.
type limitedReader struct {
	r    io.Reader
	left int64
	over bool
}

func (l *limitedReader) Read(p []byte) (int, error) {
	if l.left <= 0 {
		var one [1]byte
		if n, _ := l.r.Read(one[:]); n > 0 {
			l.over = true
		}
		return 0, io.EOF
	}
	if int64(len(p)) > l.left {
		p = p[:l.left]
	}
	n, err := l.r.Read(p)
	l.left -= int64(n)
	return n, err
}

// Limits on what a preview carries.
const (
	maxOGKeys        = 64
	maxOGValueRunes  = 1000
	maxOGTitleRunes  = 300
	maxHTMLTokenized = 2 << 20
)

// parseOpenGraph reads a page's og:* meta properties, falling back to its
// <title>, meta description and first image; image URLs are made
// absolute against base.
func parseOpenGraph(r io.Reader, contentType string, base *url.URL) map[string]any {
	if cr, err := charset.NewReader(r, contentType); err == nil {
		r = cr
	}
	z := html.NewTokenizer(io.LimitReader(r, maxHTMLTokenized))
	z.SetMaxBuf(256 << 10)
	og := map[string]any{}
	var (
		title, description, twitterImage, imageSrc, firstImg string
		inTitle, seenTitle                                   bool
	)
	for {
		tt := z.Next()
		if tt == html.ErrorToken {
			break
		}
		switch tt {
		case html.StartTagToken, html.SelfClosingTagToken:
			name, hasAttr := z.TagName()
			attrs := map[string]string{}
			for hasAttr {
				var k, v []byte
				k, v, hasAttr = z.TagAttr()
				if _, dup := attrs[string(k)]; !dup {
					attrs[string(k)] = string(v)
				}
			}
			switch string(name) {
			case "meta":
				key := strings.ToLower(strings.TrimSpace(attrs["property"]))
				if key == "" {
					key = strings.ToLower(strings.TrimSpace(attrs["name"]))
				}
				content := cleanText(attrs["content"], maxOGValueRunes)
				if content == "" {
					continue
				}
				switch {
				case strings.HasPrefix(key, "og:"):
					if _, ok := og[key]; !ok && len(og) < maxOGKeys {
						og[key] = content
					}
				case key == "description":
					description = content
				case key == "twitter:image" && twitterImage == "":
					twitterImage = content
				}
			case "title":
				if !seenTitle {
					inTitle, seenTitle = true, true
				}
			case "link":
				if strings.EqualFold(attrs["rel"], "image_src") && imageSrc == "" {
					imageSrc = attrs["href"]
				}
			case "img":
				if firstImg == "" && !strings.HasPrefix(attrs["src"], "data:") {
					firstImg = attrs["src"]
				}
			}
		case html.TextToken:
			if inTitle {
				title += string(z.Text())
			}
		case html.EndTagToken:
			if name, _ := z.TagName(); string(name) == "title" {
				inTitle = false
			}
		}
	}
	if _, ok := og["og:title"]; !ok {
		if t := cleanText(title, maxOGTitleRunes); t != "" {
			og["og:title"] = t
		}
	}
	if _, ok := og["og:description"]; !ok && description != "" {
		og["og:description"] = description
	}
	img, _ := og["og:image"].(string)
	for _, c := range []string{img, twitterImage, imageSrc, firstImg} {
		if c == "" {
			continue
		}
		if u, err := base.Parse(strings.TrimSpace(c)); err == nil && (u.Scheme == "http" || u.Scheme == "https") {
			og["og:image"] = u.String()
			return og
		}
	}
	delete(og, "og:image")
	return og
}

// cleanText collapses whitespace and truncates to n runes.
func cleanText(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if !utf8.ValidString(s) {
		s = strings.ToValidUTF8(s, "\uFFFD")
	}
	if utf8.RuneCountInString(s) > n {
		r := []rune(s)
		s = string(r[:n-1]) + "…"
	}
	return s
}
