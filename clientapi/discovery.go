package clientapi

import (
	"net/http"
	"slices"
	"strings"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

func (a *API) wellKnownClient(w http.ResponseWriter, r *http.Request) error {
	return httpapi.JSON(w, http.StatusOK, map[string]any{
		"m.homeserver": map[string]string{"base_url": strings.TrimSuffix(a.cfg.PublicBaseURL, "/")},
	})
}

func (a *API) wellKnownServer(w http.ResponseWriter, r *http.Request) error {
	if a.cfg.WellKnownServer == "" {
		return mxerr.NotFound("No server delegation is configured")
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"m.server": a.cfg.WellKnownServer})
}

func (a *API) versions(w http.ResponseWriter, r *http.Request) error {
	features := a.cfg.UnstableFeatures
	if features == nil {
		features = map[string]bool{}
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{
		"versions":          a.cfg.Versions,
		"unstable_features": features,
	})
}

func (a *API) capabilities(w http.ResponseWriter, r *http.Request, _ *deviceT) error {
	versions := map[string]string{}
	for v, s := range a.cfg.RoomVersions {
		versions[v] = s
	}
	caps := map[string]any{
		"m.change_password": map[string]bool{"enabled": true},
		"m.set_displayname": map[string]bool{"enabled": true},
		"m.set_avatar_url":  map[string]bool{"enabled": true},
		"m.3pid_changes":    map[string]bool{"enabled": false},
		"m.get_login_token": map[string]bool{"enabled": true},
		"m.profile_fields":  map[string]bool{"enabled": true},
	}
	if len(versions) > 0 {
		caps["m.room_versions"] = map[string]any{"default": a.cfg.DefaultRoomVersion, "available": versions}
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"capabilities": caps})
}

// SortedVersions returns spec versions in order, for tests and logs.
func SortedVersions(v []string) []string {
	out := slices.Clone(v)
	slices.Sort(out)
	return out
}
