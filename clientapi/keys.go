package clientapi

import "github.com/parley-chat/parley/internal/httpapi"

// keysRoutes registers the end-to-end encryption endpoints.
func (a *API) keysRoutes(s *httpapi.Group) {}
