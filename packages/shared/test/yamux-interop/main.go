// Command yamux-interop is a test fixture for packages/shared/src/yamux-interop.test.ts: a
// hashicorp/yamux server the TypeScript client talks to over TCP.
//
// It listens on 127.0.0.1 (an ephemeral port, printed as "LISTEN host:port"), runs a yamux
// server session per connection, echoes every inbound stream until the client's FIN and then
// closes its side, and opens one stream of its own towards the client:
//
//	server -> client: 8-byte big-endian length, then that many pattern bytes
//	client -> server: hex sha256 of those bytes, then FIN
//	server -> client: "OK" (or "BAD"), then FIN
//
// Results are printed on stdout ("SERVER-STREAM OK", "SESSION-END <err>"). The process exits
// when stdin closes.
//
// Build (Debian's Go and golang-github-hashicorp-yamux-dev):
//
//	GOPATH=/usr/share/gocode GO111MODULE=off go build -o yamux-interop .
package main

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"io/ioutil"
	"net"
	"os"
	"sync"
	"time"

	"github.com/hashicorp/yamux"
)

var stdout sync.Mutex

func report(format string, args ...interface{}) {
	stdout.Lock()
	defer stdout.Unlock()
	fmt.Printf(format+"\n", args...)
}

func main() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	report("LISTEN %s", ln.Addr())
	go func() {
		_, _ = io.Copy(ioutil.Discard, os.Stdin)
		os.Exit(0)
	}()
	for {
		conn, err := ln.Accept()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		go serve(conn)
	}
}

func serve(conn net.Conn) {
	cfg := yamux.DefaultConfig()
	cfg.LogOutput = os.Stderr
	// Ping the client often: it must answer, or the session dies with a keepalive error.
	cfg.KeepAliveInterval = 100 * time.Millisecond
	cfg.ConnectionWriteTimeout = 5 * time.Second
	sess, err := yamux.Server(conn, cfg)
	if err != nil {
		report("SESSION-END %v", err)
		return
	}
	go serverStream(sess)
	for {
		st, err := sess.AcceptStream()
		if err != nil {
			report("SESSION-END %v", err)
			return
		}
		go echo(st)
	}
}

// echo copies the stream back until the client's FIN, then half-closes this side too.
func echo(st *yamux.Stream) {
	n, err := io.Copy(st, st)
	if err != nil {
		report("ECHO-ERR %d %v", st.StreamID(), err)
	}
	_ = st.Close()
	report("ECHO-DONE %d %d", st.StreamID(), n)
}

// serverStream exercises a server-initiated stream (see the package comment).
func serverStream(sess *yamux.Session) {
	st, err := sess.OpenStream()
	if err != nil {
		report("SERVER-STREAM ERR open %v", err)
		return
	}
	payload := make([]byte, 1<<20+12345)
	for i := range payload {
		payload[i] = byte(i*31 + i/977)
	}
	hdr := make([]byte, 8)
	binary.BigEndian.PutUint64(hdr, uint64(len(payload)))
	if _, err := st.Write(hdr); err != nil {
		report("SERVER-STREAM ERR write %v", err)
		return
	}
	if _, err := st.Write(payload); err != nil {
		report("SERVER-STREAM ERR write %v", err)
		return
	}
	reply, err := ioutil.ReadAll(st)
	if err != nil {
		report("SERVER-STREAM ERR read %v", err)
		return
	}
	sum := sha256.Sum256(payload)
	result := "OK"
	if string(reply) != hex.EncodeToString(sum[:]) {
		result = "BAD"
	}
	if _, err := st.Write([]byte(result)); err != nil {
		report("SERVER-STREAM ERR write %v", err)
		return
	}
	_ = st.Close()
	report("SERVER-STREAM %s", result)
}
