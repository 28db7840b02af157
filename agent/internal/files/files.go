// Package files serves PUT/GET/HEAD /files: atomic uploads and streamed,
// range-capable downloads of files in the sandbox.
package files

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"sandbar/agent/internal/apierr"
)

// DefaultMode is the mode of uploaded files when the request sets none.
const DefaultMode = 0o644

// PathFrom returns the cleaned absolute path in the request's ?path=.
func PathFrom(r *http.Request) (string, error) {
	p := r.URL.Query().Get("path")
	if p == "" {
		return "", apierr.New(apierr.BadRequest, "query parameter path is required")
	}
	if !filepath.IsAbs(p) {
		return "", apierr.New(apierr.BadRequest, "path %q is not absolute", p)
	}
	return filepath.Clean(p), nil
}

// parseMode parses ?mode= (octal, e.g. 0755 or 755).
func parseMode(s string) (os.FileMode, error) {
	if s == "" {
		return DefaultMode, nil
	}
	v, err := strconv.ParseUint(s, 8, 32)
	if err != nil || v > 0o7777 {
		return 0, apierr.New(apierr.BadRequest, "mode %q is not an octal file mode", s)
	}
	m := os.FileMode(v & 0o777)
	if v&syscall.S_ISUID != 0 {
		m |= os.ModeSetuid
	}
	if v&syscall.S_ISGID != 0 {
		m |= os.ModeSetgid
	}
	if v&syscall.S_ISVTX != 0 {
		m |= os.ModeSticky
	}
	return m, nil
}

// fsError maps a filesystem error to the protocol's error codes.
func fsError(err error) error {
	code := apierr.Internal
	switch {
	case errors.Is(err, syscall.ENOSPC), errors.Is(err, syscall.EDQUOT):
		code = apierr.NoSpace
	case errors.Is(err, syscall.EACCES), errors.Is(err, syscall.EPERM), errors.Is(err, syscall.EROFS):
		code = apierr.PermissionDenied
	case errors.Is(err, syscall.ENOENT):
		code = apierr.FileNotFound
	case errors.Is(err, syscall.ENOTDIR):
		code = apierr.NotADirectory
	case errors.Is(err, syscall.EISDIR):
		code = apierr.IsADirectory
	case errors.Is(err, syscall.ENAMETOOLONG), errors.Is(err, syscall.ELOOP), errors.Is(err, syscall.EINVAL):
		code = apierr.BadRequest
	}
	return &apierr.Error{Code: code, Message: err.Error(), Err: err}
}

// PutResult is the response of PUT /files.
type PutResult struct {
	Size int64 `json:"size"`
}

// Put writes the request body to path: parent directories are created
// (0755), the data goes to a temporary file beside path which is then
// renamed over it, so readers never see a partial file.
func Put(r *http.Request, path string) (PutResult, error) {
	mode, err := parseMode(r.URL.Query().Get("mode"))
	if err != nil {
		return PutResult{}, err
	}
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return PutResult{}, apierr.New(apierr.IsADirectory, "%s is a directory", path)
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return PutResult{}, fsError(err)
	}
	tmp, err := os.CreateTemp(dir, ".sandbar-put-*")
	if err != nil {
		return PutResult{}, fsError(err)
	}
	committed := false
	defer func() {
		if !committed {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	n, err := io.Copy(tmp, r.Body)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) || errors.Is(err, syscall.ENOSPC) || errors.Is(err, syscall.EDQUOT) {
			return PutResult{}, fsError(err) // a write to the file failed
		}
		return PutResult{}, apierr.Wrap(apierr.BadRequest, err, "read request body")
	}
	if err := tmp.Chmod(mode); err != nil {
		return PutResult{}, fsError(err)
	}
	if err := tmp.Close(); err != nil {
		return PutResult{}, fsError(err) // delayed write errors (e.g. ENOSPC on NFS)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return PutResult{}, fsError(fmt.Errorf("rename into place: %w", err))
	}
	committed = true
	return PutResult{Size: n}, nil
}
