package server

import (
	"errors"
	"net/http"
	"strconv"

	"sandbar/agent/internal/apierr"
	"sandbar/agent/internal/exec"
	"sandbar/agent/internal/files"
	"sandbar/agent/internal/session"
)

func (s *Server) handleExec(w http.ResponseWriter, r *http.Request) {
	var req exec.Request
	if err := decodeJSON(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	res, err := s.cfg.Exec.Run(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, res)
}

type createResponse struct {
	CommandID string `json:"command_id"`
	Pid       int    `json:"pid"`
	Created   bool   `json:"created"`
}

// createBody is the body of POST /sessions: the session, plus what to do
// right after creating it in the same request.
type createBody struct {
	session.CreateRequest
	// CloseStdin closes the new session's stdin at once (as POST
	// /sessions/{id}/close-stdin would); ignored for an existing session.
	CloseStdin bool `json:"close_stdin,omitempty"`
	// Stream answers with the session's stream from offset 0 instead of
	// JSON (as GET /sessions/{id}/stream would), saving a round trip.
	Stream bool `json:"stream,omitempty"`
}

func (s *Server) handleCreate(w http.ResponseWriter, r *http.Request) {
	var req createBody
	if err := decodeJSON(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	sess, created, err := s.cfg.Sessions.Create(req.CreateRequest)
	if err != nil {
		writeErr(w, err)
		return
	}
	if created && req.CloseStdin {
		// A command that already exited has no stdin left to close.
		if err := sess.CloseStdin(); err != nil && !errors.Is(err, session.ErrFinished) {
			writeErr(w, err)
			return
		}
	}
	if req.Stream {
		h := w.Header()
		h.Set("X-Sandbar-Created", strconv.FormatBool(created))
		h.Set("X-Sandbar-Pid", strconv.Itoa(sess.Pid()))
		s.stream(w, r, sess, 0, 0)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, createResponse{CommandID: sess.ID(), Pid: sess.Pid(), Created: created})
}

func (s *Server) handleList(w http.ResponseWriter, r *http.Request) {
	apierr.WriteJSON(w, http.StatusOK, map[string]interface{}{"sessions": s.cfg.Sessions.List()})
}

func offsetParam(r *http.Request, name string) (uint64, error) {
	v := r.URL.Query().Get(name)
	if v == "" {
		return 0, nil
	}
	n, err := strconv.ParseUint(v, 10, 64)
	if err != nil {
		return 0, apierr.New(apierr.BadRequest, "%s must be a non-negative integer", name)
	}
	return n, nil
}

func (s *Server) handleStream(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	outOff, err := offsetParam(r, "stdout_offset")
	if err == nil {
		var errOff uint64
		if errOff, err = offsetParam(r, "stderr_offset"); err == nil {
			s.stream(w, r, sess, outOff, errOff)
			return
		}
	}
	writeErr(w, err)
}

var errNoFlusher = errors.New("response writer cannot flush")

func (s *Server) stream(w http.ResponseWriter, r *http.Request, sess *session.Session, outOff, errOff uint64) {
	flusher, ok := w.(http.Flusher)
	if !ok {
		writeErr(w, errNoFlusher)
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	// Errors past this point (client gone, write failure) end the body; the
	// client notices the missing exit frame and reconnects from its offsets.
	_ = sess.Stream(r.Context(), w, flusher.Flush, outOff, errOff)
}

func (s *Server) handleInput(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	n, err := sess.Input(r.Body)
	if err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, okResponse{OK: true, Bytes: &n})
}

func (s *Server) handleCloseStdin(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	if err := sess.CloseStdin(); err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, okResponse{OK: true})
}

func (s *Server) handleKill(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	sess.Kill()
	apierr.WriteJSON(w, http.StatusOK, okResponse{OK: true})
}

type resizeRequest struct {
	Cols int `json:"cols"`
	Rows int `json:"rows"`
}

func (s *Server) handleResize(w http.ResponseWriter, r *http.Request, sess *session.Session) {
	var req resizeRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	if req.Cols < 1 || req.Cols > 65535 || req.Rows < 1 || req.Rows > 65535 {
		writeErr(w, apierr.New(apierr.BadRequest, "cols and rows must be 1-65535"))
		return
	}
	if err := sess.Resize(uint16(req.Cols), uint16(req.Rows)); err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, okResponse{OK: true})
}

func (s *Server) handlePutFile(w http.ResponseWriter, r *http.Request) {
	path, err := files.PathFrom(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	res, err := files.Put(r, path)
	if err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, res)
}

func (s *Server) handleGetFile(w http.ResponseWriter, r *http.Request) {
	path, err := files.PathFrom(r)
	if err == nil {
		err = files.Serve(w, r, path)
	}
	if err != nil {
		writeErr(w, err)
	}
}

func (s *Server) handleGlob(w http.ResponseWriter, r *http.Request) {
	var req files.GlobRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	res, err := files.Glob(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, res)
}

func (s *Server) handleGrep(w http.ResponseWriter, r *http.Request) {
	var req files.GrepRequest
	if err := decodeJSON(w, r, &req); err != nil {
		writeErr(w, err)
		return
	}
	res, err := files.Grep(r.Context(), req)
	if err != nil {
		writeErr(w, err)
		return
	}
	apierr.WriteJSON(w, http.StatusOK, res)
}
