// Package clientapi serves the Matrix client-server API
// (/_matrix/client/*): it authenticates requests, parses them, makes one
// call into an engine and writes the answer. Logic lives in the engines.
package clientapi

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/mux"

	"github.com/parley-chat/parley/e2ee"
	"github.com/parley-chat/parley/homeserver/accounts"
	"github.com/parley-chat/parley/homeserver/presence"
	"github.com/parley-chat/parley/homeserver/push"
	"github.com/parley-chat/parley/homeserver/ratelimit"
	"github.com/parley-chat/parley/homeserver/receipts"
	"github.com/parley-chat/parley/homeserver/rooms"
	"github.com/parley-chat/parley/homeserver/slidingsync"
	syncengine "github.com/parley-chat/parley/homeserver/sync"
	"github.com/parley-chat/parley/homeserver/typing"
	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

// Config is what the client API needs from the server configuration.
type Config struct {
	ServerName      string
	PublicBaseURL   string
	WellKnownServer string
	// Versions and UnstableFeatures are what /versions advertises: only
	// what is implemented.
	Versions         []string
	UnstableFeatures map[string]bool
	// RoomVersions lists the room versions the server can create and join.
	RoomVersions       map[string]string
	DefaultRoomVersion string
	// SocketsPerDevice bounds a device's WebSocket connections on this
	// instance (0: DefaultSocketsPerDevice).
	SocketsPerDevice int
}

// Deps are the engines the client API calls.
type Deps struct {
	Accounts    *accounts.Engine
	Limits      *ratelimit.Limiter
	Keys        *e2ee.Engine
	Rooms       *rooms.Engine
	Receipts    *receipts.Engine
	Typing      *typing.Engine
	Presence    *presence.Engine
	Push        *push.Engine
	Sync        *syncengine.Engine
	SlidingSync *slidingsync.Engine
}

// API is the client-server API.
type API struct {
	cfg      Config
	deps     Deps
	accounts *accounts.Engine
	limits   *ratelimit.Limiter

	touchMu sync.Mutex
	touched map[string]time.Time

	// gw is the WebSocket gateway once routes are registered.
	gw *gateway
}

// CloseSockets closes every WebSocket connection with 1001 and waits until
// their streams ended or ctx is done, so that nothing is left reading the
// database the server is about to close.
func (a *API) CloseSockets(ctx context.Context) {
	if a.gw == nil {
		return
	}
	a.gw.shutdown()
	for a.gw.count() > 0 && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// New builds the client API.
func New(cfg Config, deps Deps) *API {
	return &API{cfg: cfg, deps: deps, accounts: deps.Accounts, limits: deps.Limits, touched: make(map[string]time.Time)}
}

// authed is a handler that needs an access token.
type authed func(w http.ResponseWriter, r *http.Request, d *accounts.Device) error

// AccessToken extracts the access token: the Authorization header, or the
// deprecated access_token query parameter.
func AccessToken(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		if t, ok := strings.CutPrefix(h, "Bearer "); ok {
			return strings.TrimSpace(t)
		}
		return ""
	}
	return r.URL.Query().Get("access_token")
}

// auth wraps a handler that requires authentication.
func (a *API) auth(h authed) http.Handler {
	return httpapi.Wrap(func(w http.ResponseWriter, r *http.Request) error {
		d, err := a.authenticate(r)
		if err != nil {
			return err
		}
		if a.deps.Presence != nil && !strings.HasSuffix(r.URL.Path, "/sync") { // a sync reports its set_presence itself
			a.deps.Presence.Touch(d.UserID)
		}
		return h(w, r, d)
	})
}

// noGuests wraps a handler that guests may not use.
func (a *API) noGuests(h authed) http.Handler {
	return a.auth(func(w http.ResponseWriter, r *http.Request, d *accounts.Device) error {
		if d.IsGuest {
			return mxerr.GuestAccessForbidden("Guests cannot use this endpoint")
		}
		return h(w, r, d)
	})
}

func (a *API) authenticate(r *http.Request) (*accounts.Device, error) {
	if h := r.Header.Get("Authorization"); h != "" && !strings.HasPrefix(h, "Bearer ") {
		return nil, mxerr.MissingToken("Authorization header must use the Bearer scheme")
	}
	d, err := a.accounts.Authenticate(r.Context(), AccessToken(r))
	if err != nil {
		return nil, err
	}
	httpapi.SetLogUser(r.Context(), d.UserID)
	a.touch(r, d)
	return d, nil
}

// touchEvery coalesces last-seen updates of a device.
const touchEvery = 5 * time.Minute

func (a *API) touch(r *http.Request, d *accounts.Device) {
	key := d.UserID + "|" + d.DeviceID
	now := time.Now()
	a.touchMu.Lock()
	last, ok := a.touched[key]
	if ok && now.Sub(last) < touchEvery {
		a.touchMu.Unlock()
		return
	}
	a.touched[key] = now
	if len(a.touched) > 200_000 {
		for k, t := range a.touched {
			if now.Sub(t) > touchEvery {
				delete(a.touched, k)
			}
		}
	}
	a.touchMu.Unlock()
	if err := a.accounts.TouchDevice(r.Context(), d, httpapi.ClientIP(r.Context()), r.UserAgent()); err != nil {
		httpapi.Logger(r.Context()).Warn("could not record device activity", "err", err)
	}
}

// Routes registers the client API on r (the server's root router).
func (a *API) Routes(r *mux.Router) {
	r.Handle("/.well-known/matrix/client", httpapi.Wrap(a.wellKnownClient)).Methods(http.MethodGet)
	r.Handle("/.well-known/matrix/server", httpapi.Wrap(a.wellKnownServer)).Methods(http.MethodGet)
	r.Handle("/_matrix/client/versions", httpapi.Wrap(a.versions)).Methods(http.MethodGet)

	if a.deps.Rooms != nil {
		a.hotRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
	}
	a.legacyRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
	a.keysRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
	a.keysUnstableRoutes(r)
	if a.deps.Rooms != nil {
		a.roomRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
		a.ephemeralRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
		a.pushRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"))
		a.roomExtraRoutes(httpapi.NewGroup(r, "/_matrix/client/v3", "/_matrix/client/r0"), httpapi.NewGroup(r, "/_matrix/client/v1"))
		a.slidingSyncRoutes(r)
		a.websocketRoutes(r)
	}
	v1 := httpapi.NewGroup(r, "/_matrix/client/v1")
	v1.Handle(http.MethodPost, "/login/get_token", a.noGuests(a.getLoginToken))
	v1.Handle(http.MethodGet, "/register/m.login.registration_token/validity", httpapi.Wrap(a.regTokenValidity))

	admin := httpapi.NewGroup(r, "/_synapse/admin/v1")
	admin.Handle(http.MethodGet, "/register", httpapi.Wrap(a.adminNonce))
	admin.Handle(http.MethodPost, "/register", httpapi.Wrap(a.adminRegister))
	admin.Handle(http.MethodGet, "/registration_tokens", a.admin(a.listRegTokens))
	admin.Handle(http.MethodPost, "/registration_tokens/new", a.admin(a.newRegToken))
	admin.Handle(http.MethodGet, "/registration_tokens/{token}", a.admin(a.getRegToken))
	admin.Handle(http.MethodPut, "/registration_tokens/{token}", a.admin(a.updateRegToken))
	admin.Handle(http.MethodDelete, "/registration_tokens/{token}", a.admin(a.deleteRegToken))
}

// hotRoutes are the endpoints nearly every request asks for, sending and
// syncing. The router tries routes in the order they were added, a pattern
// match each, so these go first (they overlap no other route).
func (a *API) hotRoutes(s *httpapi.Group) {
	s.Handle(http.MethodGet, "/sync", a.auth(a.sync))
	s.Handle(http.MethodPut, "/rooms/{roomId}/send/{eventType}/{txnId}", a.auth(a.send))
}

// legacyRoutes are the endpoints served under both /v3 and /r0.
func (a *API) legacyRoutes(s *httpapi.Group) {
	s.Handle(http.MethodGet, "/login", httpapi.Wrap(a.loginFlows))
	s.Handle(http.MethodPost, "/login", httpapi.Wrap(a.login))
	s.Handle(http.MethodPost, "/refresh", httpapi.Wrap(a.refresh))
	s.Handle(http.MethodPost, "/logout", a.auth(a.logout))
	s.Handle(http.MethodPost, "/logout/all", a.auth(a.logoutAll))
	s.Handle(http.MethodPost, "/register", httpapi.Wrap(a.register))
	s.Handle(http.MethodGet, "/register/available", httpapi.Wrap(a.registerAvailable))
	s.Handle(http.MethodGet, "/account/whoami", a.auth(a.whoami))
	s.Handle(http.MethodPost, "/account/password", a.noGuests(a.changePassword))
	s.Handle(http.MethodPost, "/account/deactivate", a.noGuests(a.deactivate))
	s.Handle(http.MethodGet, "/capabilities", a.auth(a.capabilities))

	s.Handle(http.MethodGet, "/devices", a.auth(a.listDevices))
	s.Handle(http.MethodGet, "/devices/{deviceId}", a.auth(a.getDevice))
	s.Handle(http.MethodPut, "/devices/{deviceId}", a.auth(a.putDevice))
	s.Handle(http.MethodDelete, "/devices/{deviceId}", a.noGuests(a.deleteDevice))
	s.Handle(http.MethodPost, "/delete_devices", a.noGuests(a.deleteDevices))

	s.Handle(http.MethodGet, "/profile/{userId}", httpapi.Wrap(a.getProfile))
	s.Handle(http.MethodGet, "/profile/{userId}/{field}", httpapi.Wrap(a.getProfileField))
	s.Handle(http.MethodPut, "/profile/{userId}/{field}", a.auth(a.putProfileField))
	s.Handle(http.MethodDelete, "/profile/{userId}/{field}", a.auth(a.deleteProfileField))

	s.Handle(http.MethodGet, "/user/{userId}/account_data/{type}", a.auth(a.getAccountData))
	s.Handle(http.MethodPut, "/user/{userId}/account_data/{type}", a.auth(a.putAccountData))
	s.Handle(http.MethodGet, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.auth(a.getRoomAccountData))
	s.Handle(http.MethodPut, "/user/{userId}/rooms/{roomId}/account_data/{type}", a.auth(a.putRoomAccountData))

	s.Handle(http.MethodPost, "/user_directory/search", a.auth(a.searchUsers))
	s.Handle(http.MethodGet, "/user/{userId}/rooms/{roomId}/tags", a.auth(a.getTags))
	s.Handle(http.MethodPut, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.auth(a.putTag))
	s.Handle(http.MethodDelete, "/user/{userId}/rooms/{roomId}/tags/{tag}", a.auth(a.deleteTag))

	s.Handle(http.MethodPost, "/user/{userId}/filter", a.auth(a.createFilter))
	s.Handle(http.MethodGet, "/user/{userId}/filter/{filterId}", a.auth(a.getFilter))
}
