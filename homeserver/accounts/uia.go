package accounts

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"time"

	"github.com/parley-chat/parley/internal/mxerr"
	"github.com/parley-chat/parley/storage"
)

// UIA stage types.
const (
	StageDummy             = "m.login.dummy"
	StagePassword          = "m.login.password"
	StageRegistrationToken = "m.login.registration_token"
)

// UIASessionLifetime bounds how long a user-interactive session lasts.
const UIASessionLifetime = 15 * time.Minute

// Flow is one way through user-interactive authentication.
type Flow struct {
	Stages []string `json:"stages"`
}

// UIARequest is one round of user-interactive authentication.
type UIARequest struct {
	// Auth is the request's "auth" object, nil when absent.
	Auth json.RawMessage
	// Fingerprint identifies the operation (method and path); a session
	// cannot be reused for another operation.
	Fingerprint string
	// UserID is the authenticated user, "" for registration.
	UserID string
	Flows  []Flow
}

// UIAResult is a completed authentication.
type UIAResult struct {
	SessionID string
	// RegistrationToken is the token a registration flow used.
	RegistrationToken string
	// UserID is whom a password stage authenticated.
	UserID string
}

type authDict struct {
	Type       string `json:"type"`
	Session    string `json:"session"`
	Password   string `json:"password"`
	Token      string `json:"token"`
	User       string `json:"user"`
	Identifier *struct {
		Type string `json:"type"`
		User string `json:"user"`
	} `json:"identifier"`
}

type sessionData struct {
	RegistrationToken string `json:"registration_token,omitempty"`
	UserID            string `json:"user_id,omitempty"`
}

// UserInteractive runs one round of user-interactive authentication. It
// returns the result once a flow is complete, or a 401 error carrying
// flows, session and completed stages for the client's next step.
func (e *Engine) UserInteractive(ctx context.Context, req UIARequest) (*UIAResult, error) {
	var auth authDict
	if len(req.Auth) > 0 && string(req.Auth) != "null" {
		if err := json.Unmarshal(req.Auth, &auth); err != nil {
			return nil, mxerr.BadJSON("auth must be an object")
		}
	}
	sess, err := e.uiaSession(ctx, req, auth.Session)
	if err != nil {
		return nil, err
	}
	var completed []string
	_ = json.Unmarshal([]byte(sess.Completed), &completed)
	var data sessionData
	_ = json.Unmarshal([]byte(sess.Data), &data)

	var stageErr *mxerr.Error
	if auth.Type != "" && !slices.Contains(completed, auth.Type) {
		if !nextStageAllowed(req.Flows, completed, auth.Type) {
			stageErr = mxerr.Forbidden("Stage %s is not the next step of any flow", auth.Type)
		} else if stageErr, err = e.runStage(ctx, req, auth, &data); err != nil {
			return nil, err
		} else if stageErr == nil {
			completed = append(completed, auth.Type)
			c, _ := json.Marshal(completed)
			d, _ := json.Marshal(data)
			if err := e.store.UIASessionUpdate(ctx, sess.ID, string(c), string(d)); err != nil {
				return nil, err
			}
		}
	}
	if flowComplete(req.Flows, completed) {
		return &UIAResult{SessionID: sess.ID, RegistrationToken: data.RegistrationToken, UserID: data.UserID}, nil
	}
	return nil, challenge(req.Flows, sess.ID, completed, stageErr)
}

// UIADone ends a session once the operation it guarded has succeeded.
func (e *Engine) UIADone(ctx context.Context, sessionID string) {
	if err := e.store.UIASessionDelete(ctx, sessionID); err != nil {
		e.log.WarnContext(ctx, "could not delete UIA session", "err", err)
	}
}

func (e *Engine) uiaSession(ctx context.Context, req UIARequest, id string) (storage.UIASession, error) {
	if id == "" {
		s := storage.UIASession{ID: randomString(18), UserID: req.UserID, Fingerprint: req.Fingerprint,
			Completed: "[]", Data: "{}", CreatedTS: e.nowMS()}
		return s, e.store.UIASessionCreate(ctx, s)
	}
	s, err := e.store.UIASessionGet(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return s, mxerr.Unknown("Unknown or expired UIA session %q", id)
	}
	if err != nil {
		return s, err
	}
	if e.now().Sub(time.UnixMilli(s.CreatedTS)) > UIASessionLifetime {
		return s, mxerr.Unknown("UIA session %q has expired", id)
	}
	if s.Fingerprint != req.Fingerprint || s.UserID != req.UserID {
		return s, mxerr.Forbidden("Requested operation has changed during the UI authentication session")
	}
	return s, nil
}

// runStage checks one stage; a non-nil *mxerr.Error is a failed attempt
// the client may retry.
func (e *Engine) runStage(ctx context.Context, req UIARequest, a authDict, data *sessionData) (*mxerr.Error, error) {
	switch a.Type {
	case StageDummy:
		return nil, nil
	case StagePassword:
		user := a.User
		if a.Identifier != nil {
			if a.Identifier.Type != "m.id.user" {
				return mxerr.Unknown("Only m.id.user identifiers are supported"), nil
			}
			user = a.Identifier.User
		}
		userID, err := e.ParseLocalUser(user)
		if err != nil {
			me, _ := mxerr.As(err)
			return me, nil
		}
		if req.UserID != "" && userID != req.UserID {
			return mxerr.Forbidden("Password stage must authenticate the requesting user"), nil
		}
		if err := e.CheckPassword(ctx, userID, a.Password); err != nil {
			if me, ok := mxerr.As(err); ok {
				return me, nil
			}
			return nil, err
		}
		data.UserID = userID
		return nil, nil
	case StageRegistrationToken:
		if a.Token == "" || len(a.Token) > 64 {
			return mxerr.MissingParam("A registration token is required"), nil
		}
		ok, err := e.store.RegTokenReserve(ctx, a.Token, e.nowMS())
		if err != nil {
			return nil, err
		}
		if !ok {
			return mxerr.Custom(http.StatusUnauthorized, "M_FORBIDDEN", "Invalid or exhausted registration token"), nil
		}
		data.RegistrationToken = a.Token
		return nil, nil
	}
	return mxerr.Unrecognized(http.StatusBadRequest, "Unknown auth type %q", a.Type), nil
}

func nextStageAllowed(flows []Flow, completed []string, stage string) bool {
	for _, f := range flows {
		if len(f.Stages) > len(completed) && slices.Equal(f.Stages[:len(completed)], completed) && f.Stages[len(completed)] == stage {
			return true
		}
	}
	return false
}

func flowComplete(flows []Flow, completed []string) bool {
	for _, f := range flows {
		if slices.Equal(f.Stages, completed) {
			return true
		}
	}
	return false
}

// challenge is the 401 answer that tells a client how to authenticate.
func challenge(flows []Flow, session string, completed []string, failure *mxerr.Error) *mxerr.Error {
	e := &mxerr.Error{Status: http.StatusUnauthorized, Extra: map[string]any{
		"flows":   flows,
		"params":  map[string]any{},
		"session": session,
	}}
	if len(completed) > 0 {
		e.Extra["completed"] = completed
	}
	if failure != nil {
		e.Code, e.Msg = failure.Code, failure.Msg
	}
	return e
}

// ExpireSessions deletes old UIA sessions and releases the registration
// tokens that unfinished registrations reserved; it also expires login
// tokens and admin nonces.
func (e *Engine) ExpireSessions(ctx context.Context) (int64, error) {
	now := e.now()
	cutoff := now.Add(-UIASessionLifetime).UnixMilli()
	rows, err := e.db.Read().Query(ctx, `SELECT data FROM uia_sessions WHERE created_ts < $1`, cutoff)
	if err != nil {
		return 0, err
	}
	var tokens []string
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			rows.Close()
			return 0, err
		}
		var sd sessionData
		if json.Unmarshal([]byte(d), &sd) == nil && sd.RegistrationToken != "" {
			tokens = append(tokens, sd.RegistrationToken)
		}
	}
	rows.Close()
	for _, t := range tokens {
		if _, err := e.db.Exec(ctx, `UPDATE registration_tokens SET pending = pending - 1 WHERE token = $1 AND pending > 0`, t); err != nil {
			return 0, err
		}
	}
	return e.store.ExpireOld(ctx, now, UIASessionLifetime)
}
