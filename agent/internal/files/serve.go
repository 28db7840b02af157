package files

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"strings"
	"syscall"
	"time"

	"sandbar/agent/internal/apierr"
)

// ETag returns the protocol's validator: "<size hex>-<mtime ns hex>".
func ETag(st os.FileInfo) string {
	ns := uint64(st.ModTime().UnixNano())
	return fmt.Sprintf(`"%x-%x"`, st.Size(), ns)
}

func setStatHeaders(h http.Header, st os.FileInfo) {
	h.Set("Content-Length", strconv.FormatInt(st.Size(), 10))
	h.Set("ETag", ETag(st))
	h.Set("Last-Modified", st.ModTime().UTC().Format(http.TimeFormat))
	mode := uint32(st.Mode().Perm())
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		mode = sys.Mode & 0o7777
	}
	h.Set("X-Sandbar-Mode", fmt.Sprintf("%04o", mode))
	typ := "file"
	if st.IsDir() {
		typ = "directory"
	}
	h.Set("X-Sandbar-Type", typ)
}

// Serve answers GET and HEAD /files for path: the body is streamed from the
// file (never held in memory), with single-range, If-Range and
// If-None-Match support. Errors are returned, not written, so the caller
// sends them in the protocol's JSON form; once Serve starts a response it
// returns nil (a failed copy can only be reported by cutting the body).
func Serve(w http.ResponseWriter, r *http.Request, path string) error {
	st, err := os.Stat(path)
	if err != nil {
		return fsError(err)
	}
	head := r.Method == http.MethodHead
	if st.IsDir() {
		if !head {
			return apierr.New(apierr.IsADirectory, "%s is a directory", path)
		}
		setStatHeaders(w.Header(), st)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	if !st.Mode().IsRegular() {
		return apierr.New(apierr.BadRequest, "%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fsError(err)
	}
	defer f.Close()
	if st, err = f.Stat(); err != nil { // the file we actually opened
		return fsError(err)
	}
	h := w.Header()
	setStatHeaders(h, st)
	h.Set("Accept-Ranges", "bytes")
	h.Set("Content-Type", "application/octet-stream")
	etag := h.Get("ETag")

	if inm := r.Header.Get("If-None-Match"); inm != "" && etagListMatches(inm, etag) {
		h.Del("Content-Length")
		h.Del("Content-Type")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}

	size := st.Size()
	start, length, partial := int64(0), size, false
	if rng := r.Header.Get("Range"); rng != "" && ifRangeHolds(r.Header.Get("If-Range"), etag, st.ModTime()) {
		s, n, ok, satisfiable := parseRange(rng, size)
		switch {
		case ok && !satisfiable && size > 0:
			h.Set("Content-Range", fmt.Sprintf("bytes */%d", size))
			return apierr.New(apierr.BadRequest, "range %q not satisfiable for %d bytes", rng, size).
				WithStatus(http.StatusRequestedRangeNotSatisfiable)
		case ok && satisfiable:
			start, length, partial = s, n, true
		}
		// Unparsable or multiple ranges, or an empty file: whole file, 200.
	}
	if !head && start > 0 {
		if _, err := f.Seek(start, io.SeekStart); err != nil {
			return fsError(err)
		}
	}
	status := http.StatusOK
	if partial {
		status = http.StatusPartialContent
		h.Set("Content-Range", fmt.Sprintf("bytes %d-%d/%d", start, start+length-1, size))
		h.Set("Content-Length", strconv.FormatInt(length, 10))
	}
	w.WriteHeader(status)
	if !head {
		// The file may shrink under us; the client then sees a short body.
		_, _ = io.CopyN(w, f, length)
	}
	return nil
}

// etagListMatches implements If-None-Match's weak comparison.
func etagListMatches(list, etag string) bool {
	list = strings.TrimSpace(list)
	if list == "*" {
		return true
	}
	want := strings.TrimPrefix(etag, "W/")
	for _, candidate := range strings.Split(list, ",") {
		if strings.TrimPrefix(strings.TrimSpace(candidate), "W/") == want {
			return true
		}
	}
	return false
}

// ifRangeHolds reports whether a Range request may be honoured: no If-Range,
// or an If-Range that strongly matches the ETag or exactly the Last-Modified.
func ifRangeHolds(ifRange, etag string, mod time.Time) bool {
	ifRange = strings.TrimSpace(ifRange)
	switch {
	case ifRange == "":
		return true
	case strings.HasPrefix(ifRange, `"`):
		return ifRange == etag
	case strings.HasPrefix(ifRange, "W/"):
		return false // weak validators never match for If-Range
	}
	t, err := http.ParseTime(ifRange)
	return err == nil && t.Unix() == mod.Unix()
}

// parseRange parses a single "bytes=" range against size. ok is false for
// headers to ignore (other units, bad syntax, several ranges); satisfiable
// is false when the range starts beyond the end (416).
func parseRange(header string, size int64) (start, length int64, ok, satisfiable bool) {
	spec := strings.TrimSpace(header)
	if !strings.HasPrefix(spec, "bytes=") {
		return 0, 0, false, false
	}
	spec = strings.TrimSpace(spec[len("bytes="):])
	if strings.Contains(spec, ",") {
		return 0, 0, false, false
	}
	dash := strings.IndexByte(spec, '-')
	if dash < 0 {
		return 0, 0, false, false
	}
	first, last := strings.TrimSpace(spec[:dash]), strings.TrimSpace(spec[dash+1:])
	if first == "" {
		// Suffix range: the last n bytes.
		n, err := strconv.ParseInt(last, 10, 64)
		if err != nil || n < 0 {
			return 0, 0, false, false
		}
		if n == 0 {
			return 0, 0, true, false
		}
		if n > size {
			n = size
		}
		return size - n, n, true, size > 0
	}
	s, err := strconv.ParseInt(first, 10, 64)
	if err != nil || s < 0 {
		return 0, 0, false, false
	}
	e := size - 1
	if last != "" {
		if e, err = strconv.ParseInt(last, 10, 64); err != nil || e < s {
			return 0, 0, false, false
		}
		if e >= size {
			e = size - 1
		}
	}
	if s >= size {
		return 0, 0, true, false
	}
	return s, e - s + 1, true, true
}
