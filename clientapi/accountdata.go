package clientapi

import (
	"net/http"
	"strings"

	"github.com/parley-chat/parley/internal/httpapi"
	"github.com/parley-chat/parley/internal/mxerr"
)

func ownUser(r *http.Request, d *deviceT) error {
	if httpapi.Var(r, "userId") != d.UserID {
		return mxerr.Forbidden("You can only access your own data")
	}
	return nil
}

func roomVar(r *http.Request) (string, error) {
	id := httpapi.Var(r, "roomId")
	if !strings.HasPrefix(id, "!") || len(id) > 255 {
		return "", mxerr.InvalidParam("%q is not a valid room ID", id)
	}
	return id, nil
}

func (a *API) getAccountData(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	c, err := a.accounts.AccountData(r.Context(), d.UserID, "", httpapi.Var(r, "type"))
	if err != nil {
		return err
	}
	return httpapi.RawJSON(w, http.StatusOK, c)
}

func (a *API) putAccountData(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	if err := a.accounts.SetAccountData(r.Context(), d.UserID, "", httpapi.Var(r, "type"), body); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) getRoomAccountData(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	room, err := roomVar(r)
	if err != nil {
		return err
	}
	c, err := a.accounts.AccountData(r.Context(), d.UserID, room, httpapi.Var(r, "type"))
	if err != nil {
		return err
	}
	return httpapi.RawJSON(w, http.StatusOK, c)
}

func (a *API) putRoomAccountData(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	room, err := roomVar(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	if err := a.accounts.SetAccountData(r.Context(), d.UserID, room, httpapi.Var(r, "type"), body); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) createFilter(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	id, err := a.accounts.CreateFilter(r.Context(), d.UserID, body)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]string{"filter_id": id})
}

func (a *API) getFilter(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	f, err := a.accounts.Filter(r.Context(), d.UserID, httpapi.Var(r, "filterId"))
	if err != nil {
		return err
	}
	return httpapi.RawJSON(w, http.StatusOK, f)
}

func (a *API) getTags(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	room, err := roomVar(r)
	if err != nil {
		return err
	}
	tags, err := a.accounts.Tags(r.Context(), d.UserID, room)
	if err != nil {
		return err
	}
	return httpapi.JSON(w, http.StatusOK, map[string]any{"tags": tags})
}

func (a *API) putTag(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	room, err := roomVar(r)
	if err != nil {
		return err
	}
	body, err := httpapi.ReadObject(r)
	if err != nil {
		return err
	}
	if len(body) == 0 {
		body = []byte("{}")
	}
	if err := a.accounts.SetTag(r.Context(), d.UserID, room, httpapi.Var(r, "tag"), body); err != nil {
		return err
	}
	return httpapi.OK(w)
}

func (a *API) deleteTag(w http.ResponseWriter, r *http.Request, d *deviceT) error {
	if err := ownUser(r, d); err != nil {
		return err
	}
	room, err := roomVar(r)
	if err != nil {
		return err
	}
	if err := a.accounts.SetTag(r.Context(), d.UserID, room, httpapi.Var(r, "tag"), nil); err != nil {
		return err
	}
	return httpapi.OK(w)
}
