package accounts

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"unicode/utf8"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// Profile limits: the spec caps the whole profile at 64 KiB; key names are
// capped like other Matrix identifiers.
const (
	MaxProfileBytes    = 64 * 1024
	MaxProfileKeyBytes = 255
)

func jsonString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// Profile returns every field of a local user's profile.
func (e *Engine) Profile(ctx context.Context, userID string) (map[string]json.RawMessage, error) {
	u, err := e.store.UserGet(ctx, userID)
	if err != nil {
		return nil, notFoundAs(err, mxerr.NotFound("Profile not found"))
	}
	if u.Deactivated {
		return map[string]json.RawMessage{}, nil
	}
	fields, err := e.store.ProfileGet(ctx, userID)
	if err != nil {
		return nil, err
	}
	out := make(map[string]json.RawMessage, len(fields))
	for k, v := range fields {
		out[k] = json.RawMessage(v)
	}
	return out, nil
}

// ProfileField returns one field; M_NOT_FOUND if unset.
func (e *Engine) ProfileField(ctx context.Context, userID, field string) (json.RawMessage, error) {
	p, err := e.Profile(ctx, userID)
	if err != nil {
		return nil, err
	}
	v, ok := p[field]
	if !ok {
		return nil, mxerr.NotFound("Profile field %s is not set", field)
	}
	return v, nil
}

// ValidateProfileKey checks a profile field name.
func ValidateProfileKey(field string) error {
	switch {
	case field == "":
		return mxerr.MissingParam("Missing profile field name")
	case len(field) > MaxProfileKeyBytes:
		return mxerr.Custom(400, "M_KEY_TOO_LARGE", "Profile field name is longer than %d bytes", MaxProfileKeyBytes)
	case !utf8.ValidString(field):
		return mxerr.InvalidParam("Profile field name is not valid UTF-8")
	}
	return nil
}

// SetProfileField sets (or, with a nil value, deletes) a field of the
// user's own profile.
func (e *Engine) SetProfileField(ctx context.Context, userID, field string, value json.RawMessage) error {
	if err := ValidateProfileKey(field); err != nil {
		return err
	}
	if value != nil {
		if err := validateProfileValue(field, value); err != nil {
			return err
		}
	}
	err := e.db.Write(ctx, func(tx *storage.Tx) error {
		current, err := e.store.ProfileGet(ctx, userID)
		if err != nil {
			return err
		}
		size := 2
		for k, v := range current {
			if k != field {
				size += len(k) + len(v) + 4
			}
		}
		if value != nil {
			size += len(field) + len(value) + 4
		}
		if size > MaxProfileBytes {
			return mxerr.Custom(400, "M_PROFILE_TOO_LARGE", "The profile would exceed %d bytes", MaxProfileBytes)
		}
		var compact bytes.Buffer
		if value != nil {
			if err := json.Compact(&compact, value); err != nil {
				return mxerr.BadJSON("Profile value is not valid JSON")
			}
		}
		return e.store.ProfileSet(ctx, tx, userID, field, compact.String())
	})
	if err != nil {
		return err
	}
	if (field == "displayname" || field == "avatar_url") && e.hooks.ProfileChanged != nil {
		e.hooks.ProfileChanged(ctx, userID)
	}
	return nil
}

func validateProfileValue(field string, v json.RawMessage) error {
	if !json.Valid(v) {
		return mxerr.BadJSON("Profile value is not valid JSON")
	}
	switch field {
	case "displayname":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return mxerr.BadJSON("displayname must be a string")
		}
		if len(s) > 256 {
			return mxerr.Custom(400, "M_TOO_LARGE", "displayname is longer than 256 bytes")
		}
	case "avatar_url":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return mxerr.BadJSON("avatar_url must be a string")
		}
		if s != "" && !strings.HasPrefix(s, "mxc://") {
			return mxerr.InvalidParam("avatar_url must be an mxc:// URI")
		}
	case "m.tz":
		var s string
		if err := json.Unmarshal(v, &s); err != nil {
			return mxerr.BadJSON("m.tz must be a string")
		}
	}
	return nil
}

// DirectoryResult is one user found by SearchUsers.
type DirectoryResult struct {
	UserID      string `json:"user_id"`
	DisplayName string `json:"display_name,omitempty"`
	AvatarURL   string `json:"avatar_url,omitempty"`
}

// Limits of user directory searches.
const (
	DefaultDirectoryLimit = 10
	MaxDirectoryLimit     = 50
	maxSearchTermBytes    = 256
)

// SearchUsers searches the user directory for searcher: users who share a
// room with them or are in a published room, matched by ID or display
// name. limited reports that more matched than limit.
func (e *Engine) SearchUsers(ctx context.Context, searcher, term string, limit int) ([]DirectoryResult, bool, error) {
	term = strings.TrimSpace(term)
	if term == "" {
		return nil, false, mxerr.MissingParam("search_term is required")
	}
	if len(term) > maxSearchTermBytes {
		return nil, false, mxerr.InvalidParam("search_term is longer than %d bytes", maxSearchTermBytes)
	}
	if limit <= 0 {
		limit = DefaultDirectoryLimit
	}
	limit = min(limit, MaxDirectoryLimit)
	found, err := e.store.SearchUsers(ctx, searcher, term, limit+1)
	if err != nil {
		return nil, false, err
	}
	limited := len(found) > limit
	if limited {
		found = found[:limit]
	}
	out := make([]DirectoryResult, 0, len(found))
	for _, f := range found {
		r := DirectoryResult{UserID: f.UserID}
		if f.DisplayName != nil {
			_ = json.Unmarshal([]byte(*f.DisplayName), &r.DisplayName)
		}
		if f.AvatarURL != nil {
			_ = json.Unmarshal([]byte(*f.AvatarURL), &r.AvatarURL)
		}
		out = append(out, r)
	}
	return out, limited, nil
}
