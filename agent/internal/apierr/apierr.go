// Package apierr defines the agent's JSON error responses:
// {"error": "<Code>", "message": "..."}.
package apierr

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
)

// Error codes and their HTTP statuses, as listed in the protocol.
const (
	BadRequest       = "BadRequest"
	Unauthorized     = "Unauthorized"
	FileNotFound     = "FileNotFound"
	IsADirectory     = "IsADirectory"
	NotADirectory    = "NotADirectory"
	CommandNotFound  = "CommandNotFound"
	SessionExpired   = "SessionExpired"
	Conflict         = "Conflict"
	NoSpace          = "NoSpace"
	PermissionDenied = "PermissionDenied"
	DialFailed       = "DialFailed"
	UserNotFound     = "UserNotFound"
	Internal         = "Internal"
)

var statuses = map[string]int{
	BadRequest:       http.StatusBadRequest,
	Unauthorized:     http.StatusUnauthorized,
	FileNotFound:     http.StatusNotFound,
	IsADirectory:     http.StatusBadRequest,
	NotADirectory:    http.StatusBadRequest,
	CommandNotFound:  http.StatusNotFound,
	SessionExpired:   http.StatusGone,
	Conflict:         http.StatusConflict,
	NoSpace:          http.StatusInsufficientStorage,
	PermissionDenied: http.StatusForbidden,
	DialFailed:       http.StatusBadGateway,
	UserNotFound:     http.StatusBadRequest,
	Internal:         http.StatusInternalServerError,
}

// Error is an error with a protocol code. Status overrides the code's
// default HTTP status when non-zero (e.g. 416 or 405, which have no code).
type Error struct {
	Code    string
	Message string
	Status  int
	Err     error
}

func (e *Error) Error() string {
	if e.Err != nil {
		return e.Code + ": " + e.Message + ": " + e.Err.Error()
	}
	return e.Code + ": " + e.Message
}

func (e *Error) Unwrap() error { return e.Err }

// HTTPStatus returns the status the error is sent with.
func (e *Error) HTTPStatus() int {
	if e.Status != 0 {
		return e.Status
	}
	if s, ok := statuses[e.Code]; ok {
		return s
	}
	return http.StatusInternalServerError
}

// New returns an *Error with a formatted message.
func New(code, format string, args ...interface{}) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

// Wrap returns an *Error with the given code whose message is msg: err.
func Wrap(code string, err error, msg string) *Error {
	return &Error{Code: code, Message: msg + ": " + err.Error(), Err: err}
}

// WithStatus returns a copy of e sent with status.
func (e *Error) WithStatus(status int) *Error {
	c := *e
	c.Status = status
	return &c
}

type body struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// Write sends err as a JSON error. Errors that are not *Error become 500
// Internal.
func Write(w http.ResponseWriter, err error) {
	var e *Error
	if !errors.As(err, &e) {
		e = &Error{Code: Internal, Message: err.Error()}
	}
	h := w.Header()
	// Drop headers describing a file the error replaces (Content-Range
	// stays: a 416 carries "bytes */size").
	for _, k := range []string{"ETag", "Last-Modified", "Content-Length", "Accept-Ranges", "X-Sandbar-Mode", "X-Sandbar-Type"} {
		h.Del(k)
	}
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(e.HTTPStatus())
	_ = json.NewEncoder(w).Encode(body{Error: e.Code, Message: e.Message})
}

// WriteJSON sends v with the given status.
func WriteJSON(w http.ResponseWriter, status int, v interface{}) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}
