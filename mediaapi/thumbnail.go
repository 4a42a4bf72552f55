package mediaapi

import (
	"context"
	"errors"
	"fmt"
	"image/gif"
	"net/http"
	"slices"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// ThumbnailRequest is what a client asks for.
type ThumbnailRequest struct {
	Width, Height int
	Method        string
	Animated      bool
}

// ThumbnailResult is a thumbnail to serve: a stored one, or (when the
// content already has many stored sizes) bytes made for this request.
type ThumbnailResult struct {
	storage.MediaThumbnail
	Bytes []byte
}

// commonThumbnails are the sizes the spec recommends, made after upload.
var commonThumbnails = []ThumbnailRequest{
	{Width: 32, Height: 32, Method: "crop"},
	{Width: 96, Height: 96, Method: "crop"},
	{Width: 320, Height: 240, Method: "scale"},
	{Width: 640, Height: 480, Method: "scale"},
	{Width: 800, Height: 600, Method: "scale"},
}

const (
	// maxStoredThumbnails bounds the sizes cached per content; past it,
	// odd sizes are made per request and not kept.
	maxStoredThumbnails = 48
	// maxAnimatedFrames bounds the frames of an animated thumbnail.
	maxAnimatedFrames = 500
)

// Thumbnail returns a thumbnail of m: a stored one that is at least as
// large as asked for, or one made now (and stored).
func (e *Engine) Thumbnail(ctx context.Context, m *Media, req ThumbnailRequest) (*ThumbnailResult, error) {
	img, err := e.imageInfo(ctx, &m.Content, m.Origin != e.cfg.ServerName)
	if err != nil {
		return nil, err
	}
	t := target{Method: req.Method, Animated: req.Animated && e.canAnimate(img)}
	t.Width, t.Height = thumbTarget(img.Width, img.Height, req.Width, req.Height, req.Method)
	for range 2 {
		thumbs, err := e.store.MediaThumbnails(ctx, m.SHA256)
		if err != nil {
			return nil, err
		}
		if th, ok := pickThumbnail(thumbs, t); ok {
			return &ThumbnailResult{MediaThumbnail: th}, nil
		}
		if len(thumbs) >= maxStoredThumbnails {
			return e.renderUnstored(ctx, m.Content, img, t)
		}
		key := fmt.Sprintf("%s/%dx%d/%s/%t", m.SHA256, t.Width, t.Height, t.Method, t.Animated)
		err = e.thumbs.do(ctx, key, func() error {
			return e.generate(context.WithoutCancel(ctx), m.Content, img, []target{t})
		})
		if err != nil {
			return nil, err
		}
	}
	return nil, mxerr.NotFound("Media was deleted")
}

// GenerateThumbnails makes the common thumbnail sizes of some content
// that do not exist yet. Content that is gone or not a readable image is
// not an error: there is nothing to do.
func (e *Engine) GenerateThumbnails(ctx context.Context, sha string) error {
	c, err := e.store.MediaContentGet(ctx, sha)
	if errors.Is(err, storage.ErrNotFound) || err == nil && c.Doomed {
		return nil
	}
	if err != nil {
		return err
	}
	img, err := e.imageInfo(ctx, &c, false)
	if err != nil {
		if _, ok := mxerr.As(err); ok {
			return nil // not an image, or too large to thumbnail
		}
		return err
	}
	have, err := e.store.MediaThumbnails(ctx, sha)
	if err != nil {
		return err
	}
	var todo []target
	seen := map[target]bool{}
	for _, r := range commonThumbnails {
		t := target{Method: r.Method}
		t.Width, t.Height = thumbTarget(img.Width, img.Height, r.Width, r.Height, r.Method)
		if seen[t] || slices.ContainsFunc(have, func(th storage.MediaThumbnail) bool {
			return th.Width == t.Width && th.Height == t.Height && th.Method == t.Method && !th.Animated
		}) {
			continue
		}
		seen[t] = true
		todo = append(todo, t)
	}
	if len(todo) == 0 {
		return nil
	}
	err = e.generate(ctx, c, img, todo)
	if _, ok := mxerr.As(err); ok {
		e.log.InfoContext(ctx, "could not thumbnail content", "sha256", sha, "err", err)
		return nil
	}
	return err
}

// pickThumbnail chooses the smallest stored thumbnail that is no smaller
// than t and has its method, animation and (for crops) aspect.
func pickThumbnail(thumbs []storage.MediaThumbnail, t target) (storage.MediaThumbnail, bool) {
	var best storage.MediaThumbnail
	found := false
	for _, th := range thumbs {
		if th.Method != t.Method || th.Animated != t.Animated || th.Width < t.Width || th.Height < t.Height {
			continue
		}
		if t.Method == "crop" && int64(th.Width)*int64(t.Height) != int64(th.Height)*int64(t.Width) {
			continue
		}
		if !found || th.Width*th.Height < best.Width*best.Height {
			best, found = th, true
		}
	}
	return best, found
}

// imageInfo probes content (once; the result is stored) and checks that
// it can be thumbnailed.
func (e *Engine) imageInfo(ctx context.Context, c *storage.MediaContent, remote bool) (storage.MediaImage, error) {
	if !c.Probed {
		r, err := e.blobs.open(ctx, c.BlobKey, 0, -1)
		if err != nil {
			return storage.MediaImage{}, err
		}
		info, err := probe(r)
		_ = r.Close()
		if err != nil {
			return storage.MediaImage{}, err
		}
		if err := e.store.MediaContentSetImage(ctx, c.SHA256, info); err != nil {
			return storage.MediaImage{}, err
		}
		c.Probed, c.Image = true, info
	}
	img := c.Image
	if img.Format == "" {
		return img, mxerr.Unknown("Cannot generate thumbnails for this content")
	}
	if int64(img.Width)*int64(img.Height) > e.cfg.MaxThumbnailPixels {
		status := http.StatusRequestEntityTooLarge
		if remote {
			status = http.StatusBadGateway
		}
		return img, mxerr.Custom(status, "M_TOO_LARGE", "Image is too large to thumbnail (%dx%d)", img.Width, img.Height)
	}
	return img, nil
}

// canAnimate reports whether an animated thumbnail may be made: the
// source animates and all its frames fit the decoding budget (frames are
// held one byte per pixel).
func (e *Engine) canAnimate(img storage.MediaImage) bool {
	return img.Animated && img.Format == "gif" && img.Frames <= maxAnimatedFrames &&
		int64(img.Frames)*int64(img.Width)*int64(img.Height) <= 4*e.cfg.MaxThumbnailPixels
}

// rendered is one encoded thumbnail.
type rendered struct {
	target
	bytes       []byte
	contentType string
}

// renderTargets decodes content once and produces every target.
func (e *Engine) renderTargets(ctx context.Context, c storage.MediaContent, img storage.MediaImage, targets []target) ([]rendered, error) {
	select {
	case e.decodes <- struct{}{}:
		defer func() { <-e.decodes }()
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	r, err := e.blobs.open(ctx, c.BlobKey, 0, -1)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	var out []rendered
	cannot := func(err error) error {
		return mxerr.Unknown("Cannot generate thumbnails for this content").Wrap(err)
	}
	if targets[0].Animated {
		g, err := gif.DecodeAll(r)
		if err != nil {
			return nil, cannot(err)
		}
		for _, t := range targets {
			b, err := renderAnimated(g, t)
			if err != nil {
				return nil, cannot(err)
			}
			out = append(out, rendered{target: t, bytes: b, contentType: "image/gif"})
		}
		return out, nil
	}
	needW, needH := 1, 1
	for _, t := range targets {
		w, h := t.resizeDims(img.Width, img.Height)
		needW, needH = max(needW, w), max(needH, h)
	}
	src, err := decodeStatic(r, img, needW, needH)
	if err != nil {
		return nil, cannot(err)
	}
	for i, thumb := range renderAll(src, targets) {
		b, ct, err := encodeStatic(thumb, img.Format)
		if err != nil {
			return nil, cannot(err)
		}
		out = append(out, rendered{target: targets[i], bytes: b, contentType: ct})
	}
	return out, nil
}

// generate renders targets and stores them.
func (e *Engine) generate(ctx context.Context, c storage.MediaContent, img storage.MediaImage, targets []target) error {
	// Animated and static targets decode differently: one pass each.
	var static, animated []target
	for _, t := range targets {
		if t.Animated {
			animated = append(animated, t)
		} else {
			static = append(static, t)
		}
	}
	for _, group := range [][]target{static, animated} {
		if len(group) == 0 {
			continue
		}
		out, err := e.renderTargets(ctx, c, img, group)
		if err != nil {
			return err
		}
		for _, r := range out {
			if err := e.storeThumbnail(ctx, c.SHA256, r); err != nil {
				return err
			}
		}
	}
	return nil
}

func (e *Engine) storeThumbnail(ctx context.Context, sha string, r rendered) error {
	key := newKey("thumbnail")
	if err := e.store.MediaBlobWriteBegin(ctx, key, e.now().UnixMilli()); err != nil {
		return err
	}
	if err := e.blobs.writeAll(ctx, key, r.bytes); err != nil {
		e.forgetBlob(ctx, key)
		return err
	}
	stored, err := e.store.MediaThumbnailPut(ctx, storage.MediaThumbnail{
		SHA256: sha, Width: r.Width, Height: r.Height, Method: r.Method, Animated: r.Animated,
		ContentType: r.contentType, Size: int64(len(r.bytes)), BlobKey: key, CreatedTS: e.now().UnixMilli(),
	})
	if err != nil || !stored {
		e.forgetBlob(ctx, key)
	}
	return err
}

// renderUnstored makes one thumbnail without keeping it.
func (e *Engine) renderUnstored(ctx context.Context, c storage.MediaContent, img storage.MediaImage, t target) (*ThumbnailResult, error) {
	out, err := e.renderTargets(ctx, c, img, []target{t})
	if err != nil {
		return nil, err
	}
	r := out[0]
	return &ThumbnailResult{
		MediaThumbnail: storage.MediaThumbnail{SHA256: c.SHA256, Width: r.Width, Height: r.Height, Method: r.Method,
			Animated: r.Animated, ContentType: r.contentType, Size: int64(len(r.bytes)), CreatedTS: e.now().UnixMilli()},
		Bytes: r.bytes,
	}, nil
}
