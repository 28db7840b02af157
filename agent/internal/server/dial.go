package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"sandbar/agent/internal/apierr"
)

// dialTimeout bounds each connection attempt of GET /dial.
const dialTimeout = 3 * time.Second

// copyBufSize is the buffer each direction of a tunnel copies through.
const copyBufSize = 64 << 10

var copyBufs = sync.Pool{New: func() interface{} {
	b := make([]byte, copyBufSize)
	return &b
}}

// switchingProtocols is the whole response to an accepted GET /dial.
const switchingProtocols = "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"

// handleDial connects to a TCP port inside the sandbox and, once something
// accepted the connection, turns the request's connection into a raw byte
// pipe to it (docs/agent-protocol.md, "TCP dial").
func (s *Server) handleDial(w http.ResponseWriter, r *http.Request) {
	if !headerHasToken(r.Header, "Connection", "upgrade") || !headerHasToken(r.Header, "Upgrade", "tcp") {
		writeErr(w, apierr.New(apierr.BadRequest, `GET /dial needs the headers "Connection: Upgrade" and "Upgrade: tcp"`))
		return
	}
	port, err := portParam(r)
	if err != nil {
		writeErr(w, err)
		return
	}
	hj, ok := w.(http.Hijacker)
	if !ok {
		writeErr(w, errors.New("the connection cannot be taken over for a tunnel"))
		return
	}
	target, err := dialPort(r.Context(), port)
	if err != nil {
		if r.Context().Err() != nil {
			return // the client went away while we dialled
		}
		writeErr(w, err)
		return
	}
	conn, brw, err := hj.Hijack()
	if err != nil {
		target.Close()
		writeErr(w, err)
		return
	}
	// The tunnel is long-lived: no deadline the HTTP server set may stay
	// (net/http clears them on hijack today; this does not rely on it).
	_ = conn.SetDeadline(time.Time{})
	// Bytes the client sent after the request head (it need not wait for
	// the 101) may already sit in the server's read buffer.
	var pending []byte
	if n := brw.Reader.Buffered(); n > 0 {
		b, _ := brw.Reader.Peek(n)
		pending = append([]byte(nil), b...)
	}
	if _, err := io.WriteString(conn, switchingProtocols); err != nil {
		conn.Close()
		target.Close()
		return
	}
	pipe(conn, target, pending)
}

// headerHasToken reports whether the comma-separated values of header name
// contain token (case-insensitive).
func headerHasToken(h http.Header, name, token string) bool {
	for _, v := range h.Values(name) {
		for _, t := range strings.Split(v, ",") {
			if strings.EqualFold(strings.TrimSpace(t), token) {
				return true
			}
		}
	}
	return false
}

// portParam reads the port query parameter, 1-65535.
func portParam(r *http.Request) (int, error) {
	v := r.URL.Query().Get("port")
	n, err := strconv.ParseUint(v, 10, 32)
	if err != nil || n < 1 || n > 65535 {
		return 0, apierr.New(apierr.BadRequest, "port must be an integer 1-65535, got %q", v)
	}
	return int(n), nil
}

// dialHosts lists the addresses GET /dial tries, in order: IPv4 and IPv6
// loopback, then every non-loopback IPv4 address of the sandbox's
// interfaces (for services bound to one interface only).
func dialHosts() []string {
	hosts := []string{"127.0.0.1", "::1"}
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return hosts
	}
	seen := map[string]bool{}
	for _, a := range addrs {
		ipn, ok := a.(*net.IPNet)
		if !ok {
			continue
		}
		ip4 := ipn.IP.To4()
		if ip4 == nil || ip4.IsLoopback() || ip4.IsUnspecified() {
			continue
		}
		if h := ip4.String(); !seen[h] {
			seen[h] = true
			hosts = append(hosts, h)
		}
	}
	return hosts
}

// dialPort connects to port on the first of dialHosts that accepts. The
// connection has TCP_NODELAY set.
func dialPort(ctx context.Context, port int) (net.Conn, error) {
	d := net.Dialer{Timeout: dialTimeout}
	p := strconv.Itoa(port)
	var reasons []string
	for _, host := range dialHosts() {
		c, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, p))
		if err == nil {
			if tc, ok := c.(*net.TCPConn); ok {
				_ = tc.SetNoDelay(true)
			}
			return c, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		reason := dialReason(err)
		dup := false
		for _, r := range reasons {
			dup = dup || r == reason
		}
		if !dup {
			reasons = append(reasons, reason)
		}
	}
	return nil, apierr.New(apierr.DialFailed, "nothing accepted a connection on port %d (%s)", port, strings.Join(reasons, "; "))
}

// dialReason is the short cause of a failed dial ("connection refused").
func dialReason(err error) string {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Sprintf("no answer within %v", dialTimeout)
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		return errno.Error()
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Err != nil {
		return op.Err.Error()
	}
	return err.Error()
}

type closeWriter interface{ CloseWrite() error }

// Wrappers that hide ReadFrom/WriteTo so io.CopyBuffer really copies
// through the given buffer.
type (
	readerOnly struct{ io.Reader }
	writerOnly struct{ io.Writer }
)

// pipe copies bytes both ways between client and target, pending first
// (client bytes that arrived before the pipe started), and returns once
// both connections are closed. When one side reaches EOF the other side's
// write half is shut down (half-close) and the other direction goes on;
// both connections are closed when both directions have ended or when
// either fails.
func pipe(client, target net.Conn, pending []byte) {
	var once sync.Once
	closeBoth := func() {
		once.Do(func() {
			client.Close()
			target.Close()
		})
	}
	oneWay := func(dst, src net.Conn, pending []byte, done *sync.WaitGroup) {
		defer done.Done()
		if len(pending) > 0 {
			if _, err := dst.Write(pending); err != nil {
				closeBoth()
				return
			}
		}
		buf := copyBufs.Get().(*[]byte)
		_, err := io.CopyBuffer(writerOnly{dst}, readerOnly{src}, *buf)
		copyBufs.Put(buf)
		if err != nil {
			closeBoth()
			return
		}
		// src reached EOF: pass the half-close on to dst.
		cw, ok := dst.(closeWriter)
		if !ok || cw.CloseWrite() != nil {
			closeBoth()
		}
	}
	var done sync.WaitGroup
	done.Add(2)
	go oneWay(target, client, pending, &done)
	go oneWay(client, target, nil, &done)
	done.Wait()
	closeBoth()
}
