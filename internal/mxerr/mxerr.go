// Package mxerr defines the typed errors that engines return and the API
// layer turns into Matrix error bodies ({"errcode": "M_…", "error": "…"}).
//
// It sits below every other package so that engines can say "this is an
// M_FORBIDDEN" without knowing anything about HTTP.
package mxerr

import (
	"errors"
	"fmt"
	"net/http"
)

// Error is a client-safe Matrix error: a code, a message and the HTTP status
// the API edge answers with. Cause carries the internal reason, which is
// logged but never sent to the client.
type Error struct {
	Status int
	Code   string
	Msg    string
	// Extra holds additional top-level fields of the error body
	// (retry_after_ms, soft_logout, flows, …).
	Extra map[string]any
	Cause error
}

func (e *Error) Error() string {
	if e.Cause != nil {
		return fmt.Sprintf("%s: %s: %v", e.Code, e.Msg, e.Cause)
	}
	return e.Code + ": " + e.Msg
}

// Unwrap returns the internal cause.
func (e *Error) Unwrap() error { return e.Cause }

// With returns a copy of e carrying an extra body field.
func (e *Error) With(key string, value any) *Error {
	c := *e
	c.Extra = make(map[string]any, len(e.Extra)+1)
	for k, v := range e.Extra {
		c.Extra[k] = v
	}
	c.Extra[key] = value
	return &c
}

// Wrap returns a copy of e with an internal cause attached.
func (e *Error) Wrap(cause error) *Error {
	c := *e
	c.Cause = cause
	return &c
}

// As extracts a *Error from err's chain.
func As(err error) (*Error, bool) {
	var e *Error
	ok := errors.As(err, &e)
	return e, ok
}

// IsCode reports whether err is a Matrix error with the given errcode.
func IsCode(err error, code string) bool {
	e, ok := As(err)
	return ok && e.Code == code
}

func newf(status int, code, format string, args ...any) *Error {
	return &Error{Status: status, Code: code, Msg: fmt.Sprintf(format, args...)}
}

// Constructors for the errcodes the specification defines, each with the
// status the specification pairs it with.

// Forbidden is 403 M_FORBIDDEN.
func Forbidden(format string, args ...any) *Error {
	return newf(http.StatusForbidden, "M_FORBIDDEN", format, args...)
}

// NotFound is 404 M_NOT_FOUND.
func NotFound(format string, args ...any) *Error {
	return newf(http.StatusNotFound, "M_NOT_FOUND", format, args...)
}

// BadJSON is 400 M_BAD_JSON.
func BadJSON(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_BAD_JSON", format, args...)
}

// NotJSON is 400 M_NOT_JSON.
func NotJSON(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_NOT_JSON", format, args...)
}

// MissingParam is 400 M_MISSING_PARAM.
func MissingParam(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_MISSING_PARAM", format, args...)
}

// InvalidParam is 400 M_INVALID_PARAM.
func InvalidParam(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_INVALID_PARAM", format, args...)
}

// Unrecognized is M_UNRECOGNIZED with the given status (404 or 405).
func Unrecognized(status int, format string, args ...any) *Error {
	return newf(status, "M_UNRECOGNIZED", format, args...)
}

// UnknownToken is 401 M_UNKNOWN_TOKEN.
func UnknownToken(softLogout bool, format string, args ...any) *Error {
	e := newf(http.StatusUnauthorized, "M_UNKNOWN_TOKEN", format, args...)
	if softLogout {
		e.Extra = map[string]any{"soft_logout": true}
	}
	return e
}

// MissingToken is 401 M_MISSING_TOKEN.
func MissingToken(format string, args ...any) *Error {
	return newf(http.StatusUnauthorized, "M_MISSING_TOKEN", format, args...)
}

// UserInUse is 400 M_USER_IN_USE.
func UserInUse(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_USER_IN_USE", format, args...)
}

// InvalidUsername is 400 M_INVALID_USERNAME.
func InvalidUsername(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_INVALID_USERNAME", format, args...)
}

// WeakPassword is 400 M_WEAK_PASSWORD.
func WeakPassword(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_WEAK_PASSWORD", format, args...)
}

// LimitExceeded is 429 M_LIMIT_EXCEEDED with retry_after_ms.
func LimitExceeded(retryAfterMS int64) *Error {
	e := newf(http.StatusTooManyRequests, "M_LIMIT_EXCEEDED", "Too many requests")
	e.Extra = map[string]any{"retry_after_ms": retryAfterMS}
	return e
}

// TooLarge is 413 M_TOO_LARGE.
func TooLarge(format string, args ...any) *Error {
	return newf(http.StatusRequestEntityTooLarge, "M_TOO_LARGE", format, args...)
}

// GuestAccessForbidden is 403 M_GUEST_ACCESS_FORBIDDEN.
func GuestAccessForbidden(format string, args ...any) *Error {
	return newf(http.StatusForbidden, "M_GUEST_ACCESS_FORBIDDEN", format, args...)
}

// UserDeactivated is 403 M_USER_DEACTIVATED.
func UserDeactivated(format string, args ...any) *Error {
	return newf(http.StatusForbidden, "M_USER_DEACTIVATED", format, args...)
}

// Unknown is 400 M_UNKNOWN.
func Unknown(format string, args ...any) *Error {
	return newf(http.StatusBadRequest, "M_UNKNOWN", format, args...)
}

// Custom builds an error with any status and code.
func Custom(status int, code, format string, args ...any) *Error {
	return newf(status, code, format, args...)
}
