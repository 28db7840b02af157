package server

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"math/rand"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"
)

// tunnel is the client end of an accepted GET /dial.
type tunnel struct {
	*net.TCPConn
	r *bufio.Reader // holds what arrived with the 101
}

func (c *tunnel) Read(p []byte) (int, error) { return c.r.Read(p) }

// dialRaw sends GET /dial?port=port on a fresh connection, followed in the
// same write by early (tunnel bytes sent before the 101), and reads the
// response head. On 101 the tunnel is returned; otherwise the response
// with its body read, and the connection closed.
func (e *testEnv) dialRaw(t *testing.T, port string, early []byte) (*tunnel, *http.Response, []byte) {
	t.Helper()
	u, err := url.Parse(e.url)
	if err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	head := fmt.Sprintf("GET /dial?port=%s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\n"+
		"Connection: Upgrade\r\nUpgrade: tcp\r\n\r\n", url.QueryEscape(port), u.Host, testToken)
	if _, err := c.Write(append([]byte(head), early...)); err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(c)
	req, _ := http.NewRequest("GET", e.url+"/dial", nil)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		c.Close()
		t.Fatalf("read dial response: %v", err)
	}
	if resp.StatusCode != http.StatusSwitchingProtocols {
		defer c.Close()
		data, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return nil, resp, data
	}
	if resp.Header.Get("Connection") != "Upgrade" || resp.Header.Get("Upgrade") != "tcp" {
		c.Close()
		t.Fatalf("101 headers %v", resp.Header)
	}
	return &tunnel{TCPConn: c.(*net.TCPConn), r: br}, resp, nil
}

// dial is dialRaw that must succeed.
func (e *testEnv) dial(t *testing.T, port int, early []byte) *tunnel {
	t.Helper()
	tun, resp, data := e.dialRaw(t, strconv.Itoa(port), early)
	if tun == nil {
		t.Fatalf("dial %d: %d %s", port, resp.StatusCode, data)
	}
	return tun
}

// serveTCP listens on addr and runs handle on every accepted connection,
// closing it afterwards. It returns the port.
func serveTCP(t *testing.T, network, addr string, handle func(c *net.TCPConn)) int {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				handle(c.(*net.TCPConn))
			}()
		}
	}()
	return ln.Addr().(*net.TCPAddr).Port
}

// echo copies everything back, then half-closes. (Through a buffer: a
// TCP-to-TCP io.Copy would splice through pooled pipes, whose fds the leak
// checks would count.)
func echo(c *net.TCPConn) {
	if _, err := io.CopyBuffer(writerOnly{c}, readerOnly{c}, make([]byte, 32<<10)); err == nil {
		c.CloseWrite()
	}
}

// openFDs counts this process's open file descriptors.
func openFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("cannot count fds: %v", err)
	}
	return len(ents)
}

// noLeaks records the open fds and returns a check, to run once every
// tunnel the test opened is closed, that waits until no goroutine is in a
// dial handler or a tunnel copy and the fd count is back. GC stays off in
// between so finalizers cannot close leaked sockets behind the check's back.
func noLeaks(t *testing.T) func() {
	t.Helper()
	gcPercent := debug.SetGCPercent(-1)
	t.Cleanup(func() { debug.SetGCPercent(gcPercent) })
	before := openFDs(t)
	return func() {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			buf := make([]byte, 1<<20)
			stacks := string(buf[:runtime.Stack(buf, true)])
			busy := strings.Contains(stacks, "server.(*Server).handleDial") || strings.Contains(stacks, "server.pipe")
			fds := openFDs(t)
			if !busy && fds <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("after the tunnels closed: goroutines still copying %v; fds %d, before %d\n%s", busy, fds, before, stacks)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func TestDialEcho(t *testing.T) {
	e := newEnv(t, 0)
	port := serveTCP(t, "tcp", "127.0.0.1:0", echo)
	checkLeaks := noLeaks(t)

	t.Run("small", func(t *testing.T) {
		tun := e.dial(t, port, nil)
		defer tun.Close()
		for _, msg := range []string{"hello", " world", "\x00\xff binary"} {
			if _, err := tun.Write([]byte(msg)); err != nil {
				t.Fatal(err)
			}
			got := make([]byte, len(msg))
			if _, err := io.ReadFull(tun, got); err != nil || string(got) != msg {
				t.Fatalf("echo %q: got %q, %v", msg, got, err)
			}
		}
	})

	t.Run("bytes sent before the 101 go first", func(t *testing.T) {
		tun := e.dial(t, port, []byte("early-"))
		defer tun.Close()
		if _, err := tun.Write([]byte("late")); err != nil {
			t.Fatal(err)
		}
		tun.CloseWrite()
		got, err := io.ReadAll(tun)
		if err != nil || string(got) != "early-late" {
			t.Fatalf("got %q, %v", got, err)
		}
	})

	t.Run("10 MiB round trip", func(t *testing.T) {
		payload := make([]byte, 10<<20)
		rand.New(rand.NewSource(1)).Read(payload)
		tun := e.dial(t, port, nil)
		defer tun.Close()
		werr := make(chan error, 1)
		go func() {
			_, err := tun.Write(payload)
			if err == nil {
				err = tun.CloseWrite()
			}
			werr <- err
		}()
		tun.SetReadDeadline(time.Now().Add(30 * time.Second))
		got, err := io.ReadAll(tun)
		if err != nil {
			t.Fatalf("read: %v after %d bytes", err, len(got))
		}
		if err := <-werr; err != nil {
			t.Fatalf("write: %v", err)
		}
		if !bytes.Equal(got, payload) {
			t.Fatalf("echoed %d bytes differ from the %d sent", len(got), len(payload))
		}
	})

	checkLeaks()
}

func TestDialOutlivesServerTimeouts(t *testing.T) {
	ts := httptest.NewUnstartedServer(New(Config{Token: testToken}))
	ts.Config.ReadHeaderTimeout = 100 * time.Millisecond
	ts.Config.ReadTimeout = 100 * time.Millisecond
	ts.Config.WriteTimeout = 100 * time.Millisecond
	ts.Start()
	t.Cleanup(ts.Close)
	e := &testEnv{url: ts.URL}
	port := serveTCP(t, "tcp", "127.0.0.1:0", echo)
	tun := e.dial(t, port, nil)
	defer tun.Close()
	time.Sleep(300 * time.Millisecond)
	tun.Write([]byte("late"))
	tun.CloseWrite()
	tun.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(tun)
	if err != nil || string(got) != "late" {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestDialHalfClose(t *testing.T) {
	e := newEnv(t, 0)
	received := make(chan string, 1)
	port := serveTCP(t, "tcp", "127.0.0.1:0", func(c *net.TCPConn) {
		// Read to EOF, then answer on the still-open write half.
		data, err := io.ReadAll(c)
		received <- fmt.Sprint(string(data), err)
		if err == nil {
			time.Sleep(50 * time.Millisecond)
			fmt.Fprintf(c, "got %d bytes: %s", len(data), data)
		}
	})
	checkLeaks := noLeaks(t)
	tun := e.dial(t, port, nil)
	defer tun.Close()
	if _, err := tun.Write([]byte("question")); err != nil {
		t.Fatal(err)
	}
	if err := tun.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	select {
	case got := <-received:
		if got != "question<nil>" {
			t.Fatalf("target read %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target did not see EOF after the client's half-close")
	}
	tun.SetReadDeadline(time.Now().Add(5 * time.Second))
	reply, err := io.ReadAll(tun)
	if err != nil || string(reply) != "got 8 bytes: question" {
		t.Fatalf("reply %q, %v", reply, err)
	}
	tun.Close()
	checkLeaks()
}

func TestDialTargetClosesFirst(t *testing.T) {
	e := newEnv(t, 0)
	gotAfter := make(chan string, 1)
	port := serveTCP(t, "tcp", "127.0.0.1:0", func(c *net.TCPConn) {
		// Send a banner and shut the write half; keep reading.
		c.Write([]byte("banner\n"))
		c.CloseWrite()
		data, err := io.ReadAll(c)
		gotAfter <- fmt.Sprint(string(data), err)
	})
	checkLeaks := noLeaks(t)
	tun := e.dial(t, port, nil)
	defer tun.Close()
	tun.SetReadDeadline(time.Now().Add(5 * time.Second))
	banner, err := io.ReadAll(tun)
	if err != nil || string(banner) != "banner\n" {
		t.Fatalf("banner %q, %v", banner, err)
	}
	// The other direction still works after the target's half-close.
	if _, err := tun.Write([]byte("still here")); err != nil {
		t.Fatal(err)
	}
	tun.CloseWrite()
	select {
	case got := <-gotAfter:
		if got != "still here<nil>" {
			t.Fatalf("target read %q", got)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("target did not get the bytes sent after its half-close")
	}
	tun.Close()
	checkLeaks()
}

func TestDialClientReset(t *testing.T) {
	e := newEnv(t, 0)
	ended := make(chan struct{})
	port := serveTCP(t, "tcp", "127.0.0.1:0", func(c *net.TCPConn) {
		io.Copy(io.Discard, c) // returns when the agent closes or half-closes
		close(ended)
	})
	checkLeaks := noLeaks(t)
	tun := e.dial(t, port, nil)
	tun.Write([]byte("x"))
	tun.SetLinger(0)
	tun.Close() // RST
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("target connection not ended after the client reset")
	}
	checkLeaks()
}

func TestDialAddresses(t *testing.T) {
	e := newEnv(t, 0)
	checkLeaks := noLeaks(t)
	hello := func(c *net.TCPConn) { c.Write([]byte("hi from " + c.LocalAddr().String())) }
	check := func(t *testing.T, port int, wantPrefix string) {
		tun := e.dial(t, port, nil)
		defer tun.Close()
		tun.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(tun)
		if err != nil || !strings.HasPrefix(string(got), "hi from "+wantPrefix) {
			t.Fatalf("got %q, %v; want it to start with %q", got, err, "hi from "+wantPrefix)
		}
	}
	t.Run("ipv6 loopback", func(t *testing.T) {
		ln, err := net.Listen("tcp6", "[::1]:0")
		if err != nil {
			t.Skipf("no IPv6 loopback: %v", err)
		}
		ln.Close()
		port := serveTCP(t, "tcp6", "[::1]:0", hello)
		check(t, port, "[::1]:")
	})
	t.Run("non-loopback ipv4", func(t *testing.T) {
		addrs, _ := net.InterfaceAddrs()
		var ip net.IP
		for _, a := range addrs {
			if n, ok := a.(*net.IPNet); ok && n.IP.To4() != nil && !n.IP.IsLoopback() {
				ip = n.IP.To4()
				break
			}
		}
		if ip == nil {
			t.Skip("no non-loopback IPv4 address")
		}
		port := serveTCP(t, "tcp4", net.JoinHostPort(ip.String(), "0"), hello)
		check(t, port, ip.String()+":")
	})
	checkLeaks()
}

func TestDialRefused(t *testing.T) {
	e := newEnv(t, 0)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	_, resp, data := e.dialRaw(t, strconv.Itoa(port), nil)
	wantError(t, resp, data, http.StatusBadGateway, "DialFailed")
	want := fmt.Sprintf("nothing accepted a connection on port %d (connection refused", port)
	if !strings.Contains(string(data), want) {
		t.Fatalf("message %s lacks %q", data, want)
	}
}

func TestDialBadRequests(t *testing.T) {
	e := newEnv(t, 0)
	port := serveTCP(t, "tcp", "127.0.0.1:0", echo)
	path := fmt.Sprintf("/dial?port=%d", port)
	auth := "Bearer " + testToken
	upgrade := map[string]string{"Authorization": auth, "Connection": "Upgrade", "Upgrade": "tcp"}

	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		status  int
		code    string
	}{
		{"missing token", "GET", path, map[string]string{"Connection": "Upgrade", "Upgrade": "tcp"}, 401, "Unauthorized"},
		{"wrong token", "GET", path, map[string]string{"Authorization": "Bearer nope", "Connection": "Upgrade", "Upgrade": "tcp"}, 401, "Unauthorized"},
		{"no upgrade headers", "GET", path, map[string]string{"Authorization": auth}, 400, "BadRequest"},
		{"no Upgrade header", "GET", path, map[string]string{"Authorization": auth, "Connection": "Upgrade"}, 400, "BadRequest"},
		{"no Connection: Upgrade", "GET", path, map[string]string{"Authorization": auth, "Upgrade": "tcp"}, 400, "BadRequest"},
		{"other protocol", "GET", path, map[string]string{"Authorization": auth, "Connection": "Upgrade", "Upgrade": "websocket"}, 400, "BadRequest"},
		{"port 0", "GET", "/dial?port=0", upgrade, 400, "BadRequest"},
		{"port 70000", "GET", "/dial?port=70000", upgrade, 400, "BadRequest"},
		{"port abc", "GET", "/dial?port=abc", upgrade, 400, "BadRequest"},
		{"port -1", "GET", "/dial?port=-1", upgrade, 400, "BadRequest"},
		{"no port", "GET", "/dial", upgrade, 400, "BadRequest"},
		{"POST", "POST", path, upgrade, 405, "BadRequest"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, data := e.doWith(t, tt.method, tt.path, nil, tt.headers)
			wantError(t, resp, data, tt.status, tt.code)
			if strings.HasPrefix(tt.name, "port") && !strings.Contains(string(data), "port must be an integer 1-65535") {
				t.Fatalf("message %s", data)
			}
		})
	}

	// Header names and values are case-insensitive; Connection may list
	// several tokens.
	checkLeaks := noLeaks(t)
	for _, h := range [][2]string{{"upgrade", "TCP"}, {"keep-alive, Upgrade", "tcp"}} {
		c, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: x\r\nauthorization: %s\r\nconnection: %s\r\nupgrade: %s\r\n\r\nping", path, auth, h[0], h[1])
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil || resp.StatusCode != 101 {
			t.Fatalf("headers %q: %v %v", h, resp, err)
		}
		got := make([]byte, 4)
		if _, err := io.ReadFull(br, got); err != nil || string(got) != "ping" {
			t.Fatalf("headers %q: echo %q %v", h, got, err)
		}
		c.Close()
	}
	checkLeaks()
}
