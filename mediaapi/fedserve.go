package mediaapi

import (
	"bytes"
	"io"
	"mime/multipart"
	"net/http"
	"net/textproto"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// federation wraps a handler that another server calls with X-Matrix
// authentication.
func (e *Engine) federation(h func(w http.ResponseWriter, r *http.Request, origin string) error) http.Handler {
	return httpapi.Wrap(func(w http.ResponseWriter, r *http.Request) error {
		origin, err := e.deps.FederationAuth.Origin(r)
		if err != nil {
			if _, ok := mxerr.As(err); ok {
				return err
			}
			return mxerr.Custom(http.StatusUnauthorized, "M_UNAUTHORIZED", "Request is not signed by a known server").Wrap(err)
		}
		httpapi.SetLogUser(r.Context(), origin)
		return h(w, r, origin)
	})
}

// handleFederationDownload serves our own media to another server as
// multipart/mixed: an empty JSON object, then the bytes.
func (e *Engine) handleFederationDownload(w http.ResponseWriter, r *http.Request, _ string) error {
	wait, err := e.waitParam(r)
	if err != nil {
		return err
	}
	m, err := e.Lookup(r.Context(), e.cfg.ServerName, httpapi.Var(r, "mediaId"), LookupOptions{Wait: wait, LocalOnly: true})
	if err != nil {
		return err
	}
	br, err := e.blobs.open(r.Context(), m.Content.BlobKey, 0, -1)
	if err != nil {
		return err
	}
	defer br.Close()
	ct := m.ContentType
	if ct == "" {
		ct = "application/octet-stream"
	}
	return writeMultipartMedia(w, r, ct, disposition(ct, m.UploadName, false), br)
}

// handleFederationThumbnail serves a thumbnail of our own media.
func (e *Engine) handleFederationThumbnail(w http.ResponseWriter, r *http.Request, _ string) error {
	req, err := thumbnailParams(r)
	if err != nil {
		return err
	}
	wait, err := e.waitParam(r)
	if err != nil {
		return err
	}
	m, err := e.Lookup(r.Context(), e.cfg.ServerName, httpapi.Var(r, "mediaId"), LookupOptions{Wait: wait, LocalOnly: true})
	if err != nil {
		return err
	}
	t, err := e.Thumbnail(r.Context(), m, req)
	if err != nil {
		return err
	}
	var body io.Reader = bytes.NewReader(t.Bytes)
	if t.Bytes == nil {
		br, err := e.blobs.open(r.Context(), t.BlobKey, 0, -1)
		if err != nil {
			return err
		}
		defer br.Close()
		body = br
	}
	ext := map[string]string{"image/jpeg": "jpg", "image/png": "png", "image/gif": "gif"}[t.ContentType]
	return writeMultipartMedia(w, r, t.ContentType, disposition(t.ContentType, "thumbnail."+ext, true), body)
}

// writeMultipartMedia writes the federation media answer.
func writeMultipartMedia(w http.ResponseWriter, r *http.Request, contentType, disp string, body io.Reader) error {
	mw := multipart.NewWriter(w)
	w.Header().Set("Content-Type", "multipart/mixed; boundary="+mw.Boundary())
	w.WriteHeader(http.StatusOK)
	meta, err := mw.CreatePart(textproto.MIMEHeader{"Content-Type": {"application/json"}})
	if err == nil {
		_, err = meta.Write([]byte("{}"))
	}
	if err == nil {
		var part io.Writer
		part, err = mw.CreatePart(textproto.MIMEHeader{"Content-Type": {contentType}, "Content-Disposition": {disp}})
		if err == nil {
			_, err = io.Copy(part, body)
		}
	}
	if err == nil {
		err = mw.Close()
	}
	if err != nil && r.Context().Err() == nil {
		httpapi.Logger(r.Context()).WarnContext(r.Context(), "federation media answer failed mid-way", "err", err)
	}
	return nil
}
