// Package server exposes the agent's HTTP API (docs/agent-protocol.md):
// routing, bearer-token auth and the mapping of errors to JSON responses.
package server

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net/http"
	"sort"
	"strings"
	"time"

	"sandbar/agent/internal/apierr"
	"sandbar/agent/internal/exec"
	"sandbar/agent/internal/proc"
	"sandbar/agent/internal/session"
	"sandbar/agent/internal/users"
)

// Version is reported by GET /healthz.
var Version = "0.1.0"

// maxJSONBody bounds JSON request bodies.
const maxJSONBody = 4 << 20

// Config wires the server to the agent's components.
type Config struct {
	Token    string // requests must carry "Authorization: Bearer <Token>"; empty rejects all
	Exec     *exec.Runner
	Sessions *session.Manager
}

// Server is the agent's http.Handler.
type Server struct {
	cfg       Config
	wantToken []byte
}

// New returns the handler.
func New(cfg Config) *Server {
	return &Server{cfg: cfg, wantToken: []byte(cfg.Token)}
}

// NewHTTPServer returns an http.Server for h that does not log to stderr
// and never times out long-lived streams.
func NewHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 30 * time.Second,
		IdleTimeout:       5 * time.Minute,
		ErrorLog:          log.New(io.Discard, "", 0),
	}
}

// authorized compares the bearer token in constant time.
func (s *Server) authorized(r *http.Request) bool {
	const scheme = "bearer "
	h := r.Header.Get("Authorization")
	if len(s.wantToken) == 0 || len(h) < len(scheme) || !strings.EqualFold(h[:len(scheme)], scheme) {
		return false
	}
	return subtle.ConstantTimeCompare([]byte(h[len(scheme):]), s.wantToken) == 1
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if path == "/healthz" && r.Method == http.MethodGet {
		apierr.WriteJSON(w, http.StatusOK, map[string]interface{}{"ok": true, "version": Version})
		return
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", "Bearer")
		apierr.Write(w, apierr.New(apierr.Unauthorized, "missing or invalid bearer token"))
		return
	}
	switch {
	case path == "/exec":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodPost: s.handleExec})
	case path == "/sessions":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodPost: s.handleCreate, http.MethodGet: s.handleList})
	case strings.HasPrefix(path, "/sessions/"):
		s.routeSession(w, r, strings.TrimPrefix(path, "/sessions/"))
	case path == "/files":
		s.route(w, r, map[string]http.HandlerFunc{
			http.MethodPut: s.handlePutFile, http.MethodGet: s.handleGetFile, http.MethodHead: s.handleGetFile,
		})
	case path == "/glob":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodPost: s.handleGlob})
	case path == "/grep":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodPost: s.handleGrep})
	case path == "/dial":
		s.route(w, r, map[string]http.HandlerFunc{http.MethodGet: s.handleDial})
	default:
		apierr.Write(w, apierr.New(apierr.BadRequest, "no route for %s %s", r.Method, path).WithStatus(http.StatusNotFound))
	}
}

// route dispatches on the method; other methods get 405.
func (s *Server) route(w http.ResponseWriter, r *http.Request, byMethod map[string]http.HandlerFunc) {
	if h, ok := byMethod[r.Method]; ok {
		h(w, r)
		return
	}
	allowed := make([]string, 0, len(byMethod))
	for m := range byMethod {
		allowed = append(allowed, m)
	}
	sort.Strings(allowed)
	w.Header().Set("Allow", strings.Join(allowed, ", "))
	apierr.Write(w, apierr.New(apierr.BadRequest, "method %s not allowed on %s", r.Method, r.URL.Path).
		WithStatus(http.StatusMethodNotAllowed))
}

// routeSession handles /sessions/{id}/{action}.
func (s *Server) routeSession(w http.ResponseWriter, r *http.Request, rest string) {
	i := strings.LastIndexByte(rest, '/')
	if i <= 0 {
		apierr.Write(w, apierr.New(apierr.BadRequest, "no route for %s %s", r.Method, r.URL.Path).WithStatus(http.StatusNotFound))
		return
	}
	id, action := rest[:i], rest[i+1:]
	handlers := map[string]func(http.ResponseWriter, *http.Request, *session.Session){
		"stream":      s.handleStream,
		"input":       s.handleInput,
		"close-stdin": s.handleCloseStdin,
		"kill":        s.handleKill,
		"resize":      s.handleResize,
	}
	h, ok := handlers[action]
	if !ok {
		apierr.Write(w, apierr.New(apierr.BadRequest, "no route for %s %s", r.Method, r.URL.Path).WithStatus(http.StatusNotFound))
		return
	}
	method := http.MethodPost
	if action == "stream" {
		method = http.MethodGet
	}
	s.route(w, r, map[string]http.HandlerFunc{method: func(w http.ResponseWriter, r *http.Request) {
		sess, err := s.cfg.Sessions.Get(id)
		if err != nil {
			writeErr(w, err)
			return
		}
		h(w, r, sess)
	}})
}

// toAPIError maps component errors to protocol errors.
func toAPIError(err error) error {
	var e *apierr.Error
	if errors.As(err, &e) {
		return e
	}
	var nf *users.NotFoundError
	if errors.As(err, &nf) {
		// The bare "user 'x' not found in /etc/passwd", without the
		// "exec:"/"session" context the error picked up on the way.
		return &apierr.Error{Code: apierr.UserNotFound, Message: nf.Error(), Err: err}
	}
	code := apierr.Internal
	switch {
	case errors.Is(err, session.ErrNotFound):
		code = apierr.CommandNotFound
	case errors.Is(err, session.ErrExpired):
		code = apierr.SessionExpired
	case errors.Is(err, session.ErrStdinClosed), errors.Is(err, session.ErrNoPTY), errors.Is(err, session.ErrFinished):
		code = apierr.Conflict
	case errors.Is(err, proc.ErrInvalid):
		code = apierr.BadRequest
	}
	return &apierr.Error{Code: code, Message: err.Error(), Err: err}
}

func writeErr(w http.ResponseWriter, err error) {
	apierr.Write(w, toAPIError(err))
}

// decodeJSON reads a JSON object body into v.
func decodeJSON(w http.ResponseWriter, r *http.Request, v interface{}) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxJSONBody))
	if err := dec.Decode(v); err != nil {
		if errors.Is(err, io.EOF) {
			return apierr.New(apierr.BadRequest, "request body must be a JSON object")
		}
		return apierr.New(apierr.BadRequest, "invalid JSON body: %v", err)
	}
	if dec.More() {
		return apierr.New(apierr.BadRequest, "invalid JSON body: trailing data")
	}
	return nil
}

type okResponse struct {
	OK    bool   `json:"ok"`
	Bytes *int64 `json:"bytes,omitempty"`
}
